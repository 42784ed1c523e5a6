//! Benchmark of model import + kernel decomposition on resnet50_224 (the bar: ≤ 300 ms median).
//!
//! `cargo bench --bench import` (runs: `AUGUR_BENCH_RUNS`, default 25). Prints median, p10 and p90 of
//! the whole path (`import_path`: read + parse + shape inference + decomposition) and of the same
//! without the file read, so a slow disk is told from slow code.
#[path = "../tests/common/mod.rs"]
mod common;

use augur::kernels::{FusionRules, decompose};
use augur::model::{import_bytes, import_path};
use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const MODEL: &str = "resnet50_224";

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let ix = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[ix].as_secs_f64() * 1e3
}

fn report(what: &str, mut t: Vec<Duration>) -> f64 {
    t.sort();
    let median = percentile(&t, 0.5);
    println!(
        "{what:<34} median {median:7.1} ms   p10 {:7.1} ms   p90 {:7.1} ms   ({} runs)",
        percentile(&t, 0.1),
        percentile(&t, 0.9),
        t.len()
    );
    median
}

fn main() -> ExitCode {
    let path = common::zoo_model(MODEL);
    let runs: usize = std::env::var("AUGUR_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25)
        .max(3);
    let rules = FusionRules::tract_default();
    let source = path.display().to_string();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("import bench: {source}: {e}");
            return ExitCode::FAILURE;
        }
    };

    let once = |from_file: bool| -> Result<Duration, String> {
        let t = Instant::now();
        let g = if from_file {
            import_path(&path, None)
        } else {
            import_bytes(&bytes, &source, None)
        }
        .map_err(|e| e.to_string())?;
        let d = decompose(&g, &rules).map_err(|e| e.to_string())?;
        black_box(d);
        Ok(t.elapsed())
    };
    // Warm-up: page cache, allocator, lazily built op registries.
    for _ in 0..2 {
        if let Err(e) = once(true) {
            eprintln!("import bench: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut from_file = Vec::with_capacity(runs);
    let mut from_bytes = Vec::with_capacity(runs);
    for _ in 0..runs {
        match (once(true), once(false)) {
            (Ok(a), Ok(b)) => {
                from_file.push(a);
                from_bytes.push(b);
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("import bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("import + decomposition of {MODEL}");
    let median = report("read + import + decompose", from_file);
    report("import + decompose (bytes in memory)", from_bytes);
    if median > 300.0 {
        println!("median above the 300 ms bar");
    }
    ExitCode::SUCCESS
}
