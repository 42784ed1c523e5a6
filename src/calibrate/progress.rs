//! What calibration tells whoever watches it: typed events through a callback, which the command
//! line turns into a progress bar and a daemon or a test may log or ignore.
use std::path::PathBuf;
use std::time::Duration;

/// The phases of a calibration, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Which op pairs the runtime fuses.
    Fusion,
    /// Kernels sampled from the prior, timed alone.
    Kernels,
    /// More kernels around those the fit errs on.
    Refine,
    /// Kernels timed inside synthetic networks.
    Networks,
    /// Regressors, roofline and composition factors.
    Fit,
    /// The slowdown model under controlled background load.
    LoadFit,
    /// The board's power per kernel kind, where it has an energy counter.
    Power,
    /// Kernels and networks timed at every thread count.
    Threads,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Fusion => "fusion rules",
            Phase::Kernels => "kernels",
            Phase::Refine => "refining",
            Phase::Networks => "in networks",
            Phase::Fit => "fitting",
            Phase::LoadFit => "load fit",
            Phase::Power => "power",
            Phase::Threads => "thread scaling",
        }
    }
}

/// One event of a calibration.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A journal from an earlier, interrupted run is reused.
    Resumed {
        measurements: usize,
        journal: PathBuf,
    },
    /// A phase starts.
    Phase(Phase),
    /// Measuring goes on: time spent of the budget, measurements in the journal.
    Measuring {
        elapsed: Duration,
        budget: Duration,
        measurements: usize,
        networks: usize,
        repeats: usize,
    },
    /// A finding worth a line (fusion rules that differ, a fit's figures, a warning).
    Note(String),
}

/// Receives the events; `&|_| {}` ignores them.
pub type Progress<'a> = &'a dyn Fn(&Event);

/// Logs a note through `tracing` and hands it to the watcher.
pub(crate) fn note(progress: Progress, text: String) {
    tracing::info!("{text}");
    progress(&Event::Note(text));
}
