//! The in-process backend: tract, the runtime augur itself links. Loads and optimises a model once
//! ([`TractBackend::prepare`]), then times it as often as wanted ([`Prepared::time`]), whole or per node.
//!
//! Each timed run gets a fresh copy of the inputs, made outside the timed region: in a real pipeline a
//! kernel owns the tensor it is handed and tract works on it in place, whereas a shared input would be
//! copied first and that copy timed too (as much as the kernel itself, for an elementwise op). Runs
//! shorter than [`BATCH_BELOW`] are timed in batches, and the per-run time reported, so that timer
//! overhead and jitter do not dominate the sample.
use super::{Backend, RunSpec, RuntimeError, Timing, model_name};
use crate::kernels::fusion::TRACT_VERSION;
use prost::Message;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tract_onnx::pb;
use tract_onnx::prelude::tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// Runs shorter than this are timed in batches.
pub const BATCH_BELOW: Duration = Duration::from_micros(50);
/// What a batched sample aims to last.
const SAMPLE_TARGET: Duration = Duration::from_micros(100);
/// At most this many runs per sample.
const MAX_BATCH: usize = 1000;
/// At most this many bytes of fresh inputs per batch: the copies then stay in cache, as a producer's
/// output would be, and under the allocator's trim threshold (glibc: 128 KiB), so making them does not
/// page-fault fresh memory in for every sample (which cost more than the runs of a tiny model).
const BATCH_INPUT_BYTES: usize = 64 << 10;

/// tract, in this process.
#[derive(Clone)]
pub struct TractBackend {
    onnx: tract_onnx::Onnx,
}

impl Default for TractBackend {
    fn default() -> TractBackend {
        TractBackend::new()
    }
}

impl std::fmt::Debug for TractBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TractBackend")
    }
}

/// How far a timing has got, for progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    WarmUp,
    Timed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub done: usize,
    pub total: usize,
}

/// The median time of one node of the optimised model, from whole-model runs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeTiming {
    /// tract's node name (the ONNX node name, with a suffix where tract split or fused ops).
    pub name: String,
    /// tract's op name (`Conv`, `OptMatMul`, `Add` …).
    pub op: String,
    pub median_ms: f64,
    /// First quartile: the node's time with less of the runs other work slowed.
    #[serde(default)]
    pub p25_ms: f64,
}

/// A model loaded, optimised and planned, with inputs to feed it: time it as often as wanted.
pub struct Prepared {
    name: String,
    plan: Arc<TypedSimplePlan>,
    inputs: Vec<Tensor>,
    input_bytes: usize,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("name", &self.name)
            .field("inputs", &self.input_shapes())
            .finish()
    }
}

/// Keeps freed tensors in the process for the next run. glibc returns the top of its heap to the
/// kernel once more than its trim threshold is free there, and that threshold follows the largest
/// block freed so far (twice it): a model whose run ends by freeing two or three tensors of one
/// size (a small model, or a prefix ending at a wide early tensor) hands them back after every
/// run and faults them in again in the next, ~400 page faults a run for a 32×112×112 f32 tensor,
/// about as long as the layers themselves on a small board. A model served over and over keeps its
/// memory; so do the timings here. Both thresholds are set at glibc's own ceilings (setting one
/// turns off the adaptive rule for both): blocks up to 32 MiB come from the heap, and up to
/// 64 MiB may stay free at its top. Once per process, before the first timed run.
fn steady_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes the allocator's tuning parameters.
            let ok = unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                    && libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20) == 1
            };
            if !ok {
                tracing::debug!("the allocator's thresholds could not be set");
            }
        });
    }
}

/// The executor for `threads`: single-threaded for 1 (a one-thread pool would run on rayon's global
/// pool, i.e. on every core), else a pool of that size, built once and kept.
fn executor(threads: usize) -> Result<Executor, RuntimeError> {
    // Every timing asks for its executor first.
    steady_heap();
    if threads <= 1 {
        return Ok(Executor::SingleThread);
    }
    static POOLS: OnceLock<Mutex<HashMap<usize, Executor>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = pools.get(&threads) {
        return Ok(e.clone());
    }
    // tract panics when the OS refuses the threads; that is an error to report, not a crash.
    let e = std::panic::catch_unwind(|| Executor::multithread_with_name(threads, "augur-tract"))
        .map_err(|p| RuntimeError::Threads {
            threads,
            detail: crate::util::panic::panic_message(
                p.as_ref(),
                "the thread pool could not be built",
            ),
        })?;
    pools.insert(threads, e.clone());
    Ok(e)
}

