//! Wiring: each node's predecessors from its `inbounds` (checked against `outbounds`), and the order
//! the nodes execute in.
use super::decode::Decoded;
use crate::model::topo::topo_order;

/// How the nodes connect.
pub(super) struct Wiring {
    /// For each node, the nodes it reads, in `inbounds` order.
    pub(super) preds: Vec<Box<[usize]>>,
    /// A valid execution order.
    pub(super) order: Vec<usize>,
}

/// Why the nodes do not make a graph.
#[derive(Debug, thiserror::Error)]
pub(super) enum WireError {
    #[error("node `{node}` reads `{inbound}`, which is not a node of the file")]
    UnknownInbound { node: String, inbound: String },
    #[error("node `{node}` lists `{outbound}` as an outbound, which is not a node of the file")]
    UnknownOutbound { node: String, outbound: String },
    #[error("node `{node}` lists `{outbound}` as an outbound, but `{outbound}` does not read it")]
    OneWay { node: String, outbound: String },
    /// The graph has a cycle through this node (the caller names it).
    #[error("the graph has a cycle")]
    Cycle(usize),
}

/// Wires the decoded nodes.
pub(super) fn wire(d: &Decoded) -> Result<Wiring, WireError> {
    let preds = edges(d)?;
    let order = topo_order(&preds).map_err(WireError::Cycle)?;
    Ok(Wiring { preds, order })
}

/// A name TensorFlow gives the read of a variable: the `Identity` node `<variable>/read`.
fn is_constant_read(name: &str) -> bool {
    name.ends_with("/read")
}

fn edges(d: &Decoded) -> Result<Vec<Box<[usize]>>, WireError> {
    let mut preds: Vec<Box<[usize]>> = vec![Box::default(); d.len()];
    for (ix, (name, n)) in d.names.iter().zip(&d.edges).enumerate() {
        let mut p = Vec::with_capacity(n.inbounds.len());
        for i in &n.inbounds {
            match d.index.get(i) {
                Some(&ix) => p.push(ix),
                // nn-Meter's converter removes weight variables and their `…/read` Identity nodes from
                // the graph but leaves some consumers' inbounds naming them (FusedBatchNorm's moving
                // variance in its own MobileNetV3 test model). Such a read is a constant operand, and a
                // constant nn-Meter stripped is synthesised from the attributes and shapes like every
                // other: the inbound is dropped, not an error.
                None if is_constant_read(i) => {}
                None => {
                    return Err(WireError::UnknownInbound {
                        node: name.to_string(),
                        inbound: i.to_string(),
                    });
                }
            }
        }
        preds[ix] = p.into_boxed_slice();
    }
    for (name, n) in d.names.iter().zip(&d.edges) {
        for o in &n.outbounds {
            let ix = *d.index.get(o).ok_or_else(|| WireError::UnknownOutbound {
                node: name.to_string(),
                outbound: o.to_string(),
            })?;
            if !d.edges.get(ix).is_some_and(|m| m.inbounds.contains(name)) {
                return Err(WireError::OneWay {
                    node: name.to_string(),
                    outbound: o.to_string(),
                });
            }
        }
    }
    Ok(preds)
}
