//! Cost of a prediction for a cached resnet50 decomposition, and of one online update.
//! `cargo bench --bench predict` (uses `AUGUR_PROFILE` if set, else a 15-second calibration).
#[path = "../tests/common/mod.rs"]
mod common;

use augur::kernels::{FusionRules, decompose};
use augur::predict::{Job, Learner, Predictor};
use augur::profile::{Profile, Roofline};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median over `rounds` of the mean time per call of `f` over `iters` calls, in µs.
fn time(rounds: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    let mut v = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        v.push(t.elapsed().as_secs_f64() * 1e6 / iters as f64);
    }
    median(v)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let resnet50 = common::zoo_model("resnet50_224");
    let profile_path = match std::env::var("AUGUR_PROFILE") {
        Ok(p) => PathBuf::from(p),
        Err(_) => {
            let out = root.join("target/bench-predict/profile.json");
            if !out.exists() {
                let exe = root.join("target/release/augur");
                let st = Command::new(&exe)
                    .args([
                        "calibrate",
                        "--budget",
                        "quick",
                        "--budget-seconds",
                        "15",
                        "--no-load-fit",
                        "--quiet",
                        "--out",
                    ])
                    .arg(&out)
                    .status();
                assert!(
                    st.map(|s| s.success()).unwrap_or(false),
                    "calibration for the bench failed (build the binary first)"
                );
            }
            out
        }
    };
    let (profile, _) =
        Profile::load(&profile_path, &augur::profile::tract_runtime()).expect("profile");
    let g = augur::model::import_path(&resnet50, None).expect("import");
    let d = decompose(&g, &FusionRules::tract_default()).expect("decompose");
    let predictor = Predictor::new(Some(profile), Roofline::default());
    let state = augur::sense::Snapshot::default();
    let base = predictor.base(&d);

    let full = time(15, 200, || {
        let b = predictor.base(std::hint::black_box(&d));
        std::hint::black_box(predictor.predict(&d, &b, &state, 1, false));
    });
    let cached = time(15, 2000, || {
        std::hint::black_box(predictor.predict(std::hint::black_box(&d), &base, &state, 1, false));
    });
    // Another thread count than the profile's: every kernel's speed-up is evaluated too (the
    // thread scaling's lines, or its trees where calibration kept them).
    let other = if predictor.base_threads() == 1 { 2 } else { 1 };
    let scaled = time(15, 500, || {
        std::hint::black_box(predictor.predict(
            std::hint::black_box(&d),
            &base,
            &state,
            other,
            false,
        ));
    });
    let mut learner = Learner::new(4096);
    let job = Job {
        model: "resnet50",
        d: &d,
        base: &base,
        threads: 1,
    };
    let learned = time(15, 2000, || {
        std::hint::black_box(predictor.predict_live(&job, &state, &learner, false));
    });
    // The learner's update alone (board, kernel-kind and model offsets and the shared regression).
    let features = augur::predict::learner::Features {
        phi: [1.0, 0.2, 0.1, 0.0],
        kinds: Some(base.kind_shares),
    };
    let mut i = 0u64;
    let update = time(15, 2000, || {
        i += 1;
        let obs = 100.0 * (1.0 + 0.01 * ((i % 7) as f64 - 3.0));
        let _ = std::hint::black_box(learner.learn("resnet50", &features, 100.0, obs));
    });
    println!("resnet50: {} kernels", d.kernels.len());
    println!(
        "predict from a cached decomposition (regressors evaluated): {full:.2} µs (median of 15 rounds)"
    );
    println!("predict from a cached decomposition and base (daemon hot path): {cached:.2} µs");
    println!("predict with the live state and the online correction: {learned:.2} µs");
    println!("predict at {other} threads (thread scaling evaluated): {scaled:.2} µs");
    println!("one online update: {update:.3} µs");
}
