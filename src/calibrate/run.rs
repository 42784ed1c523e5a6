//! The calibration run: plan → measure (journalled) → refine where the fit errs → fit → profile.
use super::build::kernel_graph;
use super::compose;
use super::journal::{Header, Journal};
use super::prior::{Prior, config_key};
use super::sample;
use super::target::fit_target;
use crate::kernels::{FusionRules, Kernel, KernelKind, decompose};
use crate::profile::{DeviceInfo, Measurement, Profile, Reference, Regressor, Roofline};
use crate::runtime::{Backend, RunSpec};
use crate::workload::reference;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long calibration may take; measuring stops when the time is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Budget {
    /// Under 3 minutes in all: enough for a usable profile.
    Quick,
    /// About 12 minutes.
    Standard,
    /// About 30 minutes.
    Thorough,
}

impl Budget {
    pub fn seconds(self) -> f64 {
        match self {
            Budget::Quick => 100.0,
            Budget::Standard => 720.0,
            Budget::Thorough => 1800.0,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Budget::Quick => "quick",
            Budget::Standard => "standard",
            Budget::Thorough => "thorough",
        }
    }
}

pub struct Options {
    pub out: PathBuf,
    pub budget: Budget,
    /// Overrides the budget's time (tests, and boards where even `quick` is too long).
    pub budget_seconds: Option<f64>,
    pub threads: usize,
    pub seed: u64,
    pub progress: bool,
    /// Fit the slowdown model under controlled background load after the kernels.
    pub fit_slowdown: bool,
    /// Set to stop early (Ctrl-C): what was measured stays in the journal.
    pub stop: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("measurement journal: {0}")]
    Journal(std::io::Error),
    #[error(
        "calibration interrupted after {measured} measurements; run the same command again to resume"
    )]
    Interrupted { measured: usize },
    #[error("no kernel could be measured: {0}")]
    Nothing(String),
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
}

/// The journal that sits beside a profile.
pub fn journal_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".measurements.jsonl");
    PathBuf::from(s)
}

/// Measures one configuration: builds its graph, decomposes it (the features), times it.
pub fn measure(backend: &dyn Backend, cfg: &Kernel, threads: usize) -> Result<Measurement, String> {
    let g = kernel_graph(cfg).map_err(|e| e.to_string())?;
    let d = decompose(&g, &FusionRules::tract_default()).map_err(|e| e.to_string())?;
    let kernel = d
        .kernels
        .iter()
        .find(|k| k.kind == cfg.kind)
        .or(d.kernels.first())
        .cloned()
        .ok_or_else(|| "the built graph has no kernel".to_string())?;
    let bytes = crate::model::export::to_onnx_bytes(&g).map_err(|e| e.to_string())?;
    let spec = RunSpec {
        threads,
        warmup: 2,
        runs: 7,
        max_seconds: 1.0,
    };
    let t = backend
        .time_onnx(&bytes, &spec)
        .map_err(|e| e.to_string())?;
    Ok(Measurement {
        kernel,
        median_ms: t.median_ms,
        p10_ms: t.p10_ms,
        p90_ms: t.p90_ms,
    })
}

/// Roofline constants from measurements: the best compute rate of compute-bound kinds, the best
/// bandwidth of memory-bound ones, the smallest kernel time as the fixed cost.
pub fn fit_roofline(ms: &[Measurement]) -> Roofline {
    let pct = |mut v: Vec<f64>, q: f64| {
        v.retain(|x| x.is_finite() && *x > 0.0);
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 - 1.0) * q).round().max(0.0) as usize)
            .copied()
    };
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
pub fn fit_all(
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
        .filter_map(|(k, data)| Regressor::fit(roofline, &data, seed).ok().map(|r| (k, r)))
        .collect()
}

/// In-network measurements a kind needs before its regressor is fitted on them instead of on
/// kernels timed alone.
const MIN_IN_NETWORK: usize = 100;

/// How often calibration times the reference workload (~30 ms of CPU each time).
const REFERENCE_EVERY: Duration = Duration::from_secs(20);

/// Most measurements a profile carries (about 0.6 KB each, keeping it well under 10 MB); the journal
/// beside it keeps them all, and the regressors are fitted on all of them.
pub const MAX_PROFILE_MEASUREMENTS: usize = 8000;

