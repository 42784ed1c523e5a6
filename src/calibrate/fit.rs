//! Fitting on the journal: the measurements brought to the calibration's nominal speed, the
//! roofline constants, and one regressor per kernel kind (on kernels timed inside networks where a
//! kind has enough of them, else on kernels timed alone).
use super::journal::{Entry, Window};
use super::prior::config_key;
use super::speed;
use super::target::fit_target;
use crate::kernels::{Kernel, KernelKind};
use crate::profile::{Measurement, Regressor, Roofline};
use std::collections::BTreeMap;

/// In-network measurements a kind needs before its regressor is fitted on them instead of on
/// kernels timed alone.
const MIN_IN_NETWORK: usize = 100;

/// Most measurements a profile carries (about 0.6 KB each, keeping it well under 10 MB); the journal
/// beside it keeps them all, and the regressors are fitted on all of them.
pub const MAX_PROFILE_MEASUREMENTS: usize = 8000;

/// The journal's measurements at the nominal speed, in a fixed order (the same journal always fits
/// the same regressors, whatever order its lines were taken in).
#[derive(Debug, Default)]
pub struct Collected {
    pub alone: Vec<Measurement>,
    /// (network, kernel index, measurement).
    pub in_network: Vec<(usize, usize, Measurement)>,
    /// Reference readings in the order taken.
    pub readings: Vec<f64>,
    /// The windows of every kernel and network measurement.
    pub windows: Vec<Window>,
    /// The nominal reading the measurements were brought to (0: none, left as measured).
    pub nominal: f64,
    /// How far each kind followed the reading ([`speed::following`]); the measurements were brought
    /// to the nominal speed by it.
    pub following: BTreeMap<KernelKind, f64>,
    /// The same for the networks as a whole (0: none).
    pub following_mix: f64,
}

pub fn collect(entries: &[Entry]) -> Collected {
    let mut refs: Vec<(usize, f64)> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Reference { n, cpu_ms } => Some((*n, *cpu_ms)),
            _ => None,
        })
        .collect();
    refs.sort_by_key(|r| r.0);
    let readings: Vec<f64> = refs.into_iter().map(|r| r.1).collect();
    let nominal = speed::nominal(&readings);
    let timed: Vec<(KernelKind, String, f64, &Window)> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Kernel {
                measurement,
                window,
                ..
            }
            | Entry::InNetwork {
                measurement,
                window,
                ..
            } => Some((
                measurement.kernel.kind,
                config_key(&measurement.kernel),
                measurement.median_ms,
                window,
            )),
            Entry::Reference { .. } => None,
        })
        .collect();
    let following = speed::following(&timed, nominal);
    let exponent = |k: KernelKind| following.get(&k).copied().unwrap_or(1.0);
    let mut out = Collected {
        readings,
        nominal,
        ..Collected::default()
    };
    for e in entries {
        match e {
            Entry::Kernel {
                measurement,
                window,
                ..
            } => {
                out.alone.push(speed::normalise_following(
                    measurement,
                    window,
                    nominal,
                    exponent(measurement.kernel.kind),
                ));
                out.windows.push(*window);
            }
            Entry::InNetwork {
                network,
                index,
                measurement,
                window,
            } => {
                out.in_network.push((
                    *network,
                    *index,
                    speed::normalise_following(
                        measurement,
                        window,
                        nominal,
                        exponent(measurement.kernel.kind),
                    ),
                ));
                out.windows.push(*window);
            }
            Entry::Reference { .. } => {}
        }
    }
    // The networks' kinds weighted by their time: what a whole network follows (the kernels timed
    // alone where a backend could not time networks per node).
    let (mut num, mut den) = (0.0, 0.0);
    let weighed: Vec<&Measurement> = if out.in_network.is_empty() {
        out.alone.iter().collect()
    } else {
        out.in_network.iter().map(|(_, _, m)| m).collect()
    };
    for m in weighed {
        num += m.median_ms * exponent(m.kernel.kind);
        den += m.median_ms;
    }
    out.following_mix = if den > 0.0 && !following.is_empty() {
        num / den
    } else {
        0.0
    };
    out.following = following;
    out.alone.sort_by_cached_key(|m| config_key(&m.kernel));
    out.in_network.sort_by_key(|(i, k, _)| (*i, *k));
    out
}

