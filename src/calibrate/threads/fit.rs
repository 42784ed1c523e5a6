//! The thread-scaling fit: per kernel kind a parallel efficiency linear in the log of the
//! kernel's work, fitted on (kernel, count) speed-ups by least squares, refitted without the
//! timings it misses badly, and checked on held-out networks; then per kind boosted trees over the
//! kernel's features, kept where they predict the held-out networks better than the lines.
use crate::kernels::{KernelKind, N_FEATURES};
use crate::profile::threads::{Efficiency, EfficiencyTrees, ThreadScaling, speedup};
use std::collections::BTreeMap;

/// Samples a kind needs for a fit of its own (else it takes the pooled fit).
const MIN_KIND: usize = 8;
/// Samples the pooled fit needs (else the profile gets no thread scaling).
const MIN_POOLED: usize = 4;
/// Samples a kind needs for trees of its own (else it keeps its line).
const MIN_TREES: usize = 40;
/// Seed of the trees' fit (the fit is deterministic for the same samples).
const TREE_SEED: u64 = 0x7468_7265_6573;

/// Kernels faster than this at one thread are left out: timer and dispatch noise, not scaling.
const MIN_MS: f64 = 0.003;

/// One kernel timed at one thread count beside its one-thread timing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub kind: KernelKind,
    pub log_work: f64,
    pub threads: usize,
    /// Time at one thread over time at `threads`.
    pub speedup: f64,
    /// Milliseconds at one thread: the kernel's weight where the fit follows the time.
    pub ms: f64,
    /// The kernel's features ([`crate::kernels::features`]), what the trees split on.
    pub features: [f64; N_FEATURES],
}

/// One kernel of a network: its kind, [`log_work`](crate::profile::threads::log_work), features
/// and time at each count (in `counts` order).
#[derive(Clone, Debug, PartialEq)]
pub struct Timed {
    pub kind: KernelKind,
    pub log_work: f64,
    pub features: [f64; N_FEATURES],
    pub ms: Vec<f64>,
}

/// A held-out network.
#[derive(Clone, Debug, Default)]
pub struct Check {
    pub kernels: Vec<Timed>,
}

/// The samples of one kernel timed at `counts` (the first of which is one thread).
pub(super) fn pairs(
    kind: KernelKind,
    log_work: f64,
    features: [f64; N_FEATURES],
    counts: &[usize],
    ms: &[f64],
) -> Vec<Sample> {
    let Some(&t1) = ms.first() else {
        return Vec::new();
    };
    if counts.first() != Some(&1) || !(t1 >= MIN_MS && t1.is_finite()) {
        return Vec::new();
    }
    counts
        .iter()
        .zip(ms)
        .skip(1)
        .filter(|(_, t)| t.is_finite() && **t > 0.0)
        .map(|(&threads, &t)| Sample {
            kind,
            log_work,
            threads,
            speedup: t1 / t,
            ms: t1,
            features,
        })
        .collect()
}

/// How the samples of one fit count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Weighting {
    /// Each (kernel, count) pair alike.
    Even,
    /// Each by its time at one thread: most samples are small kernels that hardly scale, while a
    /// network's time is spent in its large ones.
    ByTime,
}

/// The thread scaling from the samples; None with too few. With held-out networks, the fit is made
/// twice — every sample alike, and each by its time — and the one that predicts the held-out
/// networks' speed-ups better is kept (both are checked on the same networks, none of which fed
/// either fit).
#[cfg(test)]
pub fn fit(counts: &[usize], samples: &[Sample], checks: &[Check]) -> Option<ThreadScaling> {
    fit_with(counts, samples, checks).map(|f| f.scaling)
}

/// The fit kept, how it weighted the samples, and the held-out error of the other (for the note).
pub(super) struct Fitted {
    pub(super) scaling: ThreadScaling,
    pub(super) weighting: Weighting,
    pub(super) other_error: Option<f64>,
    /// The held-out error of the lines alone, where trees were kept in their place.
    pub(super) lines_error: Option<f64>,
}

