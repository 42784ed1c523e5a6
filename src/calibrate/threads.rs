//! The thread-scaling phase: kernels of the sampling plan timed alone, then synthetic networks
//! ([`crate::model::families`], never the evaluation models) timed per node, each at every thread
//! count of the board one after the other, and per kernel kind a parallel efficiency fitted as a
//! function of size ([`crate::profile::threads`]). Every fourth network is held out of the fit and
//! says how well its whole-network speed-up is predicted from its kernels'.
//!
//! Only ratios of timings taken back to back are used, so the board's speed drifting between
//! items does not matter and no reference readings are needed; the phase is not journalled (it is
//! short, and `augur calibrate --only-threads` runs it again on its own).
use super::error::CalibrateError;
use super::innet::{attribute, network};
use super::kernels::plan;
use super::measure;
use super::options::Options;
use super::progress::{Event, Phase, Progress, note};
use super::target::fit_target;
use crate::kernels::{Kernel, KernelKind};
use crate::profile::threads::{Efficiency, ThreadScaling, log_work, speedup};
use crate::profile::{DeviceInfo, Profile};
use crate::runtime::{Backend, RunSpec};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Share of the calibration's measuring budget the phase takes (about 2.4 minutes of the standard
/// budget), of which kernels alone take [`ALONE_SHARE`], networks the rest.
pub const BUDGET_SHARE: f64 = 0.2;
const ALONE_SHARE: f64 = 0.4;

/// Samples a kind needs for a fit of its own (else it takes the pooled fit).
const MIN_KIND: usize = 8;
/// Samples the pooled fit needs (else the profile gets no thread scaling).
const MIN_POOLED: usize = 4;

/// Kernels faster than this at one thread are left out: timer and dispatch noise, not scaling.
const MIN_MS: f64 = 0.003;

/// Networks larger than this are skipped: at one thread they would take seconds a run.
const MAX_NETWORK_MACS: u64 = 1_500_000_000;

/// Every fourth network is held out of the fit.
fn held_out(i: usize) -> bool {
    i % 4 == 3
}

/// The networks' stream: another one than the in-network phase's, under the same seed.
const NETWORK_STREAM: u64 = 0x7468_7265_6164;

/// One kernel timed at one thread count beside its one-thread timing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub kind: KernelKind,
    pub log_work: f64,
    pub threads: usize,
    /// Time at one thread over time at `threads`.
    pub speedup: f64,
}

/// One kernel of a network: its kind, [`log_work`] and time at each count (in `counts` order).
pub type Timed = (KernelKind, f64, Vec<f64>);

/// A held-out network.
#[derive(Clone, Debug, Default)]
pub struct Check {
    pub kernels: Vec<Timed>,
}

/// The thread counts timed on a board of `cores`: every one up to 8, then every fourth and the
/// board's own (the efficiency model is linear in the count, so a subset fits it as well).
pub fn counts(cores: usize) -> Vec<usize> {
    (1..=cores.max(1))
        .filter(|&n| n <= 8 || n % 4 == 0 || n == cores)
        .collect()
}

