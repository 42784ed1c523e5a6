//! Calibration on the board: one front door, [`calibrate`], that detects the runtime's fusion rules,
//! measures kernels alone and inside synthetic networks (journalled, resumable, each measurement
//! brought to one board speed by the reference workload timed between them), fits one regressor
//! per kernel kind, the composition factors, the slowdown model and the thread scaling, measures the
//! board's power per kernel kind where it has an energy counter, judges the result, and writes the
//! device profile. Progress goes to a callback ([`Event`]), logs to `tracing`.
mod build;
mod compose;
mod error;
mod fit;
mod fusion;
pub mod innet;
mod journal;
mod kernels;
mod load_fit;
mod measure;
mod networks;
mod options;
pub mod power;
pub mod prior;
mod progress;
mod quality;
mod sample;
mod session;
mod slowdown;
mod speed;
mod target;
mod threads;

pub use error::{CalibrateError, FitError, MeasureError};
pub use fusion::FusionError;
pub use journal::JournalError;
pub use options::{Budget, Options, aside_path, journal_path};
pub use progress::{Event, Phase, Progress};
pub use quality::REMEDY;
pub use slowdown::refit as refit_slowdown;
pub use threads::refit as refit_threads;

use crate::kernels::FusionRules;
use crate::profile::{CacheCurve, DeviceInfo, Profile, Quality, Reference};
use crate::runtime::Backend;
use crate::workload::reference;
use journal::{Header, Journal};
use session::{Failures, Session};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What a calibration produced.
#[derive(Debug)]
pub struct CalibrationReport {
    /// The profile as written (its `quality` is always there).
    pub profile: Profile,
    /// Where it was written.
    pub out: PathBuf,
    pub journal: PathBuf,
    /// Journal entries reused from an interrupted run.
    pub resumed: usize,
    /// Journal entries in all (kernels, in-network kernels, reference readings).
    pub journalled: usize,
    /// Kernel configurations and networks that could not be measured.
    pub failed_kernels: usize,
    pub failed_networks: usize,
    pub elapsed: Duration,
}

/// Runs a whole calibration as `opts` says and writes the profile. A poor result (see
/// [`crate::profile::Quality`]) is written all the same where no profile was before; beside an
/// existing one it is written aside ([`aside_path`]) and reported as [`CalibrateError::Poor`],
/// unless `opts.accept_poor`.
pub fn calibrate(opts: &Options, progress: Progress) -> Result<CalibrationReport, CalibrateError> {
    let started = Instant::now();
    let backend = crate::runtime::backend_from_spec(&opts.backend)?;
    let fusion = detect_fusion(backend.as_ref(), opts.threads, progress)?;
    let device = DeviceInfo::detect(&crate::util::roots::Roots::default());
    let header = Header {
        journal: journal::FORMAT,
        runtime: backend.version(),
        threads: opts.threads,
        cpu_model: device.cpu_model.clone(),
    };
    let journal = Journal::open(&journal_path(&opts.out), &header)?;
    let resumed = journal.len();
    if resumed > 0 {
        progress(&Event::Resumed {
            measurements: resumed,
            journal: journal.path().to_path_buf(),
        });
    }
    let mut sweeps = Vec::new();
    let (journal, failures) = measure(
        opts,
        backend.as_ref(),
        journal,
        (&device, &mut sweeps),
        progress,
    )?;
    log_failures(&failures);
    progress(&Event::Phase(Phase::Fit));
    let c = fit::collect(journal.entries());
    if c.alone.is_empty() && c.in_network.is_empty() {
        return Err(CalibrateError::Nothing {
            last: failures
                .last
                .map_or_else(|| "nothing was tried".into(), |e| e.to_string()),
        });
    }
    sweeps.push(sweep(&device));
    let mut profile = assemble(
        opts,
        backend.as_ref(),
        device,
        fusion,
        &c,
        &sweeps,
        progress,
    );
    if opts.fit_threads && !opts.stopped() {
        profile.thread_scaling = threads::phase(opts, backend.as_ref(), &profile.device, progress);
    }
    if !opts.stopped() {
        profile.power = Some(power::phase(opts, backend.as_ref(), progress));
    }
    let profile_out = save(opts, &profile)?;
    Ok(CalibrationReport {
        profile,
        out: profile_out,
        journal: journal.path().to_path_buf(),
        resumed,
        journalled: journal.len(),
        failed_kernels: failures.kernels,
        failed_networks: failures.networks,
        elapsed: started.elapsed(),
    })
}

