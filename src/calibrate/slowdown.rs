//! The load-fit phase: the slowdown model fitted under controlled background load (see
//! [`super::load_fit`]) for a new profile, or again for an existing one.
use super::error::CalibrateError;
use super::load_fit;
use super::prior::Prior;
use super::progress::{Event, Phase, Progress, note};
use crate::profile::{DeviceInfo, Profile, Reference, Roofline, Slowdown};
use std::path::Path;

/// The slowdown model for a profile; None (with a note) when it could not be fitted, and
/// predictions then use its defaults.
pub fn fit(
    device: &DeviceInfo,
    reference: &Reference,
    roofline: &Roofline,
    quick: bool,
    seed: u64,
    progress: Progress,
) -> Option<Slowdown> {
    progress(&Event::Phase(Phase::LoadFit));
    let sampler = crate::sense::Sampler::start(crate::sense::SenseConfig::for_measuring());
    // Calibration brings every measurement to one speed by the reference readings around it, so
    // its profile follows those readings at prediction time too, as far as they persist.
    let base = Slowdown {
        cores: device.cores.max(1) as f64,
        reference_bandwidth: reference.probe_bytes_per_second,
        speed_live: true,
        ..Default::default()
    };
    let prior = Prior::shipped();
    let probes = load_fit::kernel_probes(&load_fit::representative(&prior.kernels, 1), roofline)
        .map(|mut p| {
            p.extend(load_fit::network_probes(
                seed,
                if quick { 3 } else { 6 },
                roofline,
            ));
            p
        });
    let fitted = match probes {
        Ok(p) => load_fit::fit(&p, base, &sampler, None, device.llc_bytes(), progress),
        Err(e) => Err(e.into()),
    };
    match fitted {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "slowdown model not fitted");
            note(
                progress,
                format!(
                    "warning: the slowdown model could not be fitted ({e}); predictions will use its defaults"
                ),
            );
            None
        }
    }
}

/// Fits the slowdown model of the profile at `out` again (the board's background changed, or the
/// profile was made without it) and saves it in place.
pub fn refit(out: &Path, seed: u64, progress: Progress) -> Result<Profile, CalibrateError> {
    let (mut profile, warnings) = Profile::load(out, &crate::profile::tract_runtime())?;
    for w in warnings {
        note(progress, format!("warning: {w}"));
    }
    profile.slowdown = fit(
        &profile.device,
        &profile.reference,
        &profile.roofline,
        profile.budget == super::options::Budget::Quick.name(),
        seed,
        progress,
    );
    profile.save(out)?;
    Ok(profile)
}
