//! Measurement backends: time an ONNX model on this board with a runtime, in process ([`TractBackend`])
//! or through an external command ([`CommandBackend`]), behind one [`Backend`] trait.
//!
//! Calibration times thousands of single-kernel models through [`Backend::time_onnx`]; `augur bench`
//! times whole models. Timings are medians of timed runs after warm-up, in milliseconds per run.
pub mod command;
pub mod tract;

pub use command::CommandBackend;
pub use tract::{NodeTiming, Phase, Prepared, Progress, TractBackend};

use prost::Message;
use serde::{Deserialize, Serialize};
use tract_onnx::pb;

/// How to time a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Threads the runtime may use; 0 means every core of the board.
    pub threads: usize,
    /// Untimed runs first, to warm caches, allocators and lazy initialisation.
    pub warmup: usize,
    /// With `warmup` > 0, warm-up runs also go on until this many seconds have passed: a small
    /// model's first few dozen milliseconds of runs are slower than its settled ones, so a count
    /// alone under-warms it, and a model served over and over runs settled (docs/measuring.md).
    #[serde(default)]
    pub warmup_seconds: f64,
    /// Timed runs (samples); fewer if `max_seconds` runs out, but never fewer than 3.
    pub runs: usize,
    /// Time budget for warm-up and timed runs together.
    pub max_seconds: f64,
}

impl Default for RunSpec {
    fn default() -> RunSpec {
        RunSpec {
            threads: 1,
            warmup: 3,
            warmup_seconds: 0.0,
            runs: 10,
            max_seconds: 60.0,
        }
    }
}

impl RunSpec {
    /// `threads` with 0 resolved to the number of cores.
    pub fn effective_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// The timing of one model: per-run latency statistics over the timed samples.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timing {
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    /// Timed samples taken.
    pub runs: usize,
    /// Per-run time of each sample, in the order taken (empty when a command did not report them).
    pub samples_ms: Vec<f64>,
}

impl Timing {
    /// Statistics of per-run samples (in milliseconds). `None` without samples.
    pub fn from_samples(samples_ms: Vec<f64>) -> Option<Timing> {
        if samples_ms.is_empty() {
            return None;
        }
        let sorted = crate::util::stats::sorted_finite(samples_ms.iter().copied());
        Some(Timing {
            median_ms: quantile(&sorted, 0.5),
            p10_ms: quantile(&sorted, 0.1),
            p90_ms: quantile(&sorted, 0.9),
            runs: samples_ms.len(),
            samples_ms,
        })
    }
}

pub use crate::util::quantile;

/// Why a model could not be timed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("model `{model}`: cannot load: {detail}")]
    Load { model: String, detail: String },
    #[error("model `{model}`: cannot optimise: {detail}")]
    Optimise { model: String, detail: String },
    #[error("model `{model}`: {detail}")]
    Input { model: String, detail: String },
    #[error("model `{model}`: run failed: {detail}")]
    Run { model: String, detail: String },
    #[error("backend `{command}`: {detail}")]
    Command { command: String, detail: String },
    #[error("backend `{command}`: no answer after {seconds:.1} s, stopped it")]
    Timeout { command: String, seconds: f64 },
    #[error("backend `{command}`: unexpected output: {detail}")]
    BadOutput { command: String, detail: String },
    #[error("backend spec `{spec}`: {detail}")]
    Spec { spec: String, detail: String },
    #[error("cannot start {threads} compute threads: {detail}")]
    Threads { threads: usize, detail: String },
}

/// A runtime that can time an ONNX model on this board.
pub trait Backend: Send + Sync {
    /// `tract`, or the command's name.
    fn name(&self) -> String;
    /// `tract 0.23.9`, `onnxruntime 1.22.0` …
    fn version(&self) -> String;
    /// Whether this is tract in this process, whose optimiser can be asked which ops it fuses
    /// (any other runtime's fusion rules are found by timing).
    fn is_in_process_tract(&self) -> bool {
        false
    }
    /// Times a whole model; its inputs are filled with a fixed pattern at their static shapes.
    fn time_onnx(&self, onnx: &[u8], spec: &RunSpec) -> Result<Timing, RuntimeError>;
    /// Per-node median times of whole-model runs, where the runtime can report them (`None` when it
    /// cannot: an external command times the model as a whole).
    fn time_per_node_onnx(
        &self,
        _onnx: &[u8],
        _spec: &RunSpec,
    ) -> Result<Option<Vec<NodeTiming>>, RuntimeError> {
        Ok(None)
    }
}

