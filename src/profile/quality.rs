//! How good a calibration came out, as its profile stores it: the held-out errors of its fits and
//! the noise the board made while it was measured, with the problems that made it poor.
use crate::kernels::KernelKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The quality report of a calibration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Per kind: median relative error of its regressor on held-out measurements (a fraction).
    pub held_out_error: BTreeMap<KernelKind, f64>,
    /// Median relative error of whole held-out networks, kernels summed with the composition
    /// factors (a fraction); None where no network was held out.
    pub composition_error: Option<f64>,
    pub noise: Noise,
    /// Why the calibration is poor, one line each with the figure; empty when it is good.
    pub problems: Vec<String>,
}

/// The speed spread (p90/p10 − 1 of the reference workload) above which the board counts as busy
/// while it was measured: a quiet 2-vCPU VM stays within 2–4 %.
const BUSY_SPREAD: f64 = 0.06;

/// Share of measurement windows with a regime switch above which the board counts as busy.
const BUSY_SWITCHES: f64 = 0.02;

impl Quality {
    pub fn is_poor(&self) -> bool {
        !self.problems.is_empty()
    }

    /// Whether the board was busy while it was measured (short of poor): the measurements were
    /// normalised by the speed of their moment and the spoiled ones repeated, but a scheduler
    /// should know the profile came from a moving board. One line with the figures, or None.
    pub fn busy(&self) -> Option<String> {
        let n = &self.noise;
        let switches = if n.windows > 0 {
            n.regime_switches as f64 / n.windows as f64
        } else {
            0.0
        };
        (n.reference_spread > BUSY_SPREAD || switches > BUSY_SWITCHES).then(|| {
            format!(
                "the board was busy while measuring: its speed moved by {:.0} % ({} regime switches in {} windows); measurements were normalised to one speed and {} repeated",
                n.reference_spread * 100.0,
                n.regime_switches,
                n.windows,
                n.repeats
            )
        })
    }
}

/// The board's noise while it was measured, from the reference workload timed between measurements.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    /// Readings of the reference workload.
    pub reference_readings: usize,
    /// Their median, CPU milliseconds a pass: the speed the profile describes.
    pub reference_median_ms: f64,
    /// Their 90th over their 10th percentile, minus 1: how far the board's speed moved.
    pub reference_spread: f64,
    /// Measurement windows (the measurements between two readings).
    pub windows: usize,
    /// Windows whose readings before and after disagreed: the speed switched while measuring.
    pub regime_switches: usize,
    /// Measurements taken again because a switch or a wide spread of their runs spoiled them.
    pub repeats: usize,
    /// Measurements kept although still spoiled after their repeats.
    pub kept_spoiled: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moving_board_is_called_busy_and_a_quiet_one_is_not() {
        let mut q = Quality::default();
        q.noise.windows = 300;
        q.noise.reference_spread = 0.03;
        q.noise.regime_switches = 2;
        assert_eq!(q.busy(), None);
        q.noise.reference_spread = 0.10;
        assert!(q.busy().is_some_and(|l| l.contains("10 %")));
        q.noise.reference_spread = 0.03;
        q.noise.regime_switches = 19;
        assert!(q.busy().is_some());
    }
}
