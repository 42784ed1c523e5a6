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

impl Quality {
    pub fn is_poor(&self) -> bool {
        !self.problems.is_empty()
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