/// The phase for a new profile: its measurements and fit, None (with a note) on a one-core board,
/// when stopped, or when too little could be timed.
pub fn phase(
    opts: &Options,
    backend: &dyn Backend,
    device: &DeviceInfo,
    progress: Progress,
) -> Option<ThreadScaling> {
    let cores = if device.cores > 0 {
        device.cores
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    if cores < 2 {
        note(
            progress,
            "thread scaling: one core, nothing to calibrate".into(),
        );
        return None;
    }
    progress(&Event::Phase(Phase::Threads));
    let budget = opts.budget_duration().mul_f64(BUDGET_SHARE);
    let counts = counts(cores);
    let (samples, checks) = measure_all(opts, backend, &counts, budget, progress)?;
    let scaling = fit(&counts, &samples, &checks);
    match &scaling {
        Some(s) => note(progress, summary(s)),
        None => note(
            progress,
            format!(
                "warning: thread scaling not fitted ({} samples); predictions for other thread counts assume a fixed efficiency",
                samples.len()
            ),
        ),
    }
    scaling
}

/// Measures and fits the thread scaling of the profile at `opts.out` again and saves it in place.
pub fn refit(opts: &Options, progress: Progress) -> Result<Profile, CalibrateError> {
    let (mut profile, warnings) = Profile::load(&opts.out, &crate::profile::tract_runtime())?;
    for w in warnings {
        note(progress, format!("warning: {w}"));
    }
    let backend = crate::runtime::backend_from_spec(&opts.backend)?;
    // Stopped or unfitted: the profile stays as it was (its caller says so).
    let scaling = phase(opts, backend.as_ref(), &profile.device, progress);
    if scaling.is_some() {
        profile.thread_scaling = scaling;
        profile.save(&opts.out)?;
    }
    Ok(profile)
}

/// One line on what was fitted.
fn summary(s: &ThreadScaling) -> String {
    let kinds: Vec<String> = s
        .kinds
        .iter()
        .map(|(k, e)| {
            format!(
                "{} {:.0}–{:.0} %",
                k.name(),
                e.at(4.0) * 100.0,
                e.at(8.0) * 100.0
            )
        })
        .collect();
    let nets: Vec<String> = s
        .network_error
        .iter()
        .map(|(n, e)| format!("{n} threads {:.1} %", e * 100.0))
        .collect();
    format!(
        "thread scaling: counts {:?}; efficiency (10^4 → 10^8 FLOPs) {}; held-out networks' speed-up error {}",
        s.counts,
        if kinds.is_empty() {
            "pooled only".to_string()
        } else {
            kinds.join(", ")
        },
        if nets.is_empty() {
            "n/a".to_string()
        } else {
            nets.join(", ")
        }
    )
}

/// Times kernels alone, then networks, at every count until the budget is spent; None when stopped.
fn measure_all(
    opts: &Options,
    backend: &dyn Backend,
    counts: &[usize],
    budget: Duration,
    progress: Progress,
) -> Option<(Vec<Sample>, Vec<Check>)> {
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut checks = Vec::new();
    let mut networks = 0;
    let tick = |samples: usize, networks: usize| {
        progress(&Event::Measuring {
            elapsed: start.elapsed(),
            budget,
            measurements: samples,
            networks,
            repeats: 0,
        })
    };
    let kernels = plan(opts.seed);
    for (item, cfg) in kernels.iter().enumerate() {
        if start.elapsed() >= budget.mul_f64(ALONE_SHARE) {
            break;
        }
        if opts.stopped() {
            return None;
        }
        // The order alternates so that warming up favours neither end.
        let order = ordered(counts, item);
        let mut ms = vec![0.0; counts.len()];
        let mut kernel: Option<Kernel> = None;
        let ok = order
            .iter()
            .all(|&(j, n)| match measure::kernel(backend, cfg, n) {
                Ok(m) => {
                    ms[j] = fit_target(&m);
                    kernel = Some(m.kernel);
                    true
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a kernel could not be timed for thread scaling");
                    false
                }
            });
        if let (true, Some(k)) = (ok, kernel) {
            samples.extend(pairs(k.kind, log_work(&k), counts, &ms));
        }
        tick(samples.len(), networks);
    }
    let mut i = 0usize;
    while start.elapsed() < budget && i < 10_000 {
        if opts.stopped() {
            return None;
        }
        let timed = time_network(
            backend,
            opts.seed ^ NETWORK_STREAM,
            i,
            counts,
            &ordered(counts, i),
        );
        match timed {
            Ok(Some(kernels)) => {
                networks += 1;
                if held_out(i) {
                    checks.push(Check { kernels });
                } else {
                    for (kind, lw, ms) in &kernels {
                        samples.extend(pairs(*kind, *lw, counts, ms));
                    }
                }
            }
            Ok(None) => {}
            // A backend that cannot time per node leaves the rest of the time unused: the
            // kernels alone are what it can give.
            Err(NoPerNode) => break,
        }
        i += 1;
        tick(samples.len(), networks);
    }
    Some((samples, checks))
}

/// The backend cannot time per node.
struct NoPerNode;

/// The kernels of synthetic network `i` timed at every count; None when the network is skipped
/// (too large, or not timed).
fn time_network(
    backend: &dyn Backend,
    seed: u64,
    i: usize,
    counts: &[usize],
    order: &[(usize, usize)],
) -> Result<Option<Vec<Timed>>, NoPerNode> {
    let Ok((g, d)) = network(seed, i) else {
        return Ok(None);
    };
    if d.macs > MAX_NETWORK_MACS {
        return Ok(None);
    }
    let Ok(bytes) = crate::model::export::to_onnx_bytes(&g) else {
        return Ok(None);
    };
    let mut per_count = vec![Vec::new(); counts.len()];
    for &(j, n) in order {
        let spec = RunSpec {
            threads: n,
            warmup: 1,
            runs: 5,
            max_seconds: 1.5,
        };
        match backend.time_per_node_onnx(&bytes, &spec) {
            Ok(Some(nodes)) => per_count[j] = attribute(&g, &d, &nodes).kernel_ms,
            Ok(None) => return Err(NoPerNode),
            Err(e) => {
                tracing::debug!(error = %e, "a network could not be timed for thread scaling");
                return Ok(None);
            }
        }
    }
    Ok(Some(
        d.kernels
            .iter()
            .enumerate()
            .filter_map(|(k, kernel)| {
                let ms: Vec<f64> = per_count
                    .iter()
                    .map(|v| v.get(k).copied())
                    .collect::<Option<_>>()?;
                // A kernel the runtime folded into a neighbour got no time of its own.
                ms.iter()
                    .all(|t| *t > 0.0)
                    .then(|| (kernel.kind, log_work(kernel), ms))
            })
            .collect(),
    ))
}

/// `counts` with their indices, ascending for even items and descending for odd ones.
fn ordered(counts: &[usize], item: usize) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = counts.iter().copied().enumerate().collect();
    if item % 2 == 1 {
        v.reverse();
    }
    v
}

