//! Measuring on a board whose speed moves: the reference workload is timed between the
//! measurements (a reading every [`EVERY`]), each measurement is divided by the board's speed in its
//! window (the readings before and after it, over the calibration's median reading), so the profile
//! describes the board at one speed, and a window whose readings disagree (the speed switched while
//! measuring) or whose runs spread wide is measured again.
use super::journal::Window;
use crate::profile::{Measurement, Noise};
use crate::workload::reference::ReferenceWorkload;
use std::time::Duration;

/// Time between two readings: shorter than the regimes seen on a shared host (seconds to tens of
/// seconds), long enough that the readings (150 ms of passes, then 3 of ~25 ms) cost about 15 % of
/// the time.
pub const EVERY: Duration = Duration::from_millis(1500);

/// Readings before and after a window that differ by more than this share: the speed switched.
const SWITCH: f64 = 0.10;

/// A kernel whose runs spread wider than this share of their median ((p90 − p10) / median) was
/// disturbed for part of them.
const WIDE: f64 = 0.5;

/// Most times one measurement is taken: the first and one repeat.
pub const ATTEMPTS: u32 = 2;

/// The speed of a window: the geometric mean of its readings, or the one there is.
pub fn window_ms(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    let ok = |x: Option<f64>| x.filter(|v| v.is_finite() && *v > 0.0);
    match (ok(before), ok(after)) {
        (Some(a), Some(b)) => Some((a * b).sqrt()),
        (a, b) => a.or(b),
    }
}

/// Whether the speed switched between two readings.
pub fn switched(before: Option<f64>, after: Option<f64>) -> bool {
    match (before, after) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => a.max(b) / a.min(b) - 1.0 > SWITCH,
        _ => false,
    }
}

/// Whether a measurement's own runs spread so wide that it was disturbed.
pub fn wide(m: &Measurement) -> bool {
    m.median_ms > 0.0 && (m.p90_ms - m.p10_ms) / m.median_ms > WIDE
}

/// The calibration's nominal reading, the speed its profile describes: the median reading (0 when
/// there is none).
pub fn nominal(readings: &[f64]) -> f64 {
    crate::util::percentile(readings.iter().copied().filter(|r| *r > 0.0), 0.5).unwrap_or(0.0)
}

/// A raw measurement brought to the nominal speed; unchanged where either reading is unknown.
pub fn normalise(raw: &Measurement, window: &Window, nominal: f64) -> Measurement {
    let speed = match window.reference_ms {
        Some(w) if w > 0.0 && nominal > 0.0 => w / nominal,
        _ => 1.0,
    };
    raw.clone().normalised(speed)
}

/// The noise a calibration saw, from its readings in the order taken and the windows of its
/// measurements.
pub fn noise(readings: &[f64], windows: &[Window]) -> Noise {
    let p = |q| crate::util::percentile(readings.iter().copied(), q);
    let spread = match (p(0.1), p(0.9)) {
        (Some(lo), Some(hi)) if lo > 0.0 => hi / lo - 1.0,
        _ => 0.0,
    };
    Noise {
        reference_readings: readings.len(),
        reference_median_ms: nominal(readings),
        reference_spread: spread,
        windows: readings.len().saturating_sub(1),
        regime_switches: readings
            .windows(2)
            .filter(|p| switched(Some(p[0]), Some(p[1])))
            .count(),
        repeats: windows
            .iter()
            .map(|w| w.attempts.saturating_sub(1) as usize)
            .sum(),
        kept_spoiled: windows.iter().filter(|w| w.spoiled).count(),
    }
}

/// Times the reference workload for calibration.
pub struct Reader {
    workload: Option<ReferenceWorkload>,
}

