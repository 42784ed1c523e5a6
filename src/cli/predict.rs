//! `augur predict`: predicted latency and memory of a model on this board, now.
use crate::predict::Predictor;
use crate::profile::{Profile, Roofline};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file: ONNX, or nn-Meter IR JSON.
    pub model: PathBuf,
    /// Device profile (default: `profile` of config/augur.toml).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Threads the model will run with: 1 to the board's cores (counts other than the profile's
    /// are scaled by its calibrated thread scaling).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Fix the input shape, e.g. 1,3,160,160.
    #[arg(long, value_parser = super::parse_shape)]
    pub input_shape: Option<super::Shape>,
    /// Ignore the live state (predict for a quiet board).
    #[arg(long)]
    pub r#static: bool,
    /// Also answer the probability of finishing within this many ms.
    // Negative numbers reach the check in `run`, which refuses them in one line.
    #[arg(long, allow_negative_numbers = true)]
    pub deadline_ms: Option<f64>,
    #[command(flatten)]
    pub state: super::StateFrom,
    #[arg(long)]
    pub json: bool,
}

/// Loads a profile, printing its warnings; a missing profile is an error naming the remedy.
pub fn load_profile(path: Option<&Path>) -> anyhow::Result<Profile> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => super::default_profile_path()?,
    };
    if !path.exists() {
        anyhow::bail!(
            "{}: no device profile; run `augur calibrate --out {}` first",
            path.display(),
            path.display()
        );
    }
    let (p, warnings) = Profile::load(&path, &crate::profile::tract_runtime())?;
    for w in warnings {
        eprintln!("augur: warning: {w}");
    }
    Ok(p)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(d) = args.deadline_ms
        && !crate::serve::api::valid_deadline_ms(d)
    {
        anyhow::bail!("--deadline-ms must be a positive number of ms, got {d}");
    }
    let profile = load_profile(args.profile.as_deref())?;
    let d = super::inspect::load(&args.model, args.input_shape.as_deref())?;
    let predictor = Predictor::new(Some(profile), Roofline::default());
    predictor.check_threads(args.threads)?;
    let base = predictor.base(&d);
    let state = args.state.snapshot(args.r#static)?;
    let mut p = predictor.predict(&d, &base, &state, args.threads, true);
    if let Some(why) = &p.energy_unavailable {
        let roots = crate::util::roots::Roots::default();
        p.energy_unavailable = Some(crate::predict::energy::reason_now(
            predictor.profile.as_ref(),
            why,
            &roots,
        ));
    }
    if args.json {
        // The shape `POST /v1/predict` answers in.
        use crate::serve::api::{PredictAnswer, StateSource, StateSummary};
        let source = if args.r#static {
            StateSource::Quiet
        } else {
            StateSource::Live
        };
        let summary = StateSummary::of(&state, source);
        let model = args.model.display().to_string();
        let answer =
            PredictAnswer::new(&model, args.threads, &summary, p).with_deadline(args.deadline_ms);
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    println!(
        "{}: {:.2} ms (interval {:.2}–{:.2} ms; quiet-board {:.2} ms × slowdown {:.2}), peak memory {:.1} MiB",
        args.model.display(),
        p.latency_ms,
        p.interval_ms[0],
        p.interval_ms[1],
        p.base_ms,
        p.slowdown,
        p.peak_memory_bytes as f64 / 1048576.0
    );
    if let Some(d) = args.deadline_ms {
        let error =
            crate::predict::deadline::ErrorModel::from_interval(p.latency_ms, p.interval_ms);
        println!(
            "probability of finishing within {d} ms: {:.2}",
            error.p_within(p.latency_ms, d)
        );
    }
    match (p.energy_joules, &p.energy_unavailable) {
        (Some(j), _) => println!("energy: {j:.3} J above idle"),
        (None, Some(why)) => println!("energy: unavailable — {why}"),
        (None, None) => {}
    }
    if p.fallback_kernels > 0 {
        println!(
            "{} kernels had no regressor and used the roofline fallback",
            p.fallback_kernels
        );
    }
    for n in &p.notes {
        println!("note: {n}");
    }
    Ok(())
}
