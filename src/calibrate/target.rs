//! What a regressor learns from a timing: which of its figures stands for the board's own speed.
use crate::profile::Measurement;

/// The figure a regressor learns from one measurement: its median, unless the runs spread so much
/// (another job took the core for part of them) that the 10th percentile is the better estimate of the
/// board's own speed.
pub fn fit_target(m: &Measurement) -> f64 {
    if m.p90_ms - m.p10_ms > 0.2 * m.median_ms {
        m.p10_ms
    } else {
        m.median_ms
    }
}

/// [`fit_target`] for a whole-model timing.
pub fn fit_target_timing(t: &crate::runtime::Timing) -> f64 {
    if t.p90_ms - t.p10_ms > 0.2 * t.median_ms {
        t.p10_ms
    } else {
        t.median_ms
    }
}
