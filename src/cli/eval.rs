//! `augur eval`: measure models on this board and compare with predictions, beside a FLOPs-proxy
//! baseline (latency = a·MACs + b per kernel, fitted on the same calibration measurements).
use crate::predict::Predictor;
use crate::profile::{Profile, Roofline};
use crate::runtime::RunSpec;
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model files.
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
    /// Device profile (default: `profile` of config/augur.toml).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Threads for measuring and predicting (must match the profile's to be meaningful).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed runs per model.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Evaluate under background load: any of quiet,cpu,mem,cache (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Seconds each model runs per measurement under --scenarios (a job that keeps running; see
    /// docs/evaluation.md).
    #[arg(long, default_value_t = 8.0)]
    pub window: f64,
    /// Under --scenarios, rounds each model's window is cut into: each round is predicted from the
    /// state just before it is measured, and the model is scored on the rounds' means.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Scenario of the online-learning run (with --scenarios; `none` skips it).
    #[arg(long, default_value = "quiet")]
    pub online_scenario: String,
    /// Seconds each model runs per measurement in the online run (six measurements per model).
    #[arg(long, default_value_t = 2.0)]
    pub online_window: f64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
pub struct ModelResult {
    pub model: String,
    pub predicted_ms: f64,
    pub measured_ms: f64,
    pub error_pct: f64,
    pub baseline_ms: f64,
    pub baseline_error_pct: f64,
    /// Board speed relative to calibration used by the prediction (reference workload; 1: none).
    pub speed_ratio: f64,
}

#[derive(Serialize, Default, Clone, Copy)]
pub struct Summary {
    /// Share of models within ±5 % (0–1).
    pub within_5_pct: f64,
    pub within_10_pct: f64,
    pub mape_pct: f64,
    pub rmse_ms: f64,
}

impl Summary {
    pub fn of(pairs: &[(f64, f64)]) -> Summary {
        if pairs.is_empty() {
            return Summary::default();
        }
        let n = pairs.len() as f64;
        let rel: Vec<f64> = pairs.iter().map(|(p, m)| ((p - m) / m).abs()).collect();
        Summary {
            within_5_pct: rel.iter().filter(|&&e| e <= 0.05).count() as f64 / n,
            within_10_pct: rel.iter().filter(|&&e| e <= 0.10).count() as f64 / n,
            mape_pct: rel.iter().sum::<f64>() / n * 100.0,
            rmse_ms: (pairs.iter().map(|(p, m)| (p - m).powi(2)).sum::<f64>() / n).sqrt(),
        }
    }
}