/// Mean over the thread counts of the held-out networks' speed-up error.
fn mean_network_error(s: &ThreadScaling) -> f64 {
    let n = s.network_error.len().max(1) as f64;
    s.network_error.values().sum::<f64>() / n
}

pub(super) fn fit_with(counts: &[usize], samples: &[Sample], checks: &[Check]) -> Option<Fitted> {
    let even = fit_weighted(counts, samples, checks, Weighting::Even)?;
    let by_time = (!checks.is_empty())
        .then(|| fit_weighted(counts, samples, checks, Weighting::ByTime))
        .flatten();
    let lines = match by_time {
        Some(t) if mean_network_error(&t) < mean_network_error(&even) => Fitted {
            other_error: Some(mean_network_error(&even)),
            scaling: t,
            weighting: Weighting::ByTime,
            lines_error: None,
        },
        Some(t) => Fitted {
            other_error: Some(mean_network_error(&t)),
            scaling: even,
            weighting: Weighting::Even,
            lines_error: None,
        },
        None => Fitted {
            scaling: even,
            weighting: Weighting::Even,
            other_error: None,
            lines_error: None,
        },
    };
    Some(with_trees(lines, samples, checks))
}

/// The lines with per-kind trees in their place, where there are held-out networks to judge by
/// and the trees predict them better (the mean over thread counts of the median miss); else the
/// lines as they were. Lines know only a kernel's kind and size; the trees also see its shape
/// (groups, channels, spatial size), which on a two-core VM moved kernels of the same size from
/// 1.0 to 1.4 times faster at two threads (grouped against dense convolutions).
fn with_trees(lines: Fitted, samples: &[Sample], checks: &[Check]) -> Fitted {
    if checks.is_empty() {
        return lines;
    }
    let trees = fit_trees(samples);
    if trees.is_empty() {
        return lines;
    }
    let mut scaling = ThreadScaling {
        trees,
        ..lines.scaling.clone()
    };
    scaling.network_error = network_errors(&scaling, checks);
    let before = mean_network_error(&lines.scaling);
    if mean_network_error(&scaling) < before {
        Fitted {
            scaling,
            lines_error: Some(before),
            ..lines
        }
    } else {
        lines
    }
}

/// Per kind with [`MIN_TREES`] samples: trees fitted to each sample's efficiency, (speed-up − 1) /
/// (count − 1), every sample alike (a kind's small kernels are where the shape matters most).
fn fit_trees(samples: &[Sample]) -> BTreeMap<KernelKind, EfficiencyTrees> {
    let mut by_kind: BTreeMap<KernelKind, Vec<&Sample>> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.threads >= 2 && s.speedup.is_finite() && s.speedup > 0.0)
    {
        by_kind.entry(s.kind).or_default().push(s);
    }
    by_kind
        .into_iter()
        .filter(|(_, v)| v.len() >= MIN_TREES)
        .filter_map(|(kind, v)| {
            let rows: Vec<[f64; N_FEATURES]> = v.iter().map(|s| s.features).collect();
            let y: Vec<f64> = v
                .iter()
                .map(|s| (s.speedup - 1.0) / (s.threads - 1) as f64)
                .collect();
            let w = vec![1.0; v.len()];
            let (base, trees) =
                crate::profile::regressor::train_weighted(&rows, &y, &w, TREE_SEED).ok()?;
            let mut t = EfficiencyTrees {
                base,
                trees,
                samples: v.len(),
                fast: Vec::new(),
            };
            t.compile();
            Some((kind, t))
        })
        .collect()
}

