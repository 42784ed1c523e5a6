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
use crate::kernels::{Kernel, features};
use crate::profile::threads::{ThreadScaling, log_work};
use crate::profile::{DeviceInfo, Profile};
use crate::runtime::{Backend, RunSpec};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Share of the calibration's measuring budget the phase takes (about 2.4 minutes of the standard
/// budget), of which kernels alone take [`ALONE_SHARE`], networks the rest.
pub const BUDGET_SHARE: f64 = 0.2;
const ALONE_SHARE: f64 = 0.4;

/// Networks larger than this are skipped: at one thread they would take seconds a run.
const MAX_NETWORK_MACS: u64 = 1_500_000_000;

/// Every fourth network is held out of the fit.
fn held_out(i: usize) -> bool {
    i % 4 == 3
}

/// The networks' stream: another one than the in-network phase's, under the same seed.
const NETWORK_STREAM: u64 = 0x7468_7265_6164;

mod fit;

pub use fit::{Check, Sample, Timed};
use fit::{Fitted, Weighting, fit_with, pairs};

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
    let fitted = fit_with(&counts, &samples, &checks);
    match &fitted {
        Some(f) => note(progress, summary(f)),
        None => note(
            progress,
            format!(
                "warning: thread scaling not fitted ({} samples); predictions for other thread counts assume a fixed efficiency",
                samples.len()
            ),
        ),
    }
    fitted.map(|f| ThreadScaling {
        reference_ratio: reference_ratios(&counts, progress),
        ..f.scaling
    })
}

/// Readings of the reference workload's parallel ratio taken per count.
const REFERENCE_READINGS: usize = 9;

/// The reference workload's parallel ratio at each count beyond one, the median of
/// [`REFERENCE_READINGS`] readings taken as the live probe takes them. A live reading is divided by
/// it to tell what the other cores give now against calibration; the ratio the thread fits
/// predict for the same networks missed the measured one by about a tenth on a two-core VM, which
/// a live reading then carried as a slowdown the board did not have. Empty where the workload
/// cannot run (the prediction then falls back on the fits).
fn reference_ratios(counts: &[usize], progress: Progress) -> BTreeMap<usize, f64> {
    let Ok(w) = crate::workload::reference::ReferenceWorkload::new() else {
        note(
            progress,
            "thread scaling: the reference workload cannot run; its parallel ratio is predicted from the fits".into(),
        );
        return BTreeMap::new();
    };
    counts
        .iter()
        .filter(|&&n| n >= 2)
        .filter_map(|&n| {
            let readings: Vec<f64> = (0..REFERENCE_READINGS)
                .filter_map(|_| w.parallel_ratio(n).ok())
                .filter(|r| r.is_finite() && *r > 0.0)
                .collect();
            crate::util::percentile(readings, 0.5).map(|r| (n, r))
        })
        .collect()
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
fn summary(f: &Fitted) -> String {
    let s = &f.scaling;
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
    let other = match (f.weighting, f.other_error) {
        (_, None) => String::new(),
        (Weighting::Even, Some(e)) => format!(" (fitted by time: {:.1} %)", e * 100.0),
        (Weighting::ByTime, Some(e)) => format!(" (every sample alike: {:.1} %)", e * 100.0),
    };
    let other = match f.lines_error {
        Some(e) => format!(
            "{other}; trees over the kernels' shapes in place of the lines for {} (lines alone: {:.1} %)",
            s.trees
                .keys()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", "),
            e * 100.0
        ),
        None => other,
    };
    format!(
        "thread scaling: counts {:?}; efficiency (10^4 → 10^8 FLOPs{}) {}; held-out networks' speed-up error {}{other}",
        s.counts,
        match f.weighting {
            Weighting::Even => "",
            Weighting::ByTime => ", fitted by time",
        },
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
            samples.extend(pairs(k.kind, log_work(&k), features(&k), counts, &ms));
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
                    for k in &kernels {
                        samples.extend(pairs(k.kind, k.log_work, k.features, counts, &k.ms));
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
            warmup_seconds: 0.0,
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
                ms.iter().all(|t| *t > 0.0).then(|| Timed {
                    kind: kernel.kind,
                    log_work: log_work(kernel),
                    features: features(kernel),
                    ms,
                })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::KernelKind;

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