/// The samples of one kernel timed at `counts` (the first of which is one thread).
fn pairs(kind: KernelKind, log_work: f64, counts: &[usize], ms: &[f64]) -> Vec<Sample> {
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
        })
        .collect()
}

/// The thread scaling from the samples, checked on the held-out networks; None with too few.
pub fn fit(counts: &[usize], samples: &[Sample], checks: &[Check]) -> Option<ThreadScaling> {
    let pooled = fit_efficiency(samples.iter())?;
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
        .filter_map(|(k, v)| Some((k, fit_efficiency(v.into_iter())?)))
        .collect();
    let mut scaling = ThreadScaling {
        counts: counts.to_vec(),
        kinds,
        pooled,
        network_error: BTreeMap::new(),
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
                .map(|k| k.2.first().copied().unwrap_or(0.0))
                .sum();
            let tn: f64 = c
                .kernels
                .iter()
                .map(|k| k.2.get(j).copied().unwrap_or(0.0))
                .sum();
            let predicted: f64 = c
                .kernels
                .iter()
                .map(|(kind, lw, ms)| {
                    ms.first().copied().unwrap_or(0.0) / speedup(s.efficiency_of(*kind).at(*lw), n)
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
fn fit_efficiency<'a>(samples: impl Iterator<Item = &'a Sample>) -> Option<Efficiency> {
    let data: Vec<&Sample> = samples
        .filter(|s| s.threads >= 2 && s.speedup.is_finite() && s.log_work.is_finite())
        .collect();
    if data.is_empty() {
        return None;
    }
    let first = solve(&data)?;
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
        solve(&kept).unwrap_or(first)
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
fn solve(data: &[&Sample]) -> Option<Efficiency> {
    let (mut suu, mut suux, mut suuxx, mut suy, mut suxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for s in data {
        let u = (s.threads - 1) as f64;
        let (x, y) = (s.log_work, s.speedup - 1.0);
        suu += u * u;
        suux += u * u * x;
        suuxx += u * u * x * x;
        suy += u * y;
        suxy += u * x * y;
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
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

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
                pairs(kind, x, counts, &ms)
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
        // Beyond the sizes seen the efficiency stays in [0, 1].
        assert_eq!(c.at(20.0), 1.0);
        assert!((0.0..=1.0).contains(&e.at(-50.0)));
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
                (KernelKind::Pointwise, 6.0, vec![1.0, 1.0 / 1.8]),
                (KernelKind::Pointwise, 7.0, vec![3.0, 3.0 / 1.8]),
            ],
        };
        let slow = Check {
            kernels: vec![(KernelKind::Pointwise, 6.0, vec![1.0, 1.2 / 1.8])],
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
        assert!(pairs(KernelKind::Conv, 3.0, &counts, &[0.001, 0.0005]).is_empty());
        assert!(pairs(KernelKind::Conv, 3.0, &[2, 3], &[1.0, 0.5]).is_empty());
        assert_eq!(
            counts_of(&pairs(KernelKind::Conv, 6.0, &[1, 2, 3], &[1.0, 0.6, 0.5])),
            vec![2, 3]
        );
    }

    fn counts_of(s: &[Sample]) -> Vec<usize> {
        s.iter().map(|s| s.threads).collect()
    }

    #[test]
    fn counts_cover_every_small_board_and_sample_large_ones() {
        assert_eq!(counts(1), vec![1]);
        assert_eq!(counts(2), vec![1, 2]);
        assert_eq!(counts(14), vec![1, 2, 3, 4, 5, 6, 7, 8, 12, 14]);
    }

    #[test]
    fn kernels_time_at_two_threads() {
        // A handful of plan kernels timed at one and two threads: this checks the plumbing (the
        // thread count reaches the runtime, timings pair up), nothing about speed.
        let backend = crate::runtime::TractBackend::default();
        let plan = plan(1);
        let mut n = 0;
        for cfg in plan
            .iter()
            .filter(|k| k.kind == KernelKind::Pointwise)
            .take(3)
        {
            let ms: Vec<f64> = [1, 2]
                .iter()
                .map(|&t| fit_target(&measure::kernel(&backend, cfg, t).unwrap()))
                .collect();
            assert!(ms.iter().all(|t| t.is_finite() && *t > 0.0), "{ms:?}");
            n += 1;
        }
        assert_eq!(n, 3);
    }
}
