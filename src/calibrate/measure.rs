//! Timing one kernel configuration alone: build its graph, decompose it (the features come from
//! what is measured, never from the request), time it with the backend.
use super::build::kernel_graph;
use super::error::MeasureError;
use crate::kernels::{FusionRules, Kernel, decompose};
use crate::profile::Measurement;
use crate::runtime::{Backend, RunSpec};

/// Times configuration `cfg` (as measured: not normalised).
pub fn kernel(
    backend: &dyn Backend,
    cfg: &Kernel,
    threads: usize,
) -> Result<Measurement, MeasureError> {
    let g = kernel_graph(cfg)?;
    let d = decompose(&g, &FusionRules::tract_default())?;
    let kernel = d
        .kernels
        .iter()
        .find(|k| k.kind == cfg.kind)
        .or(d.kernels.first())
        .cloned()
        .ok_or(MeasureError::NoKernel)?;
    let bytes = crate::model::export::to_onnx_bytes(&g)?;
    let spec = RunSpec {
        threads,
        warmup: 2,
        warmup_seconds: 0.0,
        runs: 7,
        max_seconds: 1.0,
    };
    let t = backend.time_onnx(&bytes, &spec)?;
    Ok(Measurement::new(kernel, t.median_ms, t.p10_ms, t.p90_ms))
}
