//! `augur calibrate`: measure this board and write its device profile (the work is
//! [`crate::calibrate::calibrate`]; this parses, draws the progress bar and prints the report).
use crate::calibrate::{self, Budget, CalibrateError, CalibrationReport, Event, Options};
use crate::profile::{Profile, Quality};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How long to spend measuring.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum BudgetArg {
    /// Under 3 minutes in all: enough for a usable profile.
    Quick,
    /// About 12 minutes.
    Standard,
    /// About 30 minutes.
    Thorough,
}

impl From<BudgetArg> for Budget {
    fn from(b: BudgetArg) -> Budget {
        match b {
            BudgetArg::Quick => Budget::Quick,
            BudgetArg::Standard => Budget::Standard,
            BudgetArg::Thorough => Budget::Thorough,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to write the profile (default: `profile` of config/augur.toml).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How long to spend measuring.
    #[arg(long, value_enum, default_value = "standard")]
    pub budget: BudgetArg,
    /// Threads the runtime uses while measuring the regressors (other counts are predicted through
    /// the thread scaling measured after them).
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
    /// Only fit the regressors and composition factors of the existing profile at --out again,
    /// from the journal of measurements beside it and with the profile's own cache curve (no
    /// measuring).
    #[arg(long, conflicts_with_all = ["only_load_fit", "only_threads"])]
    pub only_regressors: bool,
    /// Skip timing kernels at every thread count (the profile then predicts its own count only).
    #[arg(long)]
    pub no_thread_fit: bool,
    /// Only measure and fit the thread scaling of the existing profile at --out (about a fifth of
    /// the budget's time; no kernel regressors measured).
    #[arg(long, conflicts_with_all = ["no_thread_fit", "only_load_fit"])]
    pub only_threads: bool,
    /// Write a poor calibration over an existing profile (by default it is written aside).
    #[arg(long)]
    pub accept_poor: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let out = match args.out {
        Some(p) => p,
        None => super::default_profile_path()?,
    };
    let bar = progress_bar(args.quiet);
    let on_event = |e: &Event| show(&bar, e);
    if args.only_load_fit {
        let p = calibrate::refit_slowdown(&out, args.seed, &on_event)?;
        bar.finish_and_clear();
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
    if args.only_regressors {
        let p = calibrate::refit_regressors(&out, args.seed, &on_event)?;
        bar.finish_and_clear();
        let q = p.quality.unwrap_or_default();
        eprintln!(
            "refitted the regressors of {} ({} kinds; whole held-out networks err by {})",
            out.display(),
            p.regressors.len(),
            q.composition_error
                .map_or_else(|| "—".to_string(), |e| format!("{:.1} %", e * 100.0))
        );
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        // Ctrl-C stops after the measurement in flight; everything measured is already journalled.
        let stop = stop.clone();
        let _ = ctrlc_hook(move || stop.store(true, Ordering::Relaxed));
    }
    let opts = Options {
        out,
        backend: args.backend,
        budget: args.budget.into(),
        budget_seconds: args.budget_seconds,
        threads: args.threads,
        seed: args.seed,
        fit_slowdown: !args.no_load_fit,
        fit_threads: !args.no_thread_fit,
        accept_poor: args.accept_poor,
        stop,
    };
    if args.only_threads {
        let p = calibrate::refit_threads(&opts, &on_event)?;
        bar.finish_and_clear();
        match &p.thread_scaling {
            Some(s) => eprintln!(
                "fitted the thread scaling of {} (thread counts {:?})",
                opts.out.display(),
                s.counts
            ),
            None => anyhow::bail!(
                "{}: the thread scaling could not be fitted; the profile was left as it was",
                opts.out.display()
            ),
        }
        return Ok(());
    }
    let result = calibrate::calibrate(&opts, &on_event);
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            print_report(&report);
            Ok(())
        }
        Err(CalibrateError::Poor {
            quality,
            kept,
            aside,
        }) => {
            print_quality(&quality);
            anyhow::bail!(
                "the calibration came out poor; the profile at {} was kept, the new one is at {} (`--accept-poor` writes it over). {}",
                kept.display(),
                aside.display(),
                calibrate::REMEDY
            )
        }
        Err(e) => Err(e.into()),
    }
}

fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(1)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} calibrating [{elapsed_precise}] {wide_bar} ETA {eta} {prefix}: {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// A line above the bar; on standard error as it is where there is no bar (`--quiet`, or standard
/// error not a terminal), which indicatif's own `println` would drop.
fn say(bar: &ProgressBar, text: &str) {
    if bar.is_hidden() {
        eprintln!("{text}");
    } else {
        bar.println(text);
    }
}

/// One event on the bar: measuring moves it, phases name it, notes print above it.
fn show(bar: &ProgressBar, e: &Event) {
    match e {
        Event::Resumed {
            measurements,
            journal,
        } => say(
            bar,
            &format!(
                "resuming: {measurements} measurements already in {}",
                journal.display()
            ),
        ),
        Event::Phase(p) => bar.set_prefix(p.name()),
        Event::Measuring {
            elapsed,
            budget,
            measurements,
            networks,
            repeats,
        } => {
            bar.set_length(budget.as_secs().max(1));
            bar.set_position(elapsed.as_secs().min(budget.as_secs()));
            bar.set_message(format!(
                "{measurements} measured ({networks} networks, {repeats} repeated)"
            ));
        }
        Event::Note(text) => say(bar, text),
    }
}

fn print_report(r: &CalibrationReport) {
    let size = std::fs::metadata(&r.out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wrote {} ({} measurements, {} regressors, {:.1} MB) in {:.0} s; journal: {}",
        r.out.display(),
        r.profile.measurements.len(),
        r.profile.regressors.len(),
        size as f64 / 1e6,
        r.elapsed.as_secs_f64(),
        r.journal.display()
    );
    print_regressors(&r.profile);
    if let Some(q) = &r.profile.quality {
        print_quality(q);
    }
}

fn print_regressors(p: &Profile) {
    for (kind, r) in &p.regressors {
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
}

fn print_quality(q: &Quality) {
    let n = &q.noise;
    eprintln!(
        "  composition: whole held-out networks err by {}",
        q.composition_error
            .map_or("n/a".to_string(), |e| format!("{:.1} %", e * 100.0))
    );
    eprintln!(
        "  noise: reference workload {:.2} ms a pass (median of {}), spread {:.1} %, {} regime switches in {} windows; {} measurements repeated, {} kept spoiled",
        n.reference_median_ms,
        n.reference_readings,
        n.reference_spread * 100.0,
        n.regime_switches,
        n.windows,
        n.repeats,
        n.kept_spoiled
    );
    if let Some(line) = q.busy() {
        eprintln!("\nNOTE: {line}.");
    }
    if q.is_poor() {
        eprintln!("\nWARNING: this calibration is POOR:");
        for p in &q.problems {
            eprintln!("  - {p}");
        }
        eprintln!("{}\n", calibrate::REMEDY);
    }
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
