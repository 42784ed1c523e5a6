//! Kernels timed inside a whole network: a runtime's per-node timings of a network run, attributed to
//! augur's kernels. A kernel timed alone runs with its inputs and weights hot and nothing between its
//! runs; inside a network its operands stream through the caches behind other kernels. Regressors fitted
//! on these timings learn the latency a kernel really has where it will be predicted.
//!
//! The networks are random ones of the design space ([`crate::model::families`], never the evaluation
//! models),
//! numbered from 0 under the calibration's seed; every fifth is held out of the regressor fit.
use super::error::MeasureError;
use crate::kernels::{Decomposition, FusionRules, decompose};
use crate::model::Graph;
use crate::model::families::network as generated;
use crate::profile::Measurement;
use crate::runtime::{Backend, NodeTiming, RunSpec};
use std::collections::HashMap;

/// Every fifth network is held out of the regressor fit, for the composition factors.
pub(crate) fn held_out(i: usize) -> bool {
    i % 5 == 4
}

/// Synthetic network `i` of the calibration seeded `seed`, and its decomposition.
pub(crate) fn network(seed: u64, i: usize) -> Result<(Graph, Decomposition), MeasureError> {
    let g = generated(seed, i)?;
    let d = decompose(&g, &FusionRules::tract_default())?;
    Ok((g, d))
}

/// Times synthetic network `i` per node (as measured: not normalised); one measurement per kernel
/// that got time, keyed by kernel index. `Ok(None)` when the backend cannot time per node.
pub(crate) fn measure_network(
    backend: &dyn Backend,
    seed: u64,
    i: usize,
    threads: usize,
) -> Result<Option<Vec<(usize, Measurement)>>, MeasureError> {
    let (g, d) = network(seed, i)?;
    // Larger than the networks it stands for (ImageNet models stay under ~8 GMACs): skipped, not timed.
    if d.macs > 8_000_000_000 {
        return Ok(Some(Vec::new()));
    }
    let bytes = crate::model::export::to_onnx_bytes(&g)?;
    let spec = RunSpec {
        threads,
        warmup: 2,
        warmup_seconds: 0.0,
        runs: 7,
        max_seconds: 2.0,
    };
    let Some(nodes) = backend.time_per_node_onnx(&bytes, &spec)? else {
        return Ok(None);
    };
    let a = attribute(&g, &d, &nodes);
    Ok(Some(
        d.kernels
            .into_iter()
            .zip(a.kernel_ms)
            .enumerate()
            // A kernel the runtime folded into a neighbour got no time of its own: nothing to learn.
            .filter(|(_, (_, ms))| *ms > 0.0)
            .map(|(k, (kernel, ms))| (k, Measurement::new(kernel, ms, ms, ms)))
            .collect(),
    ))
}

/// Per-kernel times of one network run, and what could not be attributed.
#[derive(Clone, Debug, Default)]
pub struct Attribution {
    /// Milliseconds per kernel (sums of the nodes' first quartiles over the runs, which other work
    /// on the board disturbs less than the medians), in the decomposition's kernel order.
    pub kernel_ms: Vec<f64>,
    /// Milliseconds of runtime nodes that map to no kernel (tract's own reshapes at the input …).
    pub unattributed_ms: f64,
}

/// Attributes `timings` to the kernels of `d` (decomposed from `g`). tract names a node it derived
/// from an ONNX node by that node's name plus dotted suffixes (`conv_3.pad`, `relu_4.low.prefused`),
/// so the longest dotted prefix that is an ONNX node's name tells where its time belongs.
pub fn attribute(g: &Graph, d: &Decomposition, timings: &[NodeTiming]) -> Attribution {
    let mut owner: HashMap<&str, usize> = HashMap::new();
    for (k, nodes) in d.kernel_nodes.iter().enumerate() {
        for &n in nodes {
            if let Some(node) = g.nodes.get(n) {
                owner.insert(&*node.name, k);
            }
        }
    }
    let mut out = Attribution {
        kernel_ms: vec![0.0; d.kernels.len()],
        unattributed_ms: 0.0,
    };
    for t in timings {
        let mut name = t.name.as_str();
        let k = loop {
            if let Some(&k) = owner.get(name) {
                break Some(k);
            }
            match name.rfind('.') {
                Some(i) => name = &name[..i],
                None => break None,
            }
        };
        match k.and_then(|k| out.kernel_ms.get_mut(k)) {
            Some(slot) => *slot += t.p25_ms,
            None => out.unattributed_ms += t.p25_ms,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{FusionRules, decompose};
    use crate::model::builder::GraphBuilder;

    fn timing(name: &str, ms: f64) -> NodeTiming {
        NodeTiming {
            name: name.into(),
            op: "X".into(),
            median_ms: ms,
            p25_ms: ms,
        }
    }

    #[test]
    fn suffixed_names_go_to_the_kernel_of_their_onnx_node() {
        let mut b = GraphBuilder::new("t");
        let x = b.input(&[1, 8, 16, 16]);
        let y = b
            .conv(x, 8, [1, 1], [1, 1], [0; 4], [1, 1], 1, true)
            .unwrap();
        let y = b.relu(y).unwrap();
        let z = b.maxpool(y, [2, 2], [2, 2], [0; 4]).unwrap();
        let g = b.finish(&[z]).unwrap();
        let d = decompose(&g, &FusionRules::tract_default()).unwrap();
        assert_eq!(d.kernels.len(), 2);
        let conv = g.nodes[0].name.clone();
        let relu = g.nodes[1].name.clone();
        let pool = g.nodes[2].name.clone();
        let a = attribute(
            &g,
            &d,
            &[
                timing(&format!("{conv}.pad"), 1.0),
                timing(&format!("{relu}.low.prefused"), 2.0),
                timing(&pool, 0.5),
                timing("input.reshape", 0.25),
            ],
        );
        assert_eq!(a.kernel_ms, vec![3.0, 0.5]);
        assert_eq!(a.unattributed_ms, 0.25);
    }
}
