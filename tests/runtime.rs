//! Measurement backends end to end: built kernels exported and timed by tract, zoo models benched and
//! round-tripped through export, the command backend with fake commands and (when installed) ONNX Runtime,
//! and `augur bench`.
mod common;

use augur::model::builder::GraphBuilder;
use augur::model::export::to_onnx_bytes;
use augur::model::{Graph, import_bytes, import_path};
use augur::runtime::{
    Backend, CommandBackend, RunSpec, RuntimeError, Timing, TractBackend, backend_from_spec,
};
use std::path::Path;
use std::time::{Duration, Instant};

fn conv_model() -> Vec<u8> {
    let mut b = GraphBuilder::new("conv3x3");
    let x = b.input(&[1, 32, 28, 28]);
    let y = b
        .conv(x, 64, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, true)
        .unwrap();
    let y = b.relu(y).unwrap();
    to_onnx_bytes(&b.finish(&[y]).unwrap()).unwrap()
}

fn relu_model() -> Vec<u8> {
    let mut b = GraphBuilder::new("relu");
    let x = b.input(&[1, 16, 8, 8]);
    let y = b.relu(x).unwrap();
    to_onnx_bytes(&b.finish(&[y]).unwrap()).unwrap()
}

fn sane(t: &Timing) {
    assert!(t.median_ms > 0.0, "{t:?}");
    assert!(t.p10_ms <= t.median_ms && t.median_ms <= t.p90_ms, "{t:?}");
    assert_eq!(t.samples_ms.len(), t.runs);
}

#[test]
fn a_conv_kernel_is_timed_by_tract() {
    let t = TractBackend::new()
        .time_onnx(&conv_model(), &RunSpec::default())
        .unwrap();
    sane(&t);
    assert_eq!(t.runs, 10);
}

#[test]
fn two_threads_are_accepted() {
    let spec = RunSpec {
        threads: 2,
        runs: 5,
        ..Default::default()
    };
    let t = backend_from_spec("tract")
        .unwrap()
        .time_onnx(&conv_model(), &spec)
        .unwrap();
    sane(&t);
}

#[test]
fn prepared_models_are_timed_again_and_per_node() {
    let p = TractBackend::new().prepare(&conv_model()).unwrap();
    let spec = RunSpec {
        runs: 5,
        warmup: 1,
        warmup_seconds: 0.0,
        ..Default::default()
    };
    sane(&p.time(&spec).unwrap());
    sane(&p.time(&spec).unwrap());
    let nodes = p.time_per_node(&spec).unwrap();
    assert!(!nodes.is_empty());
    assert!(nodes.iter().all(|n| n.median_ms >= 0.0 && !n.op.is_empty()));
    assert!(nodes.iter().map(|n| n.median_ms).sum::<f64>() > 0.0);
}

/// Warm-up goes on by time as well as by count, and only when warm-up was asked for.
#[test]
fn warm_up_lasts_its_seconds_as_well_as_its_runs() {
    let p = TractBackend::new().prepare(&relu_model()).unwrap();
    let warm_ups = |warmup: usize, warmup_seconds: f64| {
        let spec = RunSpec {
            runs: 3,
            warmup,
            warmup_seconds,
            ..Default::default()
        };
        let mut n = 0;
        p.time_with_progress(&spec, &mut |g| {
            n += usize::from(g.phase == augur::runtime::Phase::WarmUp)
        })
        .unwrap();
        n
    };
    assert_eq!(warm_ups(1, 0.0), 1);
    assert_eq!(warm_ups(0, 0.05), 0, "no warm-up asked for, none given");
    assert_eq!(
        warm_ups(1, f64::NAN),
        1,
        "a figure that is no duration warms by count"
    );
    // A 1,024-element ReLU runs in microseconds: 50 ms hold far more than two runs.
    assert!(warm_ups(1, 0.05) > 2);
}

#[test]
fn a_zoo_model_is_benched() {
    let path = common::zoo_model("mobilenet_v3_small_224");
    let bytes = std::fs::read(path).unwrap();
    let spec = RunSpec {
        runs: 3,
        warmup: 1,
        warmup_seconds: 0.0,
        ..Default::default()
    };
    let t = TractBackend::new().time_onnx(&bytes, &spec).unwrap();
    sane(&t);
    assert_eq!(t.runs, 3);
    assert!(t.median_ms > 0.5, "a 56 MMAC network in {} ms", t.median_ms);
}

fn macs(g: &Graph) -> u64 {
    g.nodes
        .iter()
        .map(|n| augur::kernels::node_macs(g, n))
        .sum()
}