/// A deterministic, varied input: values in [-0.5, 0.5), no zeros runs for a kernel to skip.
fn input_tensor(dt: DatumType, shape: &[usize]) -> TractResult<Tensor> {
    let n: usize = shape.iter().product();
    if dt.is_float() {
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 31 + 7) % 255) as f32 / 255.0 - 0.5)
            .collect();
        let t = Tensor::from_shape(shape, &v)?;
        Ok(t.cast_to_dt(dt)?.into_owned())
    } else {
        // Integer inputs are usually indices or ids: zero is valid for all of them.
        Tensor::zero_dt(dt, shape)
    }
}

fn one_line(e: &TractError) -> String {
    format!("{e:#}").replace('\n', " ")
}

impl TractBackend {
    pub fn new() -> TractBackend {
        TractBackend {
            onnx: tract_onnx::onnx(),
        }
    }

    /// Loads, optimises and plans a model; its inputs must have static shapes.
    pub fn prepare(&self, onnx: &[u8]) -> Result<Prepared, RuntimeError> {
        self.prepare_with_input_shape(onnx, None)
    }

    /// Like [`TractBackend::prepare`], fixing the shape of the first input (symbolic dimensions too).
    pub fn prepare_with_input_shape(
        &self,
        onnx: &[u8],
        input_shape: Option<&[usize]>,
    ) -> Result<Prepared, RuntimeError> {
        let proto = pb::ModelProto::decode(onnx).map_err(|e| RuntimeError::Load {
            model: "<bytes>".into(),
            detail: format!("not a valid ONNX protobuf ({e})"),
        })?;
        let name = model_name(&proto);
        let load = |e: TractError| RuntimeError::Load {
            model: name.clone(),
            detail: one_line(&e),
        };
        let mut model = self.onnx.model_for_proto_model(&proto).map_err(load)?;
        drop(proto);
        if model.inputs.is_empty() {
            return Err(RuntimeError::Input {
                model: name,
                detail: "the model has no input".into(),
            });
        }
        if let Some(shape) = input_shape {
            let dt = model
                .input_fact(0)
                .ok()
                .and_then(|f| f.datum_type.concretize())
                .unwrap_or(DatumType::F32);
            model = model
                .with_input_fact(0, InferenceFact::dt_shape(dt, shape))
                .map_err(load)?;
        }
        let typed = model.into_optimized().map_err(|e| RuntimeError::Optimise {
            model: name.clone(),
            detail: one_line(&e),
        })?;
        let mut inputs = Vec::with_capacity(typed.inputs.len());
        for ix in 0..typed.inputs.len() {
            let fact = typed.input_fact(ix).map_err(load)?;
            let Some(shape) = fact.shape.as_concrete() else {
                return Err(RuntimeError::Input {
                    model: name,
                    detail: format!(
                        "input {ix} has no static shape ({:?}); give one (--input-shape)",
                        fact.shape
                    ),
                });
            };
            inputs.push(input_tensor(fact.datum_type, shape).map_err(load)?);
        }
        let input_bytes = inputs
            .iter()
            .map(|t| t.len() * t.datum_type().size_of())
            .sum();
        let plan = typed.into_runnable().map_err(|e| RuntimeError::Optimise {
            model: name.clone(),
            detail: one_line(&e),
        })?;
        Ok(Prepared {
            name,
            plan,
            inputs,
            input_bytes,
        })
    }

    /// Per-node median times of a whole-model run (loads the model first).
    pub fn time_per_node(
        &self,
        onnx: &[u8],
        spec: &RunSpec,
    ) -> Result<Vec<NodeTiming>, RuntimeError> {
        self.prepare(onnx)?.time_per_node(spec)
    }
}

impl Backend for TractBackend {
    fn name(&self) -> String {
        "tract".into()
    }

    fn version(&self) -> String {
        format!("tract {TRACT_VERSION}")
    }

    fn is_in_process_tract(&self) -> bool {
        true
    }

    fn time_onnx(&self, onnx: &[u8], spec: &RunSpec) -> Result<Timing, RuntimeError> {
        self.prepare(onnx)?.time(spec)
    }

    fn time_per_node_onnx(
        &self,
        onnx: &[u8],
        spec: &RunSpec,
    ) -> Result<Option<Vec<NodeTiming>>, RuntimeError> {
        self.prepare(onnx)?.time_per_node(spec).map(Some)
    }
}

