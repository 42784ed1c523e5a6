//! `augur calibrate`: measure this board and write its device profile.
use crate::calibrate::fusion;
use crate::calibrate::run::{Budget, Options, calibrate, journal_path};
use crate::kernels::FusionRules;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to write the profile (default: `profile` of config/augur.toml).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How long to spend measuring.
    #[arg(long, value_enum, default_value = "standard")]
    pub budget: Budget,
    /// Threads the runtime uses while measuring (predictions are for this thread count).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Measurement backend: `tract` (in process) or `cmd:<template>` (see docs/measuring.md).
    #[arg(long, default_value = "tract")]
    pub backend: String,
    /// Seed of the sampling plan (a resumed run must use the same one).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Override the budget's duration, seconds.
    #[arg(long, hide = true)]
    pub budget_seconds: Option<f64>,
    /// Skip fitting the slowdown model under background load.
    #[arg(long)]
    pub no_load_fit: bool,
    /// Only fit the slowdown model of the existing profile at --out again (no kernel measuring).
    #[arg(long, conflicts_with = "no_load_fit")]
    pub only_load_fit: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let out = match args.out {
        Some(p) => p,
        None => super::default_profile_path()?,
    };
    if args.only_load_fit {
        let p = crate::calibrate::run::refit_slowdown(&out, args.seed, !args.quiet)?;
        eprintln!(
            "refitted the slowdown model of {} ({})",
            out.display(),
            if p.slowdown.is_some() {
                "fitted"
            } else {
                "defaults"
            }
        );
        return Ok(());
    }
    let backend = crate::runtime::backend_from_spec(&args.backend)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        // Ctrl-C stops after the measurement in flight; everything measured is already journalled.
        let stop = stop.clone();
        let _ = ctrlc_hook(move || stop.store(true, Ordering::Relaxed));
    }
    let fusion = if args.backend == "tract" {
        fusion::detect_tract()
            .map_err(|e| anyhow::anyhow!("detecting tract's fusion rules: {e}"))?
    } else {
        eprintln!("detecting fusion rules by timing op pairs …");
        fusion::detect_by_timing(backend.as_ref(), args.threads)
            .map_err(|e| anyhow::anyhow!("detecting fusion rules: {e}"))?
    };
    let default = FusionRules::tract_default();
    if args.backend == "tract" && fusion.pairs != default.pairs {
        let added: Vec<_> = fusion.pairs.difference(&default.pairs).collect();
        let missing: Vec<_> = default.pairs.difference(&fusion.pairs).collect();
        tracing::info!(
            ?added,
            ?missing,
            "detected fusion rules differ from the shipped ones"
        );
    }
    let opts = Options {
        out: out.clone(),
        budget: args.budget,
        budget_seconds: args.budget_seconds,
        threads: args.threads,
        seed: args.seed,
        progress: !args.quiet,
        fit_slowdown: !args.no_load_fit,
        stop,
    };
    let started = std::time::Instant::now();
    let profile = calibrate(backend.as_ref(), fusion, &opts)?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wrote {} ({} measurements, {} regressors, {:.1} MB) in {:.0} s; journal: {}",
        out.display(),
        profile.measurements.len(),
        profile.regressors.len(),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        journal_path(&out).display()
    );
    for (kind, r) in &profile.regressors {
        let err = r
            .holdout_error
            .map(|e| format!("{:.1} %", e * 100.0))
            .unwrap_or_else(|| "n/a (too few)".into());
        eprintln!(
            "  {:<14} {:>5} samples, held-out median error {err}",
            kind.name(),
            r.samples
        );
    }
    Ok(())
}

/// Installs a SIGINT handler that runs `f` once (a second Ctrl-C kills as usual).
fn ctrlc_hook(f: impl Fn() + Send + 'static) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "\ninterrupted: finishing the measurement in flight (Ctrl-C again to kill)"
                );
                f();
                let _ = tokio::signal::ctrl_c().await;
                std::process::exit(130);
            }
        })
    });
    Ok(())
}