fn fit_weighted(
    counts: &[usize],
    samples: &[Sample],
    checks: &[Check],
    w: Weighting,
) -> Option<ThreadScaling> {
    let pooled = fit_efficiency(samples.iter(), w)?;
    if pooled.samples < MIN_POOLED {
        return None;
    }
    let mut by_kind: BTreeMap<KernelKind, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_kind.entry(s.kind).or_default().push(s);
    }
    let kinds = by_kind
        .into_iter()
        .filter(|(_, v)| v.len() >= MIN_KIND)
        .filter_map(|(k, v)| Some((k, fit_efficiency(v.into_iter(), w)?)))
        .collect();
    let mut scaling = ThreadScaling {
        counts: counts.to_vec(),
        kinds,
        pooled,
        network_error: BTreeMap::new(),
        reference_ratio: BTreeMap::new(),
        trees: BTreeMap::new(),
    };
    scaling.network_error = network_errors(&scaling, checks);
    Some(scaling)
}

/// Per count beyond one: the median relative error of the held-out networks' speed-up (the sum of
/// their kernels' times at one thread over that at the count) predicted from the fit.
fn network_errors(s: &ThreadScaling, checks: &[Check]) -> BTreeMap<usize, f64> {
    let mut out = BTreeMap::new();
    for (j, &n) in s.counts.iter().enumerate().skip(1) {
        let errors = checks.iter().filter_map(|c| {
            let t1: f64 = c
                .kernels
                .iter()
                .map(|k| k.ms.first().copied().unwrap_or(0.0))
                .sum();
            let tn: f64 = c
                .kernels
                .iter()
                .map(|k| k.ms.get(j).copied().unwrap_or(0.0))
                .sum();
            let predicted: f64 = c
                .kernels
                .iter()
                .map(|k| {
                    k.ms.first().copied().unwrap_or(0.0)
                        / speedup(s.efficiency_at(k.kind, k.log_work, &k.features), n)
                })
                .sum();
            (t1 > 0.0 && tn > 0.0 && predicted > 0.0)
                .then(|| ((t1 / predicted) / (t1 / tn) - 1.0).abs())
        });
        if let Some(e) = crate::util::percentile(errors, 0.5) {
            out.insert(n, e);
        }
    }
    out
}

/// Least squares of `speed-up − 1 = (n − 1)·(a + b·x)` over the samples, once on all and once more
/// without those it misses by more than three times the median miss (a kernel another job
/// disturbed at one of its counts). Written out rather than through a linear-algebra crate: the
/// system is two by two.
fn fit_efficiency<'a>(
    samples: impl Iterator<Item = &'a Sample>,
    w: Weighting,
) -> Option<Efficiency> {
    let data: Vec<&Sample> = samples
        .filter(|s| s.threads >= 2 && s.speedup.is_finite() && s.log_work.is_finite())
        .collect();
    if data.is_empty() {
        return None;
    }
    let first = solve(&data, w)?;
    let residual = |e: &Efficiency, s: &Sample| {
        (s.speedup - 1.0 - (s.threads - 1) as f64 * (e.intercept + e.slope * s.log_work)).abs()
    };
    let misses: Vec<f64> = data.iter().map(|s| residual(&first, s)).collect();
    let median = crate::util::percentile(misses.iter().copied(), 0.5).unwrap_or(0.0);
    let kept: Vec<&Sample> = data
        .iter()
        .zip(&misses)
        .filter(|(_, m)| **m <= 3.0 * median.max(0.02))
        .map(|(s, _)| *s)
        .collect();
    let mut e = if kept.len() >= 2 && kept.len() < data.len() {
        solve(&kept, w).unwrap_or(first)
    } else {
        first
    };
    e.samples = data.len();
    e.error = crate::util::percentile(
        data.iter().map(|s| {
            let fitted = speedup(e.at(s.log_work), s.threads);
            (fitted - s.speedup).abs() / s.speedup.max(1e-9)
        }),
        0.5,
    )
    .unwrap_or(0.0);
    Some(e)
}