/// Fits the regressors and composition factors of the profile at `out` again from the journal of
/// measurements beside it, with the profile's own cache curve, and writes it (no measuring): for a
/// change of the fit to be judged on the very timings of a calibration, rather than on a second
/// one taken while the host's speed moved. Everything measured apart from the kernels (the
/// reference, the cache curve, the slowdown, the thread scaling, power) is kept as it was.
pub fn refit_regressors(
    out: &std::path::Path,
    seed: u64,
    progress: Progress,
) -> Result<Profile, CalibrateError> {
    let (mut profile, warnings) = Profile::load(out, &crate::profile::tract_runtime())?;
    for w in warnings {
        progress::note(progress, format!("warning: {w}"));
    }
    let path = journal_path(out);
    if !path.exists() {
        return Err(CalibrateError::NoJournal(path));
    }
    let header = Header {
        journal: journal::FORMAT,
        runtime: profile.runtime.clone(),
        threads: profile.threads,
        cpu_model: profile.device.cpu_model.clone(),
    };
    let journal = Journal::open(&path, &header)?;
    progress(&Event::Phase(Phase::Fit));
    let c = fit::collect(journal.entries());
    if c.alone.is_empty() && c.in_network.is_empty() {
        return Err(CalibrateError::Nothing {
            last: format!("{} holds no kernel measurement", path.display()),
        });
    }
    let split = split_in_network(&c, &profile.reference, &profile.device, seed);
    // Refitted under the rule calibration fits by now, whatever rule the profile was made under.
    profile.cache_bytes = CACHE_BYTES;
    profile.reference.following = c.following.clone();
    profile.reference.following_mix = c.following_mix;
    profile.regressors = fit::regressors(&profile.roofline, &c.alone, &split.train, seed);
    profile.composition = BTreeMap::new();
    // Networks timed whole (a backend that cannot time per node) would have to be timed again.
    let composition_error = if split.held_out.is_empty() {
        None
    } else {
        held_out_composition(&mut profile, seed, &split, progress)
    };
    profile.quality = Some(assess(&profile, composition_error, &c));
    profile.save(out)?;
    Ok(profile)
}

/// The runtime's fusion rules, with a note where they differ from the ones augur ships.
fn detect_fusion(
    backend: &dyn Backend,
    threads: usize,
    progress: Progress,
) -> Result<FusionRules, CalibrateError> {
    progress(&Event::Phase(Phase::Fusion));
    let fusion = fusion::detect(backend, threads)?;
    let shipped = FusionRules::tract_default();
    if backend.is_in_process_tract() && fusion.pairs != shipped.pairs {
        let added: Vec<_> = fusion.pairs.difference(&shipped.pairs).collect();
        let missing: Vec<_> = shipped.pairs.difference(&fusion.pairs).collect();
        tracing::info!(
            ?added,
            ?missing,
            "detected fusion rules differ from the shipped ones"
        );
    }
    Ok(fusion)
}

/// The measuring phases: kernels alone for 30 % of the budget, refinement to 40 %, kernels inside
/// synthetic networks for the rest (what the regressors mostly learn from); a backend that cannot
/// time per node spends the rest on kernels alone. The cache curve is swept at the start of each
/// phase (into `sweeps`), so that its sweeps are spread over the minutes the kernels are timed in;
/// the sweeps are off the budget, which is the kernels' time.
fn measure(
    opts: &Options,
    backend: &dyn Backend,
    journal: Journal,
    (device, sweeps): (&DeviceInfo, &mut Vec<Vec<(u64, f64)>>),
    progress: Progress,
) -> Result<(Journal, Failures), CalibrateError> {
    let mut s = Session::new(opts, backend, journal, progress);
    let budget = s.budget();
    let plan = kernels::plan(opts.seed);
    let mut next = 0;
    progress(&Event::Phase(Phase::Kernels));
    sweeps.push(s.aside(|| sweep(device)));
    kernels::explore(&mut s, &plan, &mut next, budget.mul_f64(0.3))?;
    progress(&Event::Phase(Phase::Refine));
    sweeps.push(s.aside(|| sweep(device)));
    kernels::refine(&mut s, opts.seed, budget.mul_f64(0.4))?;
    progress(&Event::Phase(Phase::Networks));
    sweeps.push(s.aside(|| sweep(device)));
    if !networks::run(&mut s, budget)? {
        progress(&Event::Phase(Phase::Kernels));
        kernels::explore(&mut s, &plan, &mut next, budget)?;
    }
    s.finish()
}