/// A backend from its spec: `tract`, or `cmd:<template>` (see [`CommandBackend::new`]).
pub fn backend_from_spec(spec: &str) -> Result<Box<dyn Backend>, RuntimeError> {
    let s = spec.trim();
    if s.eq_ignore_ascii_case("tract") {
        return Ok(Box::new(TractBackend::new()));
    }
    if let Some(template) = s.strip_prefix("cmd:") {
        return Ok(Box::new(CommandBackend::new(template)?));
    }
    Err(RuntimeError::Spec {
        spec: spec.to_string(),
        detail: "expected `tract` or `cmd:<command template with {model}>`".into(),
    })
}

/// The name of a model in errors: its ONNX graph name, or a placeholder.
pub(crate) fn model_name(proto: &pb::ModelProto) -> String {
    match proto.graph.as_ref().map(|g| g.name.as_str()) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => "<unnamed>".into(),
    }
}

/// Rewrites an ONNX model so its first (non-initializer) input has `shape`, for backends that take the
/// model as a file. Intermediate and output shapes recorded in the file are dropped for the runtime to
/// infer again.
pub fn set_input_shape(onnx: &[u8], shape: &[usize]) -> Result<Vec<u8>, RuntimeError> {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let mut proto = pb::ModelProto::decode(onnx).map_err(|e| RuntimeError::Load {
        model: "<bytes>".into(),
        detail: format!("not a valid ONNX protobuf ({e})"),
    })?;
    let model = model_name(&proto);
    let Some(graph) = proto.graph.as_mut() else {
        return Err(RuntimeError::Load {
            model,
            detail: "no graph in the model".into(),
        });
    };
    let initializers: std::collections::HashSet<String> =
        graph.initializer.iter().map(|t| t.name.clone()).collect();
    let input = graph
        .input
        .iter_mut()
        .find(|i| !initializers.contains(&i.name))
        .ok_or_else(|| RuntimeError::Input {
            model: model.clone(),
            detail: "the model has no input".into(),
        })?;
    let Some(pb::type_proto::Value::TensorType(t)) =
        input.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        return Err(RuntimeError::Input {
            model,
            detail: format!("input `{}` is not a tensor", input.name),
        });
    };
    t.shape = Some(pb::TensorShapeProto {
        dim: shape
            .iter()
            .map(|&d| Dimension {
                denotation: String::new(),
                value: Some(Value::DimValue(d as i64)),
            })
            .collect(),
    });
    graph.value_info.clear();
    for o in &mut graph.output {
        if let Some(pb::type_proto::Value::TensorType(t)) =
            o.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape = None;
        }
    }
    Ok(proto.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let s = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(quantile(&s, 0.5), 5.5);
        assert!((quantile(&s, 0.1) - 1.9).abs() < 1e-12);
        assert!((quantile(&s, 0.9) - 9.1).abs() < 1e-12);
        assert_eq!(quantile(&[3.0], 0.9), 3.0);
        let t = Timing::from_samples(vec![5.0, 1.0, 3.0]).unwrap();
        assert_eq!((t.median_ms, t.runs), (3.0, 3));
        assert_eq!(t.samples_ms, vec![5.0, 1.0, 3.0]);
        assert!(t.p10_ms <= t.median_ms && t.median_ms <= t.p90_ms);
        assert!(Timing::from_samples(vec![]).is_none());
    }

    #[test]
    fn specs() {
        assert_eq!(backend_from_spec(" tract ").unwrap().name(), "tract");
        assert!(
            backend_from_spec("tract")
                .unwrap()
                .version()
                .starts_with("tract 0.")
        );
        let b = backend_from_spec("cmd:python3 bench.py {model} --threads {threads}").unwrap();
        assert_eq!(b.name(), "bench");
        let e = backend_from_spec("onnxruntime").err().unwrap().to_string();
        assert!(e.contains("cmd:"), "{e}");
        assert!(backend_from_spec("cmd:echo no model").is_err());
        assert!(backend_from_spec("cmd:").is_err());
        assert_eq!(RunSpec::default().threads, 1);
        let all = RunSpec {
            threads: 0,
            ..Default::default()
        };
        assert!(all.effective_threads() >= 1);
    }

    #[test]
    fn input_shape_is_rewritten() {
        use crate::model::{builder::GraphBuilder, export::to_onnx_bytes, import_bytes};
        let mut b = GraphBuilder::new("m");
        let x = b.input(&[1, 3, 16, 16]);
        let y = b
            .conv(x, 4, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, false)
            .unwrap();
        let y = b.relu(y).unwrap();
        let bytes = to_onnx_bytes(&b.finish(&[y]).unwrap()).unwrap();
        let bigger = set_input_shape(&bytes, &[2, 3, 20, 24]).unwrap();
        let g = import_bytes(&bigger, "m", None).unwrap();
        assert_eq!(g.tensor(g.outputs[0]).shape.to_vec(), vec![2, 4, 20, 24]);
        assert!(set_input_shape(b"junk", &[1]).is_err());
    }
}
