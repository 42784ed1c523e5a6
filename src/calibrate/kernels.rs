//! The kernels-alone phases: a fixed, seeded plan of configurations sampled from the layer prior,
//! timed one by one; then refinement, nn-Meter style: where the regressor fitted so far errs by more
//! than 10 %, more configurations are sampled around the one it errs on.
use super::error::CalibrateError;
use super::fit;
use super::prior::{Prior, config_key};
use super::sample;
use super::session::Session;
use super::target::fit_target;
use crate::kernels::{Kernel, KernelKind};
use crate::profile::Measurement;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::time::Duration;

/// Refinement rounds.
const ROUNDS: u32 = 3;

/// The plan: a resumed run walks the same one and skips what the journal has.
pub fn plan(seed: u64) -> Vec<Kernel> {
    let prior = Prior::shipped();
    let all: Vec<&Kernel> = prior
        .kernels
        .iter()
        .filter(|k| k.kind != KernelKind::Other)
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    sample::draw(&all, 20_000, &mut rng, 0.2)
}

/// Times the plan from `next` on until `until` (of the session's time) or the plan's end.
pub fn explore(
    s: &mut Session,
    plan: &[Kernel],
    next: &mut usize,
    until: Duration,
) -> Result<(), CalibrateError> {
    while s.elapsed() < until
        && let Some(cfg) = plan.get(*next)
    {
        s.kernel(cfg)?;
        *next += 1;
    }
    Ok(())
}

/// Refinement rounds until `until`: channels resampled (× 0.8–1.25) around each measurement the
/// regressor fitted so far misses by more than 10 %.
pub fn refine(s: &mut Session, seed: u64, until: Duration) -> Result<(), CalibrateError> {
    for round in 0..ROUNDS {
        if s.elapsed() >= until {
            break;
        }
        let ms = fit::collect(s.journal().entries()).alone;
        let mut rrng = StdRng::seed_from_u64(seed ^ ((round as u64 + 1) * 0x9e37_79b9));
        let around: Vec<Kernel> = missed(&ms, seed)
            .iter()
            .flat_map(|m| {
                (0..2)
                    .map(|_| sample::perturb(&m.kernel, &mut rrng, 0.8, 1.25))
                    .collect::<Vec<_>>()
            })
            .collect();
        let round_end = s.elapsed() + until.saturating_sub(s.elapsed()) / (ROUNDS - round);
        for cfg in &around {
            if s.elapsed() >= round_end {
                break;
            }
            s.kernel(cfg)?;
        }
    }
    Ok(())
}

/// The measurements a fit on all of them misses by more than 10 %, in configuration order.
fn missed(ms: &[Measurement], seed: u64) -> Vec<&Measurement> {
    let roofline = fit::roofline(ms);
    let regs = fit::per_kind(&roofline, ms, seed);
    let mut bad: Vec<&Measurement> = ms
        .iter()
        .filter(|m| {
            regs.get(&m.kernel.kind).is_some_and(|r| {
                let t = fit_target(m);
                ((r.predict_ms(&roofline, &m.kernel) - t) / t).abs() > 0.10
            })
        })
        .collect();
    bad.sort_by_cached_key(|m| config_key(&m.kernel));
    bad
}