impl Reader {
    /// A workload that cannot be built leaves the profile without a reference (predictions then do
    /// without the speed term) and the measurements unnormalised.
    pub fn new() -> Reader {
        let workload = match ReferenceWorkload::new() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "reference workload unavailable; measurements are not normalised");
                None
            }
        };
        Reader { workload }
    }

    /// One reading: the median CPU ms of three passes, taken the way the live probe takes its own
    /// (after the same 150 ms of passes not counted). The profile's nominal reading is what every
    /// live reading is divided by, so the two must be taken alike: three bare passes right after
    /// a measurement read about 15 % slower than the probe's on the same board at the same speed
    /// (a calibration's first readings, after the workload's own warm-up, against the rest), and a
    /// profile so made took a quiet board for one 10–15 % faster than calibration and predicted
    /// low.
    pub fn read(&self) -> Option<f64> {
        self.workload.as_ref()?.median_cpu_ms(3).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{Kernel, KernelKind};

    fn m(median: f64, p10: f64, p90: f64) -> Measurement {
        Measurement::new(
            Kernel::blank("k".into(), KernelKind::Conv),
            median,
            p10,
            p90,
        )
    }

    #[test]
    fn a_measurement_taken_in_a_slow_regime_is_brought_to_the_nominal_speed() {
        // The calibration's readings: mostly 20 ms a pass, one slow stretch at 30 ms.
        let readings = [20.0, 20.5, 19.5, 30.0, 30.0, 20.0, 20.0];
        let nom = nominal(&readings);
        assert_eq!(nom, 20.0);
        // A kernel timed at 3 ms during the slow stretch is a 2 ms kernel at the nominal speed.
        let w = Window {
            reference_ms: window_ms(Some(30.0), Some(30.0)),
            spoiled: false,
            attempts: 1,
        };
        let n = normalise(&m(3.0, 2.7, 3.3), &w, nom);
        assert!((n.median_ms - 2.0).abs() < 1e-12);
        assert!((n.p10_ms - 1.8).abs() < 1e-12 && (n.p90_ms - 2.2).abs() < 1e-12);
        assert!((n.speed - 1.5).abs() < 1e-12);
        // The same kernel in the fast regime stays as it was.
        let fast = Window {
            reference_ms: Some(20.0),
            ..w
        };
        assert_eq!(normalise(&m(2.0, 2.0, 2.0), &fast, nom).median_ms, 2.0);
        // Without readings nothing changes.
        let none = Window::default();
        assert_eq!(normalise(&m(3.0, 3.0, 3.0), &none, nom).median_ms, 3.0);
        assert_eq!(normalise(&m(3.0, 3.0, 3.0), &w, 0.0).median_ms, 3.0);
        assert_eq!(nominal(&[]), 0.0);
    }

    #[test]
    fn the_window_speed_is_the_geometric_mean_of_its_readings() {
        assert_eq!(window_ms(Some(20.0), Some(45.0)), Some(30.0));
        assert_eq!(window_ms(None, Some(45.0)), Some(45.0));
        assert_eq!(window_ms(Some(f64::NAN), Some(0.0)), None);
    }

    #[test]
    fn a_regime_switch_or_a_wide_spread_spoils_a_window() {
        assert!(!switched(Some(20.0), Some(21.0)));
        assert!(!switched(Some(21.0), Some(20.0)));
        assert!(switched(Some(20.0), Some(30.0)));
        assert!(switched(Some(30.0), Some(20.0)));
        assert!(!switched(None, Some(30.0)));
        assert!(!switched(Some(20.0), Some(0.0)));
        assert!(!wide(&m(2.0, 1.9, 2.3)));
        assert!(wide(&m(2.0, 1.9, 3.2)));
        assert!(!wide(&m(0.0, 0.0, 1.0)));
    }

    #[test]
    fn noise_counts_spread_switches_and_repeats() {
        let mut readings: Vec<f64> = (0..10).map(|i| if i < 5 { 20.0 } else { 30.0 }).collect();
        readings[2] = 25.0;
        let w = |attempts, spoiled| Window {
            reference_ms: Some(20.0),
            spoiled,
            attempts,
        };
        let n = noise(&readings, &[w(1, false), w(2, false), w(2, true)]);
        assert_eq!(n.reference_readings, 10);
        assert_eq!(n.windows, 9);
        // 20 → 25 → 20 → … → 30: three switches.
        assert_eq!(n.regime_switches, 3);
        assert_eq!(n.repeats, 2);
        assert_eq!(n.kept_spoiled, 1);
        assert!((n.reference_spread - 0.5).abs() < 1e-12);
        assert_eq!(noise(&[], &[]).reference_spread, 0.0);
    }
}