/// a·MACs + b per kernel, least squares over the profile's measurements.
pub fn flops_baseline(p: &Profile) -> (f64, f64) {
    let pts: Vec<(f64, f64)> = p
        .measurements
        .iter()
        .map(|m| (m.kernel.macs as f64, m.median_ms))
        .collect();
    let n = pts.len() as f64;
    if n < 2.0 {
        return (0.0, 0.0);
    }
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let a = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (a, my - a * mx)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.scenarios.is_empty() {
        return run_scenarios(args);
    }
    let profile = super::predict::load_profile(args.profile.as_deref())?;
    let (a, b) = flops_baseline(&profile);
    let predictor = Predictor::new(Some(profile), Roofline::default());
    let backend = crate::runtime::TractBackend::default();
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.models.len() as u64)
    };
    let mut results = Vec::new();
    // The board's speed against its calibration, from the reference workload timed before each model
    // (`SpeedNow`).
    let mut speed = if predictor.slowdown.reference_workload_cpu_ms > 0.0 {
        Some(crate::calibrate::reference::SpeedNow::new()?)
    } else {
        if !args.json {
            eprintln!(
                "augur: note: the profile has no reference-workload timing (made before it existed); predicting without the speed term"
            );
        }
        None
    };
    for m in &args.models {
        bar.set_message(m.display().to_string());
        let d = super::inspect::load(m, None)?;
        let base = predictor.base(&d);
        // Quiet-board prediction: this command checks the profile (and the board's speed against
        // it); `--scenarios` checks the live model under load.
        let mut state = crate::sense::Snapshot::default();
        if let Some(sp) = &mut speed {
            sp.read()?;
            sp.apply(&mut state);
        }
        let p = predictor.predict(&d, &base, &state, args.threads, false);
        let bytes = std::fs::read(m)?;
        let spec = RunSpec {
            threads: args.threads,
            warmup: 2,
            runs: args.runs,
            max_seconds: 60.0,
        };
        let t = crate::runtime::Backend::time_onnx(&backend, &bytes, &spec)?;
        let baseline = a * d.macs as f64 + b * d.kernels.len() as f64;
        let name = m
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        results.push(ModelResult {
            model: name,
            predicted_ms: p.latency_ms,
            measured_ms: t.median_ms,
            error_pct: (p.latency_ms - t.median_ms) / t.median_ms * 100.0,
            baseline_ms: baseline,
            baseline_error_pct: (baseline - t.median_ms) / t.median_ms * 100.0,
            speed_ratio: p.state.speed_factor,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let summary = Summary::of(
        &results
            .iter()
            .map(|r| (r.predicted_ms, r.measured_ms))
            .collect::<Vec<_>>(),
    );
    let baseline = Summary::of(
        &results
            .iter()
            .map(|r| (r.baseline_ms, r.measured_ms))
            .collect::<Vec<_>>(),
    );
    if args.json {
        let v =
            serde_json::json!({"models": results, "summary": summary, "baseline_flops": baseline});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<26} {:>12} {:>12} {:>9} {:>12} {:>9} {:>6}",
        "model", "predicted", "measured", "error", "FLOPs-proxy", "error", "speed"
    );
    for r in &results {
        println!(
            "{:<26} {:>9.2} ms {:>9.2} ms {:>+8.1}% {:>9.2} ms {:>+8.1}% {:>6.3}",
            r.model,
            r.predicted_ms,
            r.measured_ms,
            r.error_pct,
            r.baseline_ms,
            r.baseline_error_pct,
            r.speed_ratio
        );
    }
    for (name, s) in [("augur", summary), ("FLOPs-proxy", baseline)] {
        println!(
            "{:<12} within ±5 %: {:>5.1} %   within ±10 %: {:>5.1} %   MAPE {:>5.2} %   RMSE {:.2} ms",
            name,
            s.within_5_pct * 100.0,
            s.within_10_pct * 100.0,
            s.mape_pct,
            s.rmse_ms
        );
    }
    Ok(())
}

fn run_scenarios(args: Args) -> anyhow::Result<()> {
    let profile = super::predict::load_profile(args.profile.as_deref())?;
    let predictor = Predictor::new(Some(profile), Roofline::default());
    let backend = crate::runtime::TractBackend::default();
    let mut models = Vec::new();
    for m in &args.models {
        let d = super::inspect::load(m, None)?;
        let base = predictor.base(&d);
        let prepared = backend.prepare(&std::fs::read(m)?)?;
        let name = m
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        models.push(super::scenarios::Model {
            name,
            d,
            base,
            prepared,
        });
    }
    let report = super::scenarios::run(
        &predictor,
        &models,
        &super::scenarios::Plan {
            scenarios: &args.scenarios,
            online_scenario: &args.online_scenario,
            runs: args.runs,
            window: args.window,
            rounds: args.rounds,
            online_window: args.online_window,
            progress: !args.json,
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:<8} {:>16} {:>10} {:>16} {:>10}",
        "scenario", "aware ±10 %", "MAPE", "static ±10 %", "MAPE"
    );
    if let Some(sc) = report.get("scenarios").and_then(|v| v.as_object()) {
        for (name, v) in sc {
            let f = |k: &str, f: &str| {
                v.get(k)
                    .and_then(|x| x.get(f))
                    .and_then(|x| x.as_f64())
                    .unwrap_or(f64::NAN)
            };
            println!(
                "{:<8} {:>15.1}% {:>9.2}% {:>15.1}% {:>9.2}%",
                name,
                f("aware", "within_10_pct") * 100.0,
                f("aware", "mape_pct"),
                f("static", "within_10_pct") * 100.0,
                f("static", "mape_pct")
            );
        }
    }
    if let Some(on) = report.get("online").and_then(|v| v.as_object()) {
        for (k, v) in on {
            let f = |f: &str| v.get(f).and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
            println!(
                "online {k}: within ±5 % {:.1} %, within ±10 % {:.1} %, MAPE {:.2} %",
                f("within_5_pct") * 100.0,
                f("within_10_pct") * 100.0,
                f("mape_pct")
            );
        }
    }
    Ok(())
}
