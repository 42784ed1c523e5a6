//! Fusion detection: which (producer, consumer) op-class pairs a runtime runs as one kernel.
//! For tract it is read off the optimiser (count the compute nodes of op1→op2 against op1 alone);
//! for any other backend it is nn-Meter's timing test: fused when T1 + T2 − T12 > ½·min(T1, T2).
use crate::kernels::FusionRules;
use crate::model::builder::{BuildError, GraphBuilder};
use crate::model::export::ExportError;
use crate::model::{Graph, TensorId};
use crate::runtime::{Backend, RunSpec, RuntimeError};
use std::collections::BTreeSet;

/// Why the fusion rules could not be detected.
#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    #[error("exporting an op pair: {0}")]
    Export(#[from] ExportError),
    #[error("tract cannot optimise an op pair: {detail}")]
    Optimise { detail: String },
    #[error("timing an op pair: {0}")]
    Runtime(#[from] RuntimeError),
}

/// The runtime's fusion rules: read off tract's optimiser when the backend is the in-process tract,
/// else found by timing op pairs.
pub fn detect(backend: &dyn Backend, threads: usize) -> Result<FusionRules, FusionError> {
    if backend.is_in_process_tract() {
        detect_tract()
    } else {
        detect_by_timing(backend, threads)
    }
}

/// Producers and consumers tried. Consumers are the elementwise classes that can follow any op.
const PRODUCERS: &[&str] = &[
    "conv",
    "pointwise",
    "depthwise",
    "relu",
    "add",
    "bias",
    "scale",
    "batchnorm",
    "sigmoid",
];
const CONSUMERS: &[&str] = &[
    "relu",
    "add",
    "bias",
    "scale",
    "batchnorm",
    "sigmoid",
    "mul",
    "mul_bcast",
];

const C: usize = 16;
const HW: usize = 16;

fn producer(b: &mut GraphBuilder, x: TensorId, class: &str) -> Result<TensorId, BuildError> {
    match class {
        "conv" => b.conv(x, C, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, true),
        "pointwise" => b.conv(x, C, [1, 1], [1, 1], [0; 4], [1, 1], 1, true),
        "depthwise" => b.conv(x, C, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], C, true),
        _ => consumer(b, x, x, class),
    }
}

fn consumer(
    b: &mut GraphBuilder,
    y: TensorId,
    x: TensorId,
    class: &str,
) -> Result<TensorId, BuildError> {
    match class {
        "relu" => b.relu(y),
        "sigmoid" => b.sigmoid(y),
        "bias" => b.add_const(y),
        "scale" => b.mul_const(y),
        "batchnorm" => b.batchnorm(y),
        "add" => {
            let other = b.input(&[1, C, HW, HW]);
            b.add(y, other)
        }
        // x·f(x), the swish shape; with the graph input when y is the input itself.
        "mul" => b.mul(y, x),
        "mul_bcast" => {
            let s = b.input(&[1, C, 1, 1]);
            b.mul(y, s)
        }
        other => Err(BuildError::Invalid {
            node: other.into(),
            op: other.into(),
            detail: "unknown class".into(),
        }),
    }
}

/// op1 alone, op2 alone, and op1→op2.
fn pair_graphs(p: &str, c: &str) -> Result<(Graph, Graph, Graph), BuildError> {
    let mut b1 = GraphBuilder::new("p");
    let x = b1.input(&[1, C, HW, HW]);
    let y = producer(&mut b1, x, p)?;
    let g1 = b1.finish(&[y])?;
    let mut b2 = GraphBuilder::new("c");
    let x = b2.input(&[1, C, HW, HW]);
    let y = consumer(&mut b2, x, x, c)?;
    let g2 = b2.finish(&[y])?;
    let mut b12 = GraphBuilder::new("pc");
    let x = b12.input(&[1, C, HW, HW]);
    let y = producer(&mut b12, x, p)?;
    let z = consumer(&mut b12, y, y, c)?;
    let g12 = b12.finish(&[z])?;
    Ok((g1, g2, g12))
}

/// tract nodes that are part of another kernel, not kernels of their own.
const TRACT_GLUE: &[&str] = &[
    "Source",
    "Const",
    "IntoShape",
    "Pad",
    "LazyIm2col",
    "OptMatMulPack",
    "Downsample",
    "AxisOp",
];

fn tract_compute_nodes(g: &Graph) -> Result<usize, FusionError> {
    use tract_onnx::prelude::*;
    let bytes = crate::model::export::to_onnx_bytes(g)?;
    let model = tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .and_then(|m| m.into_optimized())
        .map_err(|e| FusionError::Optimise {
            detail: format!("{e:#}"),
        })?;
    Ok(model
        .nodes()
        .iter()
        .filter(|n| !TRACT_GLUE.iter().any(|g| n.op.name().starts_with(g)))
        .count())
}

/// Reads tract's fusion rules off its optimiser.
fn detect_tract() -> Result<FusionRules, FusionError> {
    let mut pairs = BTreeSet::new();
    for p in PRODUCERS {
        for c in CONSUMERS {
            let Ok((g1, _, g12)) = pair_graphs(p, c) else {
                continue;
            };
            let alone = tract_compute_nodes(&g1)?;
            let both = tract_compute_nodes(&g12)?;
            if both <= alone {
                pairs.insert((p.to_string(), c.to_string()));
            }
        }
    }
    Ok(FusionRules {
        runtime: "tract".into(),
        note: "detected from tract's optimised graphs of op pairs".into(),
        pairs,
    })
}

/// nn-Meter's timing test against any backend.
fn detect_by_timing(backend: &dyn Backend, threads: usize) -> Result<FusionRules, FusionError> {
    let spec = RunSpec {
        threads,
        warmup: 3,
        warmup_seconds: 0.0,
        runs: 15,
        max_seconds: 2.0,
    };
    let time = |g: &Graph| -> Result<f64, FusionError> {
        let bytes = crate::model::export::to_onnx_bytes(g)?;
        Ok(backend.time_onnx(&bytes, &spec)?.median_ms)
    };
    let mut pairs = BTreeSet::new();
    for p in PRODUCERS {
        for c in CONSUMERS {
            let Ok((g1, g2, g12)) = pair_graphs(p, c) else {
                continue;
            };
            let (t1, t2, t12) = (time(&g1)?, time(&g2)?, time(&g12)?);
            if t1 + t2 - t12 > 0.5 * t1.min(t2) {
                pairs.insert((p.to_string(), c.to_string()));
            }
        }
    }
    Ok(FusionRules {
        runtime: backend.name(),
        note: "detected by nn-Meter's timing test".into(),
        pairs,
    })
}
