//! What a job of several threads gets now, beside what the profile expects of it: the reference
//! workload's parallel readings (`probe.reference_parallel_ratios`, wall time of a pass at N
//! threads over one at a single thread, taken back to back) over the same ratio the profile
//! predicts for the same networks on a quiet board.
//!
//! The one-thread reading follows the board's speed on one core; a job of several threads also
//! needs the others, and on a shared host they are not the board's alone (stolen by the
//! hypervisor, or shared with another tenant): two threads can run slower than one, which no
//! one-thread reading shows. The excess is followed as the one-thread speed is (as far as it has
//! persisted, [`super::slowdown::persistence`]) and its movement widens the band the same way.
use super::Predictor;
use super::slowdown::{persistence, step_spread};
use crate::sense::Snapshot;

/// Bounds of the excess: a reading beyond them is a broken reading, not a board.
const EXCESS: (f64, f64) = (0.5, 4.0);

/// The parallel term of one prediction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Parallel {
    /// Factor on every kernel's time (1: nothing known or one thread).
    pub factor: f64,
    /// How far it may move before the job runs: log, 90 % (0: nothing known).
    pub spread: f64,
}

impl Parallel {
    const NONE: Parallel = Parallel {
        factor: 1.0,
        spread: 0.0,
    };
}

impl Predictor {
    /// The parallel term for a job of `threads` in state `s`: none for one thread, for a profile
    /// that does not follow the board's speed live, or without readings and an expectation. For
    /// fewer threads than the reading's, a share of it in the log ((threads − 1) / (N − 1)).
    pub fn parallel(&self, s: &Snapshot, threads: usize) -> Parallel {
        let Some(n) = s.probe.reference_parallel_threads.filter(|n| *n >= 2) else {
            return Parallel::NONE;
        };
        if threads < 2 || !self.slowdown.speed_live {
            return Parallel::NONE;
        }
        let Some(expected) = self.expected_parallel_ratio(n) else {
            return Parallel::NONE;
        };
        // The reading is a wall time, so time-sharing with other work on the board is in it; the
        // CPU-share term counts that already.
        let shared = self.slowdown.cpu_factor(s, n) / self.slowdown.cpu_factor(s, 1);
        let excess: Vec<f64> = s
            .probe
            .reference_parallel_ratios
            .iter()
            .filter(|r| r.is_finite() && **r > 0.0)
            .map(|r| (r / expected / shared).clamp(EXCESS.0, EXCESS.1))
            .collect();
        let Some(e) = persistence(&excess, 1.0) else {
            return Parallel::NONE;
        };
        let Some(now) = crate::util::percentile(excess.iter().rev().take(3).copied(), 0.5) else {
            return Parallel::NONE;
        };
        let share = ((threads - 1) as f64 / (n - 1) as f64).min(1.0);
        Parallel {
            factor: now.powf(e * share),
            spread: step_spread(&excess, 1.0).unwrap_or(0.0) * share,
        }
    }

    /// The profile's quiet-board wall time of the reference networks at `threads` over that at
    /// one thread: as calibration measured it where it did, else as its thread fits predict it;
    /// None where neither is known. Worked out once per thread count.
    pub(super) fn expected_parallel_ratio(&self, threads: usize) -> Option<f64> {
        let profile = self.profile.as_ref()?;
        if let Some(r) = profile
            .thread_scaling
            .as_ref()
            .and_then(|s| s.reference_ratio.get(&threads))
            .filter(|r| r.is_finite() && **r > 0.0)
        {
            return Some(*r);
        }
        if let Some(r) = self
            .parallel_expected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&threads)
        {
            return *r;
        }
        let ratio = (|| {
            let graphs = crate::workload::reference::graphs().ok()?;
            let (mut one, mut many) = (0.0, 0.0);
            for g in &graphs {
                let d = crate::kernels::decompose(g, &profile.fusion).ok()?;
                let base = self.base(&d);
                let at = |t: usize| -> f64 {
                    let scale = self.thread_scale(&d, t);
                    base.kernels
                        .iter()
                        .enumerate()
                        .map(|(i, (ms, _))| {
                            ms * scale
                                .factors
                                .as_ref()
                                .and_then(|f| f.get(i).copied())
                                .unwrap_or(1.0)
                        })
                        .sum()
                };
                one += at(1);
                many += at(threads);
            }
            (one > 0.0 && many > 0.0 && many.is_finite()).then(|| many / one)
        })();
        self.parallel_expected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(threads, ratio);
        ratio
    }
}