#[test]
fn zoo_models_survive_export() {
    let names = common::zoo_models();
    let mut failures = Vec::new();
    for path in &names {
        let g = import_path(path, None).unwrap();
        let back = to_onnx_bytes(&g)
            .map_err(|e| e.to_string())
            .and_then(|b| import_bytes(&b, "exported", None).map_err(|e| e.to_string()));
        match back {
            Ok(b) => {
                let shapes = |g: &Graph| -> Vec<Vec<usize>> {
                    g.outputs
                        .iter()
                        .map(|&t| g.tensor(t).shape.to_vec())
                        .collect()
                };
                if macs(&g) != macs(&b)
                    || shapes(&g) != shapes(&b)
                    || g.nodes.len() != b.nodes.len()
                {
                    failures.push(format!(
                        "{}: MACs {} → {}, nodes {} → {}",
                        path.display(),
                        macs(&g),
                        macs(&b),
                        g.nodes.len(),
                        b.nodes.len()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A command backend running `script` (a sh script) with the model path and runs as arguments.
fn fake(dir: &Path, script: &str) -> CommandBackend {
    let path = dir.join(format!("fake{}.sh", script.len()));
    std::fs::write(&path, script).unwrap();
    CommandBackend::new(&format!("sh '{}' {{model}} {{runs}}", path.display())).unwrap()
}

#[test]
fn the_command_backend_reads_a_reply() {
    let dir = tempfile::tempdir().unwrap();
    let b = fake(
        dir.path(),
        r#"test -s "$1" || exit 9
echo "starting"
echo "{\"latency_ms\": {\"median\": 1.5, \"p10\": 1.0, \"p90\": 2.5}, \"runs\": $2, \"version\": \"fake $1\"}"
"#,
    );
    let spec = RunSpec {
        runs: 7,
        ..Default::default()
    };
    let t = b.time_onnx(&conv_model(), &spec).unwrap();
    assert_eq!(
        (t.median_ms, t.p10_ms, t.p90_ms, t.runs),
        (1.5, 1.0, 2.5, 7)
    );
    // The temporary model was there for the command and is gone after it.
    let version = b.version();
    let model = version.trim_start_matches("fake ");
    assert!(model.ends_with(".onnx"), "{version}");
    assert!(!Path::new(model).exists());
}

#[test]
fn command_failures_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let spec = RunSpec::default();
    let model = relu_model();

    let e = fake(dir.path(), "echo 'cannot load model' >&2\nexit 3\n")
        .time_onnx(&model, &spec)
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RuntimeError::Command { .. }), "{msg}");
    assert!(
        msg.contains("cannot load model") && msg.contains('3'),
        "{msg}"
    );

    let e = fake(dir.path(), "echo 'latency: 3 ms'\n")
        .time_onnx(&model, &spec)
        .unwrap_err();
    assert!(matches!(e, RuntimeError::BadOutput { .. }), "{e}");
    assert!(e.to_string().contains("latency: 3 ms"), "{e}");

    let t0 = Instant::now();
    let e = fake(dir.path(), "sleep 30 & sleep 30\n")
        .with_timeout(Duration::from_millis(300))
        .time_onnx(&model, &spec)
        .unwrap_err();
    assert!(matches!(e, RuntimeError::Timeout { .. }), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5));

    let e = CommandBackend::new("/nonexistent/bench {model}")
        .unwrap()
        .time_onnx(&model, &spec)
        .unwrap_err();
    assert!(e.to_string().contains("cannot start"), "{e}");
}

fn onnxruntime_missing() -> Option<String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import onnxruntime, numpy"])
        .output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Some(format!("no python3: {e}")),
    }
}

#[test]
fn the_onnxruntime_script_times_a_kernel() {
    if let Some(why) = onnxruntime_missing() {
        eprintln!("skipped: onnxruntime is not importable ({why}); pip install onnxruntime numpy");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onnxruntime_bench.py");
    let b = CommandBackend::new(&format!(
        "python3 '{}' {{model}} --threads {{threads}} --runs {{runs}} --warmup {{warmup}}",
        script.display()
    ))
    .unwrap();
    assert_eq!(b.name(), "onnxruntime_bench");
    let spec = RunSpec {
        runs: 5,
        ..Default::default()
    };
    let t = b.time_onnx(&conv_model(), &spec).unwrap();
    sane(&t);
    assert_eq!(t.runs, 5);
    assert!(b.version().starts_with("onnxruntime 1."), "{}", b.version());
}

#[test]
fn augur_bench_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("conv.onnx");
    std::fs::write(&model, conv_model()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_augur"))
        .arg("bench")
        .arg(&model)
        .args(["--runs", "4", "--warmup", "1", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["latency_ms"]["median"].as_f64().unwrap() > 0.0);
    assert!(v["latency_ms"]["p10"].as_f64().is_some() && v["latency_ms"]["p90"].as_f64().is_some());
    assert_eq!(v["runs"], 4);
    assert_eq!(v["threads"], 1);
    assert_eq!(v["backend"], "tract");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_augur"))
        .arg("bench")
        .arg(&model)
        .args(["--runs", "3", "--input-shape", "1,32,14,14"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("median") && line.contains("tract 0."),
        "{line}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_augur"))
        .args(["bench", "/nonexistent.onnx"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.onnx"));
}
