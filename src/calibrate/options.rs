//! What a calibration is asked to do: where the profile goes, with which backend, for how long.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// How long calibration may take; measuring stops when the time is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// Under 3 minutes in all: enough for a usable profile.
    Quick,
    /// About 12 minutes.
    Standard,
    /// About 30 minutes.
    Thorough,
}

impl Budget {
    /// Seconds of measuring (the fits and the load fit come on top).
    pub fn seconds(self) -> f64 {
        match self {
            Budget::Quick => 100.0,
            Budget::Standard => 720.0,
            Budget::Thorough => 1800.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Budget::Quick => "quick",
            Budget::Standard => "standard",
            Budget::Thorough => "thorough",
        }
    }
}

/// One calibration's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the profile is written; its journal sits beside it ([`journal_path`]).
    pub out: PathBuf,
    /// Measurement backend spec: `tract` or `cmd:<template>` (see `runtime::backend_from_spec`).
    pub backend: String,
    pub budget: Budget,
    /// Overrides the budget's time (tests, and boards where even `quick` is too long).
    pub budget_seconds: Option<f64>,
    /// Threads the runtime uses while measuring the regressors (other counts are predicted through
    /// the thread scaling).
    pub threads: usize,
    /// Seed of the sampling plan (a resumed run must use the same one).
    pub seed: u64,
    /// Fit the slowdown model under controlled background load after the kernels.
    pub fit_slowdown: bool,
    /// Time kernels at every thread count and fit the thread scaling (on boards of two cores or
    /// more).
    pub fit_threads: bool,
    /// Write a poor calibration over an existing profile anyway (else it is written aside).
    pub accept_poor: bool,
    /// Set to stop early (Ctrl-C): what was measured stays in the journal.
    pub stop: Arc<AtomicBool>,
}

impl Options {
    /// Defaults for everything but the output path: tract, the quick budget, one thread.
    pub fn new(out: impl Into<PathBuf>) -> Options {
        Options {
            out: out.into(),
            backend: "tract".into(),
            budget: Budget::Quick,
            budget_seconds: None,
            threads: 1,
            seed: 1,
            fit_slowdown: true,
            fit_threads: true,
            accept_poor: false,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The time measuring may take.
    pub fn budget_duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(
            self.budget_seconds
                .unwrap_or(self.budget.seconds())
                .max(1.0),
        )
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The journal that sits beside a profile.
pub fn journal_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".measurements.jsonl");
    PathBuf::from(s)
}

/// Where a poor calibration goes when a profile is already at `out`.
pub fn aside_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".poor");
    PathBuf::from(s)
}