fn log_failures(f: &Failures) {
    let last = f.last.as_ref().map(|e| e.to_string()).unwrap_or_default();
    if f.kernels > 0 {
        tracing::info!(failures = f.kernels, last_error = %last, "some configurations could not be measured");
    }
    if f.networks > 0 {
        tracing::info!(failures = f.networks, last_error = %last, "some synthetic networks could not be timed");
    }
}

/// The profile from the collected measurements: roofline, reference, regressors, then (unless
/// stopped) the slowdown model and the composition factors, and the quality report.
fn assemble(
    opts: &Options,
    backend: &dyn Backend,
    device: DeviceInfo,
    fusion: FusionRules,
    c: &fit::Collected,
    sweeps: &[Vec<(u64, f64)>],
    progress: Progress,
) -> Profile {
    let roofline = fit::roofline(&c.alone);
    let reference = Reference {
        probe_flops_per_second: crate::sense::probe::compute_rate(),
        probe_bytes_per_second: crate::sense::probe::memory_bandwidth(),
        cpu_frequency_hertz: 0.0,
        workload: if c.readings.is_empty() {
            String::new()
        } else {
            reference::identity()
        },
        workload_cpu_ms: c.nominal,
        workload_warm: c.nominal > 0.0,
        cache: cache_curve(sweeps, progress),
        following: c.following.clone(),
        following_mix: c.following_mix,
    };
    let split = split_in_network(c, &reference, &device, opts.seed);
    let regressors = fit::regressors(&roofline, &c.alone, &split.train, opts.seed);
    let slowdown = (opts.fit_slowdown && !opts.stopped()).then(|| {
        slowdown::fit(
            &device,
            &reference,
            &roofline,
            opts.budget == Budget::Quick,
            opts.seed,
            progress,
        )
    });
    let measurements = fit::keep_for_profile(
        c.alone
            .iter()
            .cloned()
            .chain(split.train.iter().cloned())
            .chain(split.held_out.iter().map(|(_, _, m)| m.clone()))
            .collect(),
        fit::MAX_PROFILE_MEASUREMENTS,
    );
    let mut profile = Profile {
        format_version: crate::profile::FORMAT_VERSION,
        augur_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        device,
        runtime: backend.version(),
        threads: opts.threads,
        budget: opts.budget.name().to_string(),
        fusion,
        roofline,
        reference,
        regressors,
        measurements,
        cache_model: true,
        cache_bytes: CACHE_BYTES,
        composition: BTreeMap::new(),
        slowdown: slowdown.flatten(),
        quality: None,
        power: None,
        thread_scaling: None,
    };
    let composition_error = composition(opts, backend, &mut profile, &split, progress);
    profile.quality = Some(assess(&profile, composition_error, c));
    profile
}

/// The bytes whose cost calibration takes out of in-network targets (and prediction adds back).
const CACHE_BYTES: crate::profile::CacheBytes = crate::profile::CacheBytes::WeightsAndEntry;

/// The kernels timed inside networks, split into the regressors' targets (less what each network's
/// working set cost them beyond a hot cache) and the held-out networks' kernels.
fn split_in_network(
    c: &fit::Collected,
    reference: &Reference,
    device: &DeviceInfo,
    seed: u64,
) -> compose::InNetwork {
    compose::split(
        seed,
        &c.in_network,
        &reference.cache,
        CACHE_BYTES,
        device.llc_bytes() as f64,
        reference.probe_bytes_per_second,
    )
}

/// The profile's quality report from its regressors, the whole-network error the composition
/// factors leave and the board's noise over the collected measurements.
fn assess(profile: &Profile, composition_error: Option<f64>, c: &fit::Collected) -> Quality {
    quality::assess(
        &profile.regressors,
        composition_error,
        speed::noise(&c.readings, &c.windows),
        c.alone.len() + c.in_network.len(),
    )
}

/// The composition factors fitted on the held-out networks' kernels, into `profile`; the
/// whole-network error they leave.
fn held_out_composition(
    profile: &mut Profile,
    seed: u64,
    split: &compose::InNetwork,
    progress: Progress,
) -> Option<f64> {
    let in_network = profile.regressors.values().filter(|r| r.in_network).count();
    progress::note(
        progress,
        format!(
            "regressors: {in_network} kinds fitted on kernels timed inside {} networks",
            split.networks
        ),
    );
    let f = compose::held_out_factors(profile, seed, &split.held_out, progress);
    profile.composition = f.factors;
    f.error
}

