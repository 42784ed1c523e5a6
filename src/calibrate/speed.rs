//! Measuring on a board whose speed moves: the reference workload is timed between the
//! measurements (a reading every [`EVERY`]), each measurement is divided by the board's speed in its
//! window (the readings before and after it, over the calibration's median reading, to the power its
//! kind follows the readings: [`following`]), so the profile describes the board at one speed, and a
//! window whose readings disagree (the speed switched while measuring) or whose runs spread wide is
//! measured again.
use super::journal::Window;
use crate::kernels::KernelKind;
use crate::profile::{Measurement, Noise};
use crate::workload::reference::ReferenceWorkload;
use std::collections::BTreeMap;
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

/// A raw measurement brought to the nominal speed, for a kind whose time follows the reading's ratio
/// to the power `exponent` ([`following`]; 1: fully); unchanged where either reading is unknown.
pub fn normalise_following(
    raw: &Measurement,
    window: &Window,
    nominal: f64,
    exponent: f64,
) -> Measurement {
    let speed = match window.reference_ms {
        Some(w) if w > 0.0 && nominal > 0.0 => (w / nominal).powf(exponent),
        _ => 1.0,
    };
    raw.clone().normalised(speed)
}

/// Pairs of timings a kind needs before its own exponent replaces the full one.
const MIN_FOLLOWING_PAIRS: usize = 50;

/// How far each kind's time follows the reference reading: the slope of a measurement's log time on
/// its window's log reading, within each configuration timed in several windows (so a
/// configuration's size never enters), over all of a kind's configurations weighted by their time;
/// clamped to [0, 1].
/// The reference workload is a mix: a kind bound by arithmetic slows with the spells that slow the
/// mix's arithmetic, one bound by memory traffic may not slow at all, and dividing every kind by
/// the whole reading biases both. A kind with fewer than [`MIN_FOLLOWING_PAIRS`] timings in
/// repeated configurations gets no entry (it follows the reading fully). Spoiled windows are left
/// out: their reading is not the one their kernel ran at.
pub fn following(
    samples: &[(KernelKind, String, f64, &Window)],
    nominal: f64,
) -> BTreeMap<KernelKind, f64> {
    let mut groups: BTreeMap<(KernelKind, &str), Vec<(f64, f64)>> = BTreeMap::new();
    for (kind, key, ms, w) in samples {
        let Some(r) = w.reference_ms else { continue };
        if w.spoiled || *ms <= 0.0 || r <= 0.0 || nominal <= 0.0 {
            continue;
        }
        groups
            .entry((*kind, key.as_str()))
            .or_default()
            .push(((r / nominal).ln(), ms.ln()));
    }
    let mut sums: BTreeMap<KernelKind, (f64, f64, usize)> = BTreeMap::new();
    for ((kind, _), v) in groups {
        if v.len() < 2 {
            continue;
        }
        let n = v.len() as f64;
        let (mx, my) = (
            v.iter().map(|p| p.0).sum::<f64>() / n,
            v.iter().map(|p| p.1).sum::<f64>() / n,
        );
        // Weighted by the configuration's time: what a prediction sums is time, and the many
        // microsecond kernels (whose fixed costs follow the reading as the mix's do) would
        // otherwise set the slope of a kind whose time is in its large ones.
        let w = v.iter().map(|p| p.1.exp()).sum::<f64>() / n;
        let e = sums.entry(kind).or_default();
        for (x, y) in v {
            e.0 += w * (x - mx) * (x - mx);
            e.1 += w * (x - mx) * (y - my);
            e.2 += 1;
        }
    }
    sums.into_iter()
        .filter(|(_, (sxx, _, n))| *n >= MIN_FOLLOWING_PAIRS && *sxx > 0.0)
        .map(|(kind, (sxx, sxy, _))| (kind, (sxy / sxx).clamp(0.0, 1.0)))
        .collect()
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
        let n = normalise_following(&m(3.0, 2.7, 3.3), &w, nom, 1.0);
        assert!((n.median_ms - 2.0).abs() < 1e-12);
        assert!((n.p10_ms - 1.8).abs() < 1e-12 && (n.p90_ms - 2.2).abs() < 1e-12);
        assert!((n.speed - 1.5).abs() < 1e-12);
        // The same kernel in the fast regime stays as it was.
        let fast = Window {
            reference_ms: Some(20.0),
            ..w
        };
        assert_eq!(
            normalise_following(&m(2.0, 2.0, 2.0), &fast, nom, 1.0).median_ms,
            2.0
        );
        // Without readings nothing changes.
        let none = Window::default();
        assert_eq!(
            normalise_following(&m(3.0, 3.0, 3.0), &none, nom, 1.0).median_ms,
            3.0
        );
        assert_eq!(
            normalise_following(&m(3.0, 3.0, 3.0), &w, 0.0, 1.0).median_ms,
            3.0
        );
        assert_eq!(nominal(&[]), 0.0);
    }

    #[test]
    fn each_kind_follows_the_reading_by_its_own_slope_within_its_configurations() {
        let nom = 20.0;
        let win = |r: f64, spoiled: bool| Window {
            reference_ms: Some(r),
            spoiled,
            attempts: 1,
        };
        let (slow, fast, spoiled) = (win(30.0, false), win(16.0, false), win(40.0, true));
        let mut samples = Vec::new();
        for c in 0..60 {
            // Configurations of very different sizes: only the change within each counts.
            let size = 0.01 * (1.0 + c as f64);
            for w in [&slow, &fast] {
                let ratio = w.reference_ms.unwrap_or(nom) / nom;
                // Pointwise work slows with the reading fully (its slope, 1.2, is clamped to 1);
                // depthwise work by a quarter of it.
                samples.push((
                    KernelKind::Pointwise,
                    format!("pw{c}"),
                    size * ratio.powf(1.2),
                    w,
                ));
                samples.push((
                    KernelKind::Depthwise,
                    format!("dw{c}"),
                    size * ratio.powf(0.25),
                    w,
                ));
            }
            // A spoiled window's time is not the one its reading says: left out.
            samples.push((
                KernelKind::Depthwise,
                format!("dw{c}"),
                size * 9.0,
                &spoiled,
            ));
        }
        // Too few repeated configurations to say: no entry, the kind follows fully.
        for c in 0..10 {
            samples.push((KernelKind::Conv, format!("c{c}"), 1.0, &slow));
            samples.push((KernelKind::Conv, format!("c{c}"), 1.0, &fast));
        }
        let f = following(&samples, nom);
        assert_eq!(f.get(&KernelKind::Pointwise), Some(&1.0));
        let dw = f.get(&KernelKind::Depthwise).copied().unwrap_or(f64::NAN);
        assert!((dw - 0.25).abs() < 1e-9, "{dw}");
        assert!(!f.contains_key(&KernelKind::Conv));
        // Brought to the nominal speed by its own exponent: a 3 ms depthwise kernel timed at a
        // reading 1.5× the nominal one is 3 / 1.5^0.25 ms at it.
        let n = normalise_following(&m(3.0, 3.0, 3.0), &slow, nom, dw);
        assert!((n.median_ms - 3.0 / 1.5f64.powf(0.25)).abs() < 1e-9);
        assert!(following(&[], nom).is_empty());
        assert!(following(&samples, 0.0).is_empty());
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