/// The time budget of a spec; a budget that is not a finite, non-negative number is no budget.
fn budget(spec: &RunSpec) -> Duration {
    Duration::try_from_secs_f64(spec.max_seconds).unwrap_or(Duration::MAX)
}

impl Prepared {
    /// The model's ONNX graph name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn input_shapes(&self) -> Vec<Vec<usize>> {
        self.inputs.iter().map(|t| t.shape().to_vec()).collect()
    }

    fn run_err(&self, e: TractError) -> RuntimeError {
        RuntimeError::Run {
            model: self.name.clone(),
            detail: one_line(&e),
        }
    }

    fn fresh_inputs(&self) -> TVec<TValue> {
        self.inputs
            .iter()
            .map(|t| t.clone().into_tvalue())
            .collect()
    }

    /// Runs per timed sample for a run of duration `run`.
    fn batch_size(&self, run: Duration) -> usize {
        if run >= BATCH_BELOW {
            return 1;
        }
        let want = (SAMPLE_TARGET.as_nanos() / run.as_nanos().max(1)) as usize;
        let fits = (BATCH_INPUT_BYTES / self.input_bytes.max(1)).max(1);
        want.clamp(1, MAX_BATCH).min(fits)
    }

    /// Times the model: `spec.warmup` untimed runs, then `spec.runs` timed samples (fewer if
    /// `spec.max_seconds` runs out, but at least 3).
    pub fn time(&self, spec: &RunSpec) -> Result<Timing, RuntimeError> {
        self.time_with_progress(spec, &mut |_| {})
    }

    /// [`Prepared::time`], telling `progress` after every run.
    pub fn time_with_progress(
        &self,
        spec: &RunSpec,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Timing, RuntimeError> {
        let executor = executor(spec.effective_threads())?;
        multithread_tract_scope(executor, || self.time_here(spec, progress))
    }

    fn time_here(
        &self,
        spec: &RunSpec,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Timing, RuntimeError> {
        let start = Instant::now();
        let budget = budget(spec);
        let mut state = TypedSimpleState::new(&self.plan).map_err(|e| self.run_err(e))?;
        let mut fastest = Duration::MAX;
        // A spec is data (it may come from a file): a figure that is no duration warms by count alone.
        let warm_for =
            Duration::try_from_secs_f64(spec.warmup_seconds.clamp(0.0, 3600.0)).unwrap_or_default();
        let mut i = 0;
        while i < spec.warmup || (spec.warmup > 0 && start.elapsed() < warm_for) {
            if i > 0 && start.elapsed() > budget {
                break;
            }
            let inputs = self.fresh_inputs();
            let t = Instant::now();
            state.run(inputs).map_err(|e| self.run_err(e))?;
            fastest = fastest.min(t.elapsed());
            i += 1;
            progress(Progress {
                phase: Phase::WarmUp,
                done: i,
                total: spec.warmup.max(i),
            });
        }
        // Without a warm-up there is no estimate to batch by, and the caller asked for cold runs.
        let batch = if spec.warmup == 0 {
            1
        } else {
            self.batch_size(fastest)
        };
        let runs = spec.runs.max(1);
        let min_runs = runs.min(3);
        let mut samples = Vec::with_capacity(runs);
        let mut pending: Vec<TVec<TValue>> = Vec::with_capacity(batch);
        for r in 0..runs {
            if r >= min_runs && start.elapsed() > budget {
                break;
            }
            pending.extend((0..batch).map(|_| self.fresh_inputs()));
            let t = Instant::now();
            for inputs in pending.drain(..) {
                state.run(inputs).map_err(|e| self.run_err(e))?;
            }
            let elapsed = t.elapsed();
            samples.push(elapsed.as_secs_f64() * 1e3 / batch as f64);
            progress(Progress {
                phase: Phase::Timed,
                done: r + 1,
                total: runs,
            });
        }
        Timing::from_samples(samples).ok_or_else(|| RuntimeError::Run {
            model: self.name.clone(),
            detail: "no timed run".into(),
        })
    }

    /// Per-node median times over `spec.runs` whole-model runs (after `spec.warmup` plain runs), in
    /// execution order. The sum is a little more than a plain run takes: each node is timed apart.
    pub fn time_per_node(&self, spec: &RunSpec) -> Result<Vec<NodeTiming>, RuntimeError> {
        let executor = executor(spec.effective_threads())?;
        multithread_tract_scope(executor, || self.time_per_node_here(spec))
    }

    fn time_per_node_here(&self, spec: &RunSpec) -> Result<Vec<NodeTiming>, RuntimeError> {
        let start = Instant::now();
        let budget = budget(spec);
        let mut state = TypedSimpleState::new(&self.plan).map_err(|e| self.run_err(e))?;
        for i in 0..spec.warmup {
            if i > 0 && start.elapsed() > budget {
                break;
            }
            state
                .run(self.fresh_inputs())
                .map_err(|e| self.run_err(e))?;
        }
        let model = self.plan.model();
        let n_nodes = model.nodes.len();
        let runs = spec.runs.max(1);
        let mut per_node: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); n_nodes];
        let mut this_run = vec![0.0f64; n_nodes];
        for r in 0..runs {
            if r >= runs.min(3) && start.elapsed() > budget {
                break;
            }
            this_run.iter_mut().for_each(|t| *t = 0.0);
            state
                .run_plan_with_eval(self.fresh_inputs(), |ctx, op_state, node, inputs| {
                    let t = Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    if let Some(slot) = this_run.get_mut(node.id) {
                        *slot += t.elapsed().as_secs_f64() * 1e3;
                    }
                    out
                })
                .map_err(|e| self.run_err(e))?;
            for (all, &t) in per_node.iter_mut().zip(&this_run) {
                all.push(t);
            }
        }
        let mut timings = Vec::new();
        for &id in self.plan.order_without_consts() {
            let node = model.node(id);
            if node.op_is::<tract_onnx::tract_core::ops::source::TypedSource>() {
                continue;
            }
            let v = crate::util::stats::sorted_finite(per_node[id].iter().copied());
            timings.push(NodeTiming {
                name: node.name.clone(),
                op: node.op().name().to_string(),
                median_ms: super::quantile(&v, 0.5),
                p25_ms: super::quantile(&v, 0.25),
            });
        }
        Ok(timings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{builder::GraphBuilder, export::to_onnx_bytes};

    fn tiny() -> Vec<u8> {
        let mut b = GraphBuilder::new("tiny");
        let x = b.input(&[1, 8, 8, 8]);
        let y = b.relu(x).unwrap();
        to_onnx_bytes(&b.finish(&[y]).unwrap()).unwrap()
    }

    #[test]
    fn prepared_models_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Prepared>();
        send_sync::<TractBackend>();
    }

    #[test]
    fn version_matches_the_lock_file() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
            .unwrap_or_default();
        let want = format!("name = \"tract-core\"\nversion = \"{TRACT_VERSION}\"");
        assert!(
            lock.is_empty() || lock.contains(&want),
            "update TRACT_VERSION"
        );
    }

    #[test]
    fn tiny_models_are_batched_and_timed() {
        let p = TractBackend::new().prepare(&tiny()).unwrap();
        assert_eq!(p.input_shapes(), vec![vec![1, 8, 8, 8]]);
        assert_eq!(p.name(), "tiny");
        assert!(p.batch_size(Duration::from_micros(1)) > 10);
        assert_eq!(p.batch_size(Duration::from_millis(1)), 1);
        let mut seen = Vec::new();
        let t = p
            .time_with_progress(&RunSpec::default(), &mut |pr| seen.push(pr))
            .unwrap();
        assert_eq!(t.runs, 10);
        assert!(t.median_ms > 0.0 && t.p10_ms <= t.median_ms && t.median_ms <= t.p90_ms);
        assert_eq!(seen.len(), 13);
        assert_eq!(seen.last().map(|p| p.phase), Some(Phase::Timed));
        // A zero budget still gives the minimum of 3 samples.
        let t = p
            .time(&RunSpec {
                max_seconds: 0.0,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(t.runs, 3);
    }

    #[test]
    fn errors_name_the_model() {
        let b = TractBackend::new();
        let e = b.time_onnx(b"not onnx", &RunSpec::default()).unwrap_err();
        assert!(matches!(e, RuntimeError::Load { .. }), "{e}");
        let mut bytes = tiny();
        let mut proto = pb::ModelProto::decode(bytes.as_slice()).unwrap();
        if let Some(g) = proto.graph.as_mut() {
            g.node[0].op_type = "NoSuchOp".into();
        }
        bytes = proto.encode_to_vec();
        let e = b.time_onnx(&bytes, &RunSpec::default()).unwrap_err();
        assert!(e.to_string().contains("tiny"), "{e}");
    }
}
