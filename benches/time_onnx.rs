//! What calibration pays per kernel: the whole `TractBackend::time_onnx` call (load, optimise,
//! warm-up, timed runs) on a one-op model, median of 31 calls.
//!
//! `cargo bench --bench time_onnx`. A bench rather than a test because it times the host: on a
//! loaded machine it says more about the neighbours than about augur. Exits 1 when the median call
//! takes 1 s or more (calibration times thousands of kernels, so a slower call would blow its budget).
use augur::model::builder::GraphBuilder;
use augur::model::export::to_onnx_bytes;
use augur::runtime::{Backend, RunSpec, TractBackend};
use std::time::Instant;

/// The bar for the median `time_onnx` call, milliseconds.
const BAR_MS: f64 = 1000.0;

fn relu_model() -> Vec<u8> {
    let mut b = GraphBuilder::new("relu");
    let x = b.input(&[1, 16, 8, 8]);
    let y = b.relu(x).expect("relu");
    to_onnx_bytes(&b.finish(&[y]).expect("graph")).expect("onnx")
}

fn main() {
    let backend = TractBackend::new();
    let bytes = relu_model();
    let spec = RunSpec::default();
    let (mut walls, mut runs) = (Vec::new(), Vec::new());
    for _ in 0..31 {
        let t0 = Instant::now();
        let t = backend.time_onnx(&bytes, &spec).expect("time_onnx");
        walls.push(t0.elapsed().as_secs_f64() * 1e3);
        runs.push(t.median_ms);
    }
    walls.sort_by(f64::total_cmp);
    runs.sort_by(f64::total_cmp);
    println!(
        "time_onnx on a 1-op model: {:.3} ms per call (median of 31), one run {:.2} µs",
        walls[15],
        runs[15] * 1e3
    );
    if walls[15] >= BAR_MS {
        eprintln!(
            "time_onnx: the median call took {:.1} ms, the bar is {BAR_MS} ms",
            walls[15]
        );
        std::process::exit(1);
    }
}
