//! nn-Meter IR import: the JSON graphs of Microsoft's nn-Meter (an object keyed by node name, each node
//! with `inbounds`, `outbounds` and `attr{name, type, input_shape, output_shape, attr{…}}`, TensorFlow op
//! types, NHWC shapes) mapped onto the graph IR's ONNX ops, NCHW layout and weight tensors.
//!
//! nn-Meter strips the weight constants from its graphs, so the weights are synthesised from the
//! attributes (`weight_shape`, `kernel_shape`, channel counts of the shapes) with the shapes ONNX would
//! give them: MACs, parameters and weight bytes come out as for the original model. Shapes are inferred
//! here with TensorFlow's rules, in NHWC, and checked against the shapes the file states.
//!
//! The stages, one module each: [`decode`] (JSON → node records), [`wire`] (edges and execution
//! order), [`stated`] (how far the file's own shapes can be trusted), [`lower`] (nodes → graph IR),
//! with [`attributes`] reading the TF attributes for all of them.
mod attributes;
mod decode;
mod lower;
mod name;
mod stated;
mod wire;

use super::error::ImportError;
use super::graph::Graph;
use lower::{Builder, Out};
use stated::Rewrites;
use wire::WireError;

/// Imports an nn-Meter IR graph from its bytes. `source` names the file in errors; `input_shape`, when
/// given, fixes the shape of the first `Placeholder` in NCHW (as for ONNX), and then the shapes stated in
/// the file, which were inferred for another input, are no longer checked.
pub(crate) fn import(
    bytes: &[u8],
    source: &str,
    input_shape: Option<&[usize]>,
) -> Result<Graph, ImportError> {
    let file = source.to_string();
    let malformed = |detail: String| ImportError::Malformed {
        file: file.clone(),
        detail,
    };
    let mut d = decode::decode(bytes, source)?;
    for (_, name, n) in d.records() {
        if !lower::supports(n.op()) {
            return Err(ImportError::UnsupportedOp {
                file,
                node: name.to_string(),
                op: n.op().to_string(),
            });
        }
    }
    let mut w = wire::wire(&d).map_err(|e| match e {
        WireError::Cycle(ix) => ImportError::Cycle {
            file: file.clone(),
            node: d.names[ix].to_string(),
        },
        other => malformed(other.to_string()),
    })?;
    let mut rewrites = Rewrites::of(&d, &w.preds);
    // What is held while the graph is built is kept small, so that a large upload peaks at a small
    // multiple of its size: the name index and the edge lists are done with, a record is let go
    // once its node is lowered, and a node's output once its last reader is.
    d.index = Default::default();
    d.release_edges();
    let mut readers = vec![0usize; d.len()];
    for p in &w.preds {
        for &i in p {
            readers[i] += 1;
        }
    }
    let consumed: Vec<bool> = readers.iter().map(|&r| r > 0).collect();

    let mut b = Builder::new(source, graph_name(source), input_shape.is_none());
    b.reserve(
        d.records().map(|(_, _, n)| lower::tensors_of(n.op())).sum(),
        d.len(),
    );
    // Boxed: a slot of a node whose readers are all lowered is a pointer, not a whole output.
    let mut outs: Vec<Option<Box<Out>>> = vec![None; d.len()];
    let mut override_shape = input_shape;
    for &ix in &w.order {
        let inputs: Vec<Out> = w.preds[ix]
            .iter()
            .map(|&p| outs[p].as_deref().cloned())
            .collect::<Option<_>>()
            .ok_or_else(|| malformed(format!("node `{}`: an input has no value", d.names[ix])))?;
        let node = d
            .take(ix)
            .ok_or_else(|| malformed(format!("node `{}` is lowered twice", d.names[ix])))?;
        let fixed = if node.op() == "Placeholder" {
            override_shape.take()
        } else {
            None
        };
        let own = rewrites.remove(&ix).unwrap_or_default();
        outs[ix] = Some(Box::new(b.lower(
            &d.names[ix],
            &node,
            &inputs,
            fixed,
            &own,
        )?));
        drop(node);
        for p in std::mem::take(&mut w.preds[ix]) {
            readers[p] -= 1;
            if readers[p] == 0 {
                outs[p] = None;
            }
        }
    }
    let g = b.graph();
    let outputs: Vec<_> = outs
        .iter()
        .enumerate()
        .filter_map(|(ix, out)| out.as_ref().filter(|_| !consumed[ix]))
        .map(|o| o.tensor)
        .filter(|&t| !g.tensors[t].is_weight && !g.inputs.contains(&t))
        .collect();
    if g.inputs.is_empty() {
        return Err(malformed(
            "no `Placeholder` node: the graph has no input".into(),
        ));
    }
    if g.nodes.is_empty() {
        return Err(malformed("the graph computes nothing".into()));
    }
    Ok(b.finish_graph(outputs))
}

fn graph_name(source: &str) -> String {
    std::path::Path::new(source)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
