//! Watching the learner's own record: a learner whose corrected predictions have recently been
//! worse than the uncorrected ones, or that refuses everything it is shown, has gone wrong, and
//! is reset rather than trusted forever.
use serde::{Deserialize, Serialize};

/// Weight of one observation in the recent errors (a memory of about 20 observations).
const ALPHA: f64 = 0.05;
/// Observations since the last reset before the record is judged.
const MIN_SEEN: u64 = 30;
/// The corrected error may exceed the uncorrected one by this factor, plus [`SLACK`], before the
/// learner is judged wrong (noise makes the two differ a little either way).
const WORSE: f64 = 1.5;
const SLACK: f64 = 0.05;
/// Consecutive refusals (of every model) after which the learner, not the board, is suspect.
const MAX_REFUSED_RUN: u64 = 64;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Recent mean |ln(observed / corrected prediction)|.
    pub corrected: f64,
    /// Recent mean |ln(observed / uncorrected prediction)|.
    pub base: f64,
    /// Observations judged since the last reset.
    pub seen: u64,
    /// Observations refused in a row.
    pub refused_run: u64,
}

impl Health {
    /// Records one usable observation: `y` its log-ratio to the uncorrected prediction, `c` the
    /// learner's log-correction at the time, `refused` whether it was turned away.
    pub fn record(&mut self, y: f64, c: f64, refused: bool) {
        let a = if self.seen == 0 { 1.0 } else { ALPHA };
        self.corrected += a * ((y - c).abs() - self.corrected);
        self.base += a * (y.abs() - self.base);
        self.seen += 1;
        self.refused_run = if refused { self.refused_run + 1 } else { 0 };
    }

    /// Why the learner should be reset now, if it should.
    pub fn verdict(&self) -> Option<String> {
        if self.refused_run >= MAX_REFUSED_RUN {
            return Some(format!(
                "it refused the last {} observations",
                self.refused_run
            ));
        }
        if self.seen >= MIN_SEEN && self.corrected > WORSE * self.base + SLACK {
            return Some(format!(
                "its corrected predictions were recently off by {:.1} % (log-ratio), the uncorrected ones by {:.1} %",
                self.corrected * 100.0,
                self.base * 100.0
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_correction_that_hurts_is_found_and_one_that_helps_is_not() {
        let mut h = Health::default();
        for _ in 0..40 {
            h.record(-0.1, -0.1, false);
        }
        assert_eq!(h.verdict(), None);
        let mut h = Health::default();
        for _ in 0..40 {
            h.record(-0.1, -2.9, false);
        }
        assert!(h.verdict().is_some());
        let mut h = Health::default();
        for _ in 0..MAX_REFUSED_RUN {
            h.record(0.0, 0.0, true);
        }
        assert!(h.verdict().is_some());
    }
}