/// One sweep of the cache curve (about a second).
fn sweep(device: &DeviceInfo) -> Vec<(u64, f64)> {
    let llc = Some(device.llc_bytes()).filter(|&b| b > 0);
    crate::sense::probe::cache_sweep(llc)
}

/// The cache curve of this board from the sweeps taken through calibration
/// ([`CacheCurve::from_sweeps`]), with a line saying where it bends.
fn cache_curve(sweeps: &[Vec<(u64, f64)>], progress: Progress) -> CacheCurve {
    let curve = CacheCurve::from_sweeps(sweeps);
    if let (Some(a), Some(b)) = (curve.points.first(), curve.points.last()) {
        progress::note(
            progress,
            format!(
                "cache curve: {:.0} GB/s streaming {} MiB, {:.0} GB/s streaming {} MiB \
                 (the best of {} sweeps; {} MiB at {} GB/s in each)",
                1e-9 / a[1],
                (a[0] as u64) >> 20,
                1e-9 / b[1],
                (b[0] as u64) >> 20,
                sweeps.len(),
                (a[0] as u64) >> 20,
                sweeps
                    .iter()
                    .map(|s| s
                        .first()
                        .map_or("-".into(), |x| format!("{:.0}", x.1 / 1e9)))
                    .collect::<Vec<_>>()
                    .join("/")
            ),
        );
    }
    curve
}

/// Fits the composition factors into `profile` (from held-out networks, or from whole-network
/// timings where none were timed per node); the whole-network error they leave.
fn composition(
    opts: &Options,
    backend: &dyn Backend,
    profile: &mut Profile,
    split: &compose::InNetwork,
    progress: Progress,
) -> Option<f64> {
    if opts.stopped() {
        return None;
    }
    if !split.held_out.is_empty() {
        return held_out_composition(profile, opts.seed, split, progress);
    }
    let networks = if opts.budget == Budget::Quick { 30 } else { 60 };
    match compose::fit(backend, profile, networks, opts.seed, progress) {
        Ok(f) => {
            profile.composition = f.factors;
            f.error
        }
        Err(e) => {
            progress::note(
                progress,
                format!(
                    "warning: composition factors not fitted ({e}); kernels are summed as measured alone"
                ),
            );
            None
        }
    }
}

/// Writes the profile where it belongs; a poor one beside an existing profile goes aside.
fn save(opts: &Options, profile: &Profile) -> Result<PathBuf, CalibrateError> {
    let poor = profile.quality.as_ref().is_some_and(|q| q.is_poor());
    if poor && !opts.accept_poor && opts.out.exists() {
        let aside = aside_path(&opts.out);
        profile.save(&aside)?;
        return Err(CalibrateError::Poor {
            quality: Box::new(profile.quality.clone().unwrap_or_default()),
            kept: opts.out.clone(),
            aside,
        });
    }
    profile.save(&opts.out)?;
    Ok(opts.out.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Roofline;

    fn profile(problems: Vec<String>) -> Profile {
        Profile {
            format_version: crate::profile::FORMAT_VERSION,
            augur_version: String::new(),
            created_unix: 0,
            device: DeviceInfo::default(),
            runtime: "tract".into(),
            threads: 1,
            budget: "quick".into(),
            fusion: FusionRules::tract_default(),
            roofline: Roofline::default(),
            reference: Reference::default(),
            regressors: BTreeMap::new(),
            measurements: Vec::new(),
            cache_model: true,
            cache_bytes: CACHE_BYTES,
            composition: BTreeMap::new(),
            slowdown: None,
            quality: Some(Quality {
                problems,
                ..Quality::default()
            }),
            power: None,
            thread_scaling: None,
        }
    }

    #[test]
    fn a_poor_calibration_never_overwrites_an_existing_profile() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("profile.json");
        let mut opts = Options::new(&out);
        // Where there is none yet, even a poor profile is written (with its problems inside).
        let poor = profile(vec!["pointwise kernels held-out error 27 %".into()]);
        assert_eq!(save(&opts, &poor).unwrap(), out);
        let good = profile(Vec::new());
        save(&opts, &good).unwrap();
        let before = std::fs::read(&out).unwrap();
        match save(&opts, &poor) {
            Err(CalibrateError::Poor { kept, aside, .. }) => {
                assert_eq!(kept, out);
                assert_eq!(aside, aside_path(&out));
                assert!(aside.exists());
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(std::fs::read(&out).unwrap(), before);
        // Asked to, it writes over.
        opts.accept_poor = true;
        save(&opts, &poor).unwrap();
        assert_ne!(std::fs::read(&out).unwrap(), before);
    }
}