/// Roofline constants from measurements: the best compute rate of compute-bound kinds, the best
/// bandwidth of memory-bound ones, the smallest kernel time as the fixed cost.
pub fn roofline(ms: &[Measurement]) -> Roofline {
    let pct = |v: Vec<f64>, q: f64| crate::util::percentile(v.into_iter().filter(|x| *x > 0.0), q);
    let compute: Vec<f64> = ms
        .iter()
        .filter(|m| {
            matches!(
                m.kernel.kind,
                KernelKind::Conv | KernelKind::Pointwise | KernelKind::MatMul
            )
        })
        .map(|m| m.kernel.flops as f64 / (m.median_ms / 1e3))
        .collect();
    let memory: Vec<f64> = ms
        .iter()
        .filter(|m| {
            matches!(
                m.kernel.kind,
                KernelKind::Elementwise | KernelKind::Concat | KernelKind::DataMovement
            )
        })
        .map(|m| (m.kernel.input_bytes + m.kernel.output_bytes) as f64 / (m.median_ms / 1e3))
        .collect();
    let d = Roofline::default();
    let overhead =
        pct(ms.iter().map(|m| m.median_ms / 1e3).collect(), 0.0).unwrap_or(d.overhead_seconds);
    Roofline {
        flops_per_second: pct(compute, 0.95).unwrap_or(d.flops_per_second),
        bytes_per_second: pct(memory, 0.95).unwrap_or(d.bytes_per_second),
        overhead_seconds: (overhead * 0.5).min(50e-6),
    }
}

/// Fits one regressor per kind that has enough measurements.
pub fn per_kind(
    roofline: &Roofline,
    ms: &[Measurement],
    seed: u64,
) -> BTreeMap<KernelKind, Regressor> {
    let mut by_kind: BTreeMap<KernelKind, Vec<(Kernel, f64)>> = BTreeMap::new();
    for m in ms {
        by_kind
            .entry(m.kernel.kind)
            .or_default()
            .push((m.kernel.clone(), fit_target(m)));
    }
    by_kind
        .into_iter()
        .filter_map(|(k, data)| match Regressor::fit(roofline, &data, seed) {
            Ok(r) => Some((k, r)),
            Err(e) => {
                tracing::debug!(kind = k.name(), error = %e, "no regressor for this kind");
                None
            }
        })
        .collect()
}

/// The profile's regressors: kinds with enough in-network samples (`train`) learn from those, the
/// others from kernels timed alone.
pub fn regressors(
    roofline: &Roofline,
    alone: &[Measurement],
    train: &[Measurement],
    seed: u64,
) -> BTreeMap<KernelKind, Regressor> {
    let mut out: BTreeMap<KernelKind, Regressor> = per_kind(roofline, train, seed)
        .into_iter()
        .filter(|(_, r)| r.samples >= MIN_IN_NETWORK)
        .map(|(kind, r)| {
            (
                kind,
                Regressor {
                    in_network: true,
                    ..r
                },
            )
        })
        .collect();
    let rest: Vec<Measurement> = alone
        .iter()
        .filter(|m| !out.contains_key(&m.kernel.kind))
        .cloned()
        .collect();
    out.extend(per_kind(roofline, &rest, seed));
    out
}

/// A deterministic subset of at most `max` measurements, every kind keeping its share.
pub fn keep_for_profile(ms: Vec<Measurement>, max: usize) -> Vec<Measurement> {
    if ms.len() <= max {
        return ms;
    }
    let stride = ms.len().div_ceil(max);
    ms.into_iter()
        .enumerate()
        .filter(|(i, _)| i % stride == 0)
        .map(|(_, m)| m)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, ms: f64) -> Measurement {
        let mut k = Kernel::blank(name.into(), KernelKind::Pointwise);
        k.cout = (ms * 100.0) as usize;
        Measurement::new(k, ms, ms, ms)
    }

    #[test]
    fn collect_normalises_each_measurement_by_its_window() {
        let w = |r: f64| Window {
            reference_ms: Some(r),
            spoiled: false,
            attempts: 1,
        };
        let entries = vec![
            Entry::Reference { n: 2, cpu_ms: 30.0 },
            Entry::Reference { n: 1, cpu_ms: 20.0 },
            Entry::Reference { n: 3, cpu_ms: 20.0 },
            Entry::Kernel {
                config: "slow".into(),
                measurement: m("slow", 3.0),
                window: w(30.0),
            },
            Entry::InNetwork {
                network: 2,
                index: 1,
                measurement: m("b", 1.0),
                window: w(20.0),
            },
            Entry::InNetwork {
                network: 1,
                index: 0,
                measurement: m("a", 1.5),
                window: w(30.0),
            },
        ];
        let c = collect(&entries);
        assert_eq!(c.readings, vec![20.0, 30.0, 20.0]);
        assert_eq!(c.nominal, 20.0);
        assert_eq!(c.windows.len(), 3);
        assert!((c.alone[0].median_ms - 2.0).abs() < 1e-12);
        assert!((c.alone[0].speed - 1.5).abs() < 1e-12);
        let order: Vec<(usize, usize)> = c.in_network.iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(order, vec![(1, 0), (2, 1)]);
        assert!((c.in_network[0].2.median_ms - 1.0).abs() < 1e-12);
        assert_eq!(c.in_network[1].2.median_ms, 1.0);
    }

    #[test]
    fn keep_for_profile_thins_evenly() {
        let ms: Vec<Measurement> = (0..10).map(|i| m("x", i as f64 + 1.0)).collect();
        assert_eq!(keep_for_profile(ms.clone(), 20).len(), 10);
        assert_eq!(keep_for_profile(ms, 5).len(), 5);
    }
}