/// A deterministic subset of at most `max` measurements, every kind keeping its share.
fn keep_for_profile(ms: Vec<Measurement>, max: usize) -> Vec<Measurement> {
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

/// Runs calibration and writes the profile to `opts.out`.
pub fn calibrate(
    backend: &dyn Backend,
    fusion: FusionRules,
    opts: &Options,
) -> Result<Profile, CalibrateError> {
    let device = DeviceInfo::detect(Path::new("/sys"), Path::new("/proc"));
    let runtime = backend.version();
    let header = Header {
        // 2: in-network keys number `model::families` networks, not the classic ones.
        journal: 2,
        runtime: runtime.clone(),
        threads: opts.threads,
        cpu_model: device.cpu_model.clone(),
    };
    let mut journal =
        Journal::open(&journal_path(&opts.out), &header).map_err(CalibrateError::Journal)?;
    let resumed = journal.measured.len();
    let prior = Prior::shipped();
    let all: Vec<&Kernel> = prior
        .kernels
        .iter()
        .filter(|k| k.kind != KernelKind::Other)
        .collect();
    let mut rng = StdRng::seed_from_u64(opts.seed);
    // A fixed, seeded plan: a resumed run walks the same plan and skips what the journal has.
    let plan = sample::draw(&all, 20_000, &mut rng, 0.2);
    let budget = Duration::from_secs_f64(
        opts.budget_seconds
            .unwrap_or(opts.budget.seconds())
            .max(1.0),
    );
    // Kernels alone (sampled from the prior, then refined where the fit errs) for 40 % of the time;
    // the rest times synthetic networks per node, which is what the regressors mostly learn from.
    let explore = budget.mul_f64(0.3);
    let refine_end = budget.mul_f64(0.4);
    let start = Instant::now();
    let bar = if opts.progress {
        ProgressBar::new(budget.as_secs())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} calibrating [{elapsed_precise}] {wide_bar} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if resumed > 0 {
        bar.println(format!(
            "resuming: {resumed} measurements already in {}",
            journal.path().display()
        ));
    }
    let mut failures = 0usize;
    let mut last_error = String::new();
    let mut pacer = reference::Pacer::new(
        journal
            .measured
            .keys()
            .filter(|k| reference::is_key(k))
            .count(),
        REFERENCE_EVERY,
    );
    let reference_due =
        |journal: &mut Journal, pacer: &mut reference::Pacer| -> Result<(), CalibrateError> {
            match pacer.due() {
                Some((k, m)) => journal.append(k, m).map_err(CalibrateError::Journal),
                None => Ok(()),
            }
        };
    let mut step = |journal: &mut Journal,
                    pacer: &mut reference::Pacer,
                    cfg: &Kernel,
                    bar: &ProgressBar|
     -> Result<(), CalibrateError> {
        reference_due(journal, pacer)?;
        if opts.stop.load(Ordering::Relaxed) {
            return Err(CalibrateError::Interrupted {
                measured: journal.measured.len(),
            });
        }
        let key = config_key(cfg);
        if journal.measured.contains_key(&key) {
            return Ok(());
        }
        match measure(backend, cfg, opts.threads) {
            Ok(m) => journal.append(key, m).map_err(CalibrateError::Journal)?,
            Err(e) => {
                failures += 1;
                last_error = e;
            }
        }
        bar.set_position(start.elapsed().as_secs().min(budget.as_secs()));
        bar.set_message(format!("{} measured", journal.measured.len()));
        Ok(())
    };
    // Resumed measurements count against the time budget at the rate they were taken, roughly.
    let mut i = 0;
    while start.elapsed() < explore && i < plan.len() {
        step(&mut journal, &mut pacer, &plan[i], &bar)?;
        i += 1;
    }
    // Refinement, nn-Meter style: where the fitted predictor errs by more than 10 %, sample channels
    // around that configuration, a few rounds.
    for round in 0..3u64 {
        if start.elapsed() >= refine_end {
            break;
        }
        let ms: Vec<Measurement> = journal
            .measured
            .iter()
            .filter(|(k, _)| compose::parse_key(k).is_none() && !reference::is_key(k))
            .map(|(_, m)| m.clone())
            .collect();
        let roofline = fit_roofline(&ms);
        let regs = fit_all(&roofline, &ms, opts.seed);
        let mut bad: Vec<&Measurement> = ms
            .iter()
            .filter(|m| {
                regs.get(&m.kernel.kind)
                    .map(|r| {
                        ((r.predict_ms(&roofline, &m.kernel) - fit_target(m)) / fit_target(m)).abs()
                            > 0.10
                    })
                    .unwrap_or(false)
            })
            .collect();
        bad.sort_by_key(|m| config_key(&m.kernel));
        let mut rrng = StdRng::seed_from_u64(opts.seed ^ ((round + 1) * 0x9e37_79b9));
        let around: Vec<Kernel> = bad
            .iter()
            .flat_map(|m| {
                (0..2)
                    .map(|_| sample::perturb(&m.kernel, &mut rrng, 0.8, 1.25))
                    .collect::<Vec<_>>()
            })
            .collect();
        let round_end =
            start.elapsed() + (refine_end.saturating_sub(start.elapsed())) / (3 - round as u32);
        for cfg in &around {
            if start.elapsed() >= round_end {
                break;
            }
            step(&mut journal, &mut pacer, cfg, &bar)?;
        }
    }
    // Kernels inside synthetic networks, timed per node.
    let done: BTreeSet<usize> = journal
        .measured
        .keys()
        .filter_map(|k| compose::parse_key(k))
        .map(|(i, _)| i)
        .collect();
    let mut per_node = true;
    let mut net = 0usize;
    let (mut network_failures, mut network_error) = (0usize, String::new());
    while per_node && start.elapsed() < budget && net < 1_000_000 {
        if opts.stop.load(Ordering::Relaxed) {
            return Err(CalibrateError::Interrupted {
                measured: journal.measured.len(),
            });
        }
        if !done.contains(&net) {
            reference_due(&mut journal, &mut pacer)?;
            match compose::measure_network(backend, opts.seed, net, opts.threads) {
                Ok(Some(ms)) => {
                    for (k, m) in ms {
                        journal
                            .append(compose::key(net, k), m)
                            .map_err(CalibrateError::Journal)?;
                    }
                }
                Ok(None) => per_node = false,
                Err(e) => {
                    network_failures += 1;
                    network_error = e;
                }
            }
            bar.set_position(start.elapsed().as_secs().min(budget.as_secs()));
            bar.set_message(format!(
                "{} measured ({} networks)",
                journal.measured.len(),
                net + 1
            ));
        }
        net += 1;
    }
    // A backend that cannot time per node spends the rest of the time on kernels alone.
    while start.elapsed() < budget && i < plan.len() {
        step(&mut journal, &mut pacer, &plan[i], &bar)?;
        i += 1;
    }
    bar.finish_and_clear();
    // In key order, so the same journal always fits the same regressors.
    let mut keyed: Vec<(&String, &Measurement)> = journal.measured.iter().collect();
    keyed.sort_by(|a, b| a.0.cmp(b.0));
    let mut ms: Vec<Measurement> = Vec::new();
    let mut in_network: Vec<(usize, usize, Measurement)> = Vec::new();
    let mut reference_ms: Vec<f64> = Vec::new();
    for (key, m) in keyed {
        match compose::parse_key(key) {
            Some((i, k)) => in_network.push((i, k, m.clone())),
            None if reference::is_key(key) => reference_ms.push(m.median_ms),
            None => ms.push(m.clone()),
        }
    }
    if ms.is_empty() {
        return Err(CalibrateError::Nothing(last_error));
    }
    if failures > 0 {
        tracing::info!(failures, last_error = %last_error, "some configurations could not be measured");
    }
    if network_failures > 0 {
        tracing::info!(network_failures, last_error = %network_error, "some synthetic networks could not be timed");
    }
    let roofline = fit_roofline(&ms);
    let reference = Reference {
        probe_flops_per_second: crate::sense::probe::compute_rate(),
        probe_bytes_per_second: crate::sense::probe::memory_bandwidth(),
        cpu_frequency_hertz: 0.0,
        workload: if reference_ms.is_empty() {
            String::new()
        } else {
            reference::identity()
        },
        workload_cpu_ms: reference::calibration_ms(&reference_ms),
    };
    let split = compose::split(
        opts.seed,
        &in_network,
        device.llc_bytes() as f64,
        reference.probe_bytes_per_second,
    );
    // Kinds with enough in-network samples learn from those; the others from kernels timed alone.
    let mut regressors: BTreeMap<KernelKind, Regressor> =
        fit_all(&roofline, &split.train, opts.seed)
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
    let alone: Vec<Measurement> = ms
        .iter()
        .filter(|m| !regressors.contains_key(&m.kernel.kind))
        .cloned()
        .collect();
    regressors.extend(fit_all(&roofline, &alone, opts.seed));
    let slowdown = if opts.fit_slowdown && !opts.stop.load(Ordering::Relaxed) {
        fit_slowdown(
            &device,
            &reference,
            &roofline,
            opts.budget == Budget::Quick,
            opts.seed,
            opts.progress,
        )
    } else {
        None
    };
    let in_network_kinds = regressors.values().filter(|r| r.in_network).count();
    let ms = keep_for_profile(
        ms.into_iter()
            .chain(split.train)
            .chain(split.held_out.iter().map(|(_, _, m)| m.clone()))
            .collect(),
        MAX_PROFILE_MEASUREMENTS,
    );
    let profile = Profile {
        format_version: crate::profile::FORMAT_VERSION,
        augur_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        device,
        runtime,
        threads: opts.threads,
        budget: opts.budget.name().to_string(),
        fusion,
        roofline,
        reference,
        regressors,
        measurements: ms,
        cache_model: true,
        composition: BTreeMap::new(),
        slowdown,
    };
    let mut profile = profile;
    if !opts.stop.load(Ordering::Relaxed) {
        let log = |m: String| report(opts.progress, m);
        if split.held_out.is_empty() {
            let networks = if opts.budget == Budget::Quick { 30 } else { 60 };
            match compose::fit(backend, &profile, networks, opts.seed, &log) {
                Ok(f) => profile.composition = f,
                Err(e) => eprintln!(
                    "augur: warning: composition factors not fitted ({e}); kernels are summed as measured alone"
                ),
            }
        } else {
            log(format!(
                "regressors: {in_network_kinds} kinds fitted on kernels timed inside {} networks",
                split.networks
            ));
            profile.composition =
                compose::held_out_factors(&profile, opts.seed, &split.held_out, &log);
        }
    }
    profile.save(&opts.out)?;
    Ok(profile)
}

/// The slowdown model fitted under controlled background load (see [`super::load_fit`]), as stored in
/// a profile; None (with a warning) when it could not be fitted.
fn fit_slowdown(
    device: &DeviceInfo,
    reference: &Reference,
    roofline: &Roofline,
    quick: bool,
    seed: u64,
    progress: bool,
) -> Option<serde_json::Value> {
    let sampler = crate::sense::Sampler::start(crate::sense::SenseConfig::for_measuring());
    let base = crate::predict::Slowdown {
        cores: device.cores.max(1) as f64,
        reference_bandwidth: reference.probe_bytes_per_second,
        ..Default::default()
    };
    let log = |m: String| report(progress, m);
    let prior = Prior::shipped();
    let probes = super::load_fit::kernel_probes(
        &super::load_fit::representative(&prior.kernels, 1),
        roofline,
    )
    .map(|mut p| {
        p.extend(super::load_fit::network_probes(
            seed,
            if quick { 3 } else { 6 },
            roofline,
        ));
        p
    });
    match probes
        .and_then(|p| super::load_fit::fit(&p, base, &sampler, None, device.llc_bytes(), &log))
    {
        Ok(s) => serde_json::to_value(s).ok(),
        Err(e) => {
            eprintln!(
                "augur: warning: the slowdown model could not be fitted ({e}); predictions will use its defaults"
            );
            None
        }
    }
}

/// Fits the slowdown model of an existing profile again (the board's background changed, or the
/// profile was made with `--no-load-fit`) and saves it in place.
pub fn refit_slowdown(out: &Path, seed: u64, progress: bool) -> Result<Profile, CalibrateError> {
    let (mut profile, warnings) = Profile::load(out, &crate::profile::tract_runtime())?;
    for w in warnings {
        eprintln!("augur: warning: {w}");
    }
    profile.slowdown = fit_slowdown(
        &profile.device,
        &profile.reference,
        &profile.roofline,
        profile.budget == Budget::Quick.name(),
        seed,
        progress,
    );
    profile.save(out)?;
    Ok(profile)
}

/// A calibration message: on stderr beside the progress bar, else to the log.
fn report(progress: bool, m: String) {
    if progress {
        eprintln!("{m}");
    } else {
        tracing::info!("{m}");
    }
}