/// The weighted normal equations; a constant efficiency where the sizes do not spread.
fn solve(data: &[&Sample], w: Weighting) -> Option<Efficiency> {
    let (mut suu, mut suux, mut suuxx, mut suy, mut suxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for s in data {
        let weight = match w {
            Weighting::Even => 1.0,
            Weighting::ByTime if s.ms.is_finite() && s.ms > 0.0 => s.ms,
            Weighting::ByTime => 0.0,
        };
        // Each term carries the weight once: sums of w·u², w·u²·x … (u² from the model's form).
        let u = (s.threads - 1) as f64 * weight.sqrt();
        let (x, y) = (s.log_work, s.speedup - 1.0);
        suu += u * u;
        suux += u * u * x;
        suuxx += u * u * x * x;
        suy += u * y * weight.sqrt();
        suxy += u * x * y * weight.sqrt();
    }
    if suu <= 0.0 {
        return None;
    }
    let det = suu * suuxx - suux * suux;
    // Sizes that hardly spread (a relative determinant near zero) leave the slope undetermined.
    let (intercept, slope) = if det > 1e-9 * suu * suuxx.max(1.0) {
        (
            (suy * suuxx - suux * suxy) / det,
            (suu * suxy - suux * suy) / det,
        )
    } else {
        (suy / suu, 0.0)
    };
    (intercept.is_finite() && slope.is_finite()).then_some(Efficiency {
        intercept,
        slope,
        samples: data.len(),
        error: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::threads::counts;
    use crate::profile::threads::MIN_EFFICIENCY;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Features of a kernel known only by its size (the lines' one variable).
    fn fx(x: f64) -> [f64; N_FEATURES] {
        let mut f = [0.0; N_FEATURES];
        f[1] = x;
        f
    }

    fn timed(kind: KernelKind, log_work: f64, ms: Vec<f64>) -> Timed {
        Timed {
            kind,
            log_work,
            features: fx(log_work),
            ms,
        }
    }

    /// Timings of kernels whose efficiency is `truth(x)`, with multiplicative noise.
    fn synthetic(
        kind: KernelKind,
        truth: impl Fn(f64) -> f64,
        counts: &[usize],
        n: usize,
        noise: f64,
        rng: &mut StdRng,
    ) -> Vec<Sample> {
        (0..n)
            .flat_map(|_| {
                let x: f64 = rng.random_range(3.0..9.0);
                let t1 = 10f64.powf(x - 6.0);
                let ms: Vec<f64> = counts
                    .iter()
                    .map(|&c| {
                        let jitter = 1.0 + rng.random_range(-noise..=noise);
                        t1 / speedup(truth(x), c) * jitter
                    })
                    .collect();
                pairs(kind, x, fx(x), counts, &ms)
            })
            .collect()
    }

    #[test]
    fn a_known_efficiency_is_recovered_from_noisy_timings() {
        let mut rng = StdRng::seed_from_u64(7);
        let counts = counts(4);
        assert_eq!(counts, vec![1, 2, 3, 4]);
        // Convolutions: 10 % at 10^3 FLOPs, rising 15 points a decade; elementwise: a flat 5 %.
        let conv = |x: f64| 0.1 + 0.15 * (x - 3.0);
        let mut samples = synthetic(KernelKind::Conv, conv, &counts, 200, 0.03, &mut rng);
        samples.extend(synthetic(
            KernelKind::Elementwise,
            |_| 0.05,
            &counts,
            100,
            0.03,
            &mut rng,
        ));
        // A few disturbed timings (another job took a core) must not drag the fit.
        for s in samples.iter_mut().step_by(40) {
            s.speedup *= 0.4;
        }
        let fit = fit(&counts, &samples, &[]).unwrap();
        let c = fit.kinds[&KernelKind::Conv];
        assert!((c.slope - 0.15).abs() < 0.02, "{c:?}");
        for x in [3.5, 5.0, 7.0] {
            assert!(
                (c.at(x) - conv(x)).abs() < 0.03,
                "at {x}: {} vs {}",
                c.at(x),
                conv(x)
            );
        }
        let e = fit.kinds[&KernelKind::Elementwise];
        assert!((e.at(4.0) - 0.05).abs() < 0.03, "{e:?}");
        assert!(c.error < 0.05 && e.error < 0.05, "{c:?} {e:?}");
        // The pooled fit lies between the kinds'; a kind never timed takes it.
        assert_eq!(fit.efficiency_of(KernelKind::Pool), &fit.pooled);
        // Beyond the sizes seen the efficiency stays in [MIN_EFFICIENCY, 1].
        assert_eq!(c.at(20.0), 1.0);
        assert!((MIN_EFFICIENCY..=1.0).contains(&e.at(-50.0)));
        assert_eq!(c.at(-50.0), MIN_EFFICIENCY);
    }

    #[test]
    fn held_out_networks_measure_the_fit_and_too_little_fits_nothing() {
        let counts = [1, 2];
        let mut rng = StdRng::seed_from_u64(3);
        let samples = synthetic(KernelKind::Pointwise, |_| 0.8, &counts, 50, 0.0, &mut rng);
        // A network of two kernels whose measured speed-up is exactly what the fit says, and one
        // that ran 20 % slower at two threads than the fit says.
        let exact = Check {
            kernels: vec![
                timed(KernelKind::Pointwise, 6.0, vec![1.0, 1.0 / 1.8]),
                timed(KernelKind::Pointwise, 7.0, vec![3.0, 3.0 / 1.8]),
            ],
        };
        let slow = Check {
            kernels: vec![timed(KernelKind::Pointwise, 6.0, vec![1.0, 1.2 / 1.8])],
        };
        let fit = fit(&counts, &samples, std::slice::from_ref(&exact)).unwrap();
        assert!(fit.network_error[&2] < 1e-9, "{:?}", fit.network_error);
        let fit2 = super::fit(&counts, &samples, &[slow]).unwrap();
        // Measured speed-up 1.5, predicted 1.8: 20 % off.
        assert!(
            (fit2.network_error[&2] - 0.2).abs() < 1e-9,
            "{:?}",
            fit2.network_error
        );
        // Too few samples: no fit, rather than a made-up one.
        assert!(super::fit(&counts, &samples[..2], &[]).is_none());
        assert!(super::fit(&counts, &[], &[]).is_none());
        // Kernels too fast to time, or without a one-thread timing, give no samples.
        assert!(pairs(KernelKind::Conv, 3.0, fx(3.0), &counts, &[0.001, 0.0005]).is_empty());
        assert!(pairs(KernelKind::Conv, 3.0, fx(3.0), &[2, 3], &[1.0, 0.5]).is_empty());
        assert_eq!(
            counts_of(&pairs(
                KernelKind::Conv,
                6.0,
                fx(6.0),
                &[1, 2, 3],
                &[1.0, 0.6, 0.5]
            )),
            vec![2, 3]
        );
    }

    #[test]
    fn where_time_is_spent_in_large_kernels_the_fit_by_time_is_kept() {
        // Efficiency that is nil up to 10^6 FLOPs and rises steeply beyond (a line fits it badly):
        // many small kernels, few large ones, and held-out networks whose time is in large ones.
        let truth = |x: f64| ((x - 6.0) * 0.4).clamp(0.0, 0.9);
        let counts = [1, 2];
        let mut rng = StdRng::seed_from_u64(11);
        let mut samples = Vec::new();
        for i in 0..400 {
            let x = if i % 10 == 0 {
                rng.random_range(7.5..9.0)
            } else {
                rng.random_range(3.0..6.0)
            };
            let t1 = 10f64.powf(x - 6.0);
            let ms: Vec<f64> = counts
                .iter()
                .map(|&c| t1 / speedup(truth(x), c) * (1.0 + rng.random_range(-0.02..=0.02)))
                .collect();
            samples.extend(pairs(KernelKind::Conv, x, fx(x), &counts, &ms));
        }
        let net = |xs: &[f64]| Check {
            kernels: xs
                .iter()
                .map(|&x| {
                    let t1 = 10f64.powf(x - 6.0);
                    timed(KernelKind::Conv, x, vec![t1, t1 / speedup(truth(x), 2)])
                })
                .collect(),
        };
        let checks = [net(&[8.0, 8.5, 4.0, 5.0]), net(&[7.8, 8.8, 3.5])];
        let even = fit_weighted(&counts, &samples, &checks, Weighting::Even).unwrap();
        let by_time = fit_weighted(&counts, &samples, &checks, Weighting::ByTime).unwrap();
        assert!(
            mean_network_error(&by_time) < mean_network_error(&even),
            "{:?} vs {:?}",
            by_time.network_error,
            even.network_error
        );
        let kept = fit_with(&counts, &samples, &checks).unwrap();
        assert_eq!(kept.weighting, Weighting::ByTime);
        // The lines kept are the ones fitted by time; trees, which follow the bend the lines
        // cannot, take their place, having predicted the same networks better.
        assert_eq!(kept.scaling.kinds, by_time.kinds);
        assert_eq!(kept.other_error, Some(mean_network_error(&even)));
        assert_eq!(kept.lines_error, Some(mean_network_error(&by_time)));
        assert!(kept.scaling.trees.contains_key(&KernelKind::Conv));
        assert!(mean_network_error(&kept.scaling) < mean_network_error(&by_time));
        // Without held-out networks there is nothing to choose by: every sample alike, no trees.
        let blind = fit_with(&counts, &samples, &[]).unwrap();
        assert_eq!(blind.weighting, Weighting::Even);
        assert!(blind.scaling.trees.is_empty() && blind.lines_error.is_none());
    }

    #[test]
    fn trees_tell_kernels_of_one_size_apart_by_their_shape() {
        // Dense convolutions split well at every size, grouped ones not at all: the size alone
        // (the lines' one variable) cannot tell them apart, their group count can.
        let counts = [1, 2];
        let mut rng = StdRng::seed_from_u64(5);
        let shaped = |x: f64, grouped: bool| {
            let mut f = fx(x);
            f[11] = if grouped { 3.5 } else { 0.7 };
            f
        };
        let truth = |grouped: bool| if grouped { 0.0 } else { 0.8 };
        let mut samples = Vec::new();
        for i in 0..400 {
            let grouped = i % 2 == 1;
            let x: f64 = rng.random_range(5.0..8.0);
            let t1 = 10f64.powf(x - 6.0);
            let ms: Vec<f64> = counts
                .iter()
                .map(|&c| t1 / speedup(truth(grouped), c) * (1.0 + rng.random_range(-0.02..=0.02)))
                .collect();
            samples.extend(pairs(KernelKind::Conv, x, shaped(x, grouped), &counts, &ms));
        }
        let net = |ks: &[(f64, bool)]| Check {
            kernels: ks
                .iter()
                .map(|&(x, grouped)| {
                    let t1 = 10f64.powf(x - 6.0);
                    Timed {
                        kind: KernelKind::Conv,
                        log_work: x,
                        features: shaped(x, grouped),
                        ms: vec![t1, t1 / speedup(truth(grouped), 2)],
                    }
                })
                .collect(),
        };
        let checks = [
            net(&[(7.0, false), (6.5, false), (6.0, true)]),
            net(&[(7.0, true), (6.5, true), (7.5, false)]),
            net(&[(5.5, true), (7.2, true)]),
        ];
        let kept = fit_with(&counts, &samples, &checks).unwrap();
        let lines = kept.lines_error.expect("the trees should have been kept");
        let trees = mean_network_error(&kept.scaling);
        assert!(trees < 0.03 && lines > 0.1, "trees {trees}, lines {lines}");
        for x in [5.5, 6.5, 7.5] {
            for grouped in [false, true] {
                let e = kept
                    .scaling
                    .efficiency_at(KernelKind::Conv, x, &shaped(x, grouped));
                assert!((e - truth(grouped)).abs() < 0.1, "{x} {grouped}: {e}");
            }
        }
        // A profile's scaling with trees reads back as it was written.
        let json = serde_json::to_string(&kept.scaling).unwrap();
        let mut back: ThreadScaling = serde_json::from_str(&json).unwrap();
        back.compile();
        assert!(back == kept.scaling, "the trees did not read back");
    }

    fn counts_of(s: &[Sample]) -> Vec<usize> {
        s.iter().map(|s| s.threads).collect()
    }
}
