//! The evaluation protocol: P passes over the models, each pass in its own shuffled order; each
//! model is predicted from the state read just before it is measured, then measured; with
//! `observe`, each measurement is then learned, so later predictions of every model use it (and a
//! model's first prediction follows observations of other models only).
use super::reliability::{self, Reliability};
use super::summary::{Summary, error_pct, noise_floor};
use super::{EvalError, FlopsProxy};
use crate::kernels::Decomposition;
use crate::predict::{BasePrediction, Job, Learner, Predictor};
use crate::sense::Snapshot;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use std::time::Instant;

/// A model under evaluation: its name, decomposition and base prediction.
pub struct Subject {
    pub name: String,
    pub d: Decomposition,
    pub base: BasePrediction,
}

/// Where the protocol reads the state and measures: this board ([`super::Board`]), or a stand-in.
pub trait Bench {
    /// The state now, just before a measurement.
    fn state(&mut self) -> Result<Snapshot, EvalError>;
    /// Latency of subject `i` now, ms.
    fn measure(&mut self, i: usize) -> Result<f64, EvalError>;
}

/// How many passes.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Passes {
    Fixed(usize),
    /// As many passes as it takes for the run to span `seconds`, and at least `min`.
    Span {
        seconds: f64,
        min: usize,
    },
}

/// Most passes of a run spanning a time.
const MAX_PASSES: usize = 10_000;

pub struct Plan {
    pub passes: Passes,
    /// Feed each measurement back to the online learner.
    pub observe: bool,
    /// Seed of the passes' orders.
    pub seed: u64,
    /// Threads the models run with.
    pub threads: usize,
    /// The FLOPs proxy to score beside (None: none).
    pub flops: Option<FlopsProxy>,
}

/// Progress, after each measurement.
pub struct Progress<'a> {
    /// Measurements done, and the total expected (an estimate while the run spans a time).
    pub done: usize,
    pub expected: usize,
    pub pass: usize,
    pub model: &'a str,
    pub predicted_ms: f64,
    pub measured_ms: f64,
}

/// One model in one pass.
#[derive(Clone, Debug, Serialize)]
pub struct PassRecord {
    /// 1-based.
    pub pass: usize,
    /// The prediction scored: live state, and with `observe` the learner's correction.
    pub predicted_ms: f64,
    /// The prediction's 90 % interval: its error model for the deadline probabilities.
    pub interval_ms: [f64; 2],
    pub measured_ms: f64,
    pub error_pct: f64,
    /// Quiet-board prediction (the profile alone).
    pub static_ms: f64,
    pub cpu_factor: f64,
    pub speed_factor: f64,
    /// The reference reading's ratio to calibration, whether or not the profile applied it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_ratio: Option<f64>,
    pub learned_factor: f64,
    /// Observations the learner had learned before this prediction: of this model, of all.
    pub observed_before_own: u64,
    pub observed_before_all: u64,
    /// With `observe`: whether the learner took this measurement (false: it refused it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned: Option<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelReport {
    pub model: String,
    /// Mean prediction and mean measurement over the passes, and the error of the one against
    /// the other.
    pub predicted_ms: f64,
    pub measured_ms: f64,
    pub error_pct: f64,
    pub static_ms: f64,
    pub static_error_pct: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_error_pct: Option<f64>,
    /// Mean board speed relative to calibration the predictions used (reference workload; 1: none).
    pub speed_ratio: f64,
    /// This model's noise floor: MAPE of each pass's measurement predicted by the previous one's.
    pub floor_mape_pct: f64,
    pub passes: Vec<PassRecord>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub passes: usize,
    pub observe: bool,
    pub seed: u64,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    pub models: Vec<ModelReport>,
    /// augur, per model on the means.
    pub summary: Summary,
    /// augur, every (pass, model) prediction against the measurement after it.
    pub per_pass: Summary,
    /// augur's first prediction of each model (with `observe`: after other models' observations
    /// only).
    pub first_pass: Summary,
    /// The quiet-board prediction, per model on the means.
    #[serde(rename = "static")]
    pub static_: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_flops: Option<Summary>,
    /// With `observe`: the same predictions without the learner's correction (live state only),
    /// per model on the means — what the run would have scored without learning, in the same
    /// passes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlearned: Option<Summary>,
    /// Each measurement predicted by the same model's in the previous pass (passes 2..P).
    pub noise_floor: Summary,
    /// Observations the learner refused, and times it reset itself (with `observe`).
    pub observations_refused: u64,
    pub learner_resets: u64,
    /// Whether the deadline probabilities of the (pass, model) predictions came true as often as
    /// they said.
    pub reliability: Reliability,
    /// How far the measurements followed the reference reading taken before each prediction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_tracking: Option<super::tracking::SpeedTracking>,
}

fn order(n: usize, seed: u64, pass: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    v.shuffle(&mut StdRng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ pass as u64,
    ));
    v
}

/// Runs the protocol; `progress` hears of each measurement.
pub fn run(
    predictor: &Predictor,
    subjects: &[Subject],
    bench: &mut dyn Bench,
    plan: &Plan,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, EvalError> {
    if subjects.is_empty() {
        return Err(EvalError::Empty);
    }
    let n = subjects.len();
    let start = Instant::now();
    let mut learner = Learner::new(n.max(16));
    let mut records: Vec<Vec<PassRecord>> = vec![Vec::new(); n];
    let (mut refused, mut pass, mut done) = (0u64, 0usize, 0usize);
    let mut expected = match plan.passes {
        Passes::Fixed(p) => p.max(1) * n,
        Passes::Span { min, .. } => min.max(1) * n,
    };
    loop {
        let more = match plan.passes {
            Passes::Fixed(p) => pass < p.max(1),
            Passes::Span { seconds, min } => {
                pass < MAX_PASSES && (pass < min.max(1) || start.elapsed().as_secs_f64() < seconds)
            }
        };
        if !more {
            break;
        }
        pass += 1;
        for i in order(n, plan.seed, pass) {
            let s = &subjects[i];
            let job = Job {
                model: &s.name,
                d: &s.d,
                base: &s.base,
                threads: plan.threads,
            };
            let state = bench.state()?;
            let p = if plan.observe {
                predictor.predict_live(&job, &state, &learner, false)
            } else {
                predictor.predict(&s.d, &s.base, &state, plan.threads, false)
            };
            let own = learner.residuals.peek(&s.name).map_or(0, |r| r.count);
            let all = learner.observations;
            let measured = bench.measure(i)?;
            let learned = plan.observe.then(|| {
                predictor
                    .observe(&job, &state, &mut learner, measured)
                    .is_ok()
            });
            if learned == Some(false) {
                refused += 1;
            }
            records[i].push(PassRecord {
                pass,
                predicted_ms: p.latency_ms,
                interval_ms: p.interval_ms,
                measured_ms: measured,
                error_pct: error_pct(p.latency_ms, measured),
                // The quiet-board figure at the plan's thread count.
                static_ms: p.base_ms,
                cpu_factor: p.state.cpu_factor,
                speed_factor: p.state.speed_factor,
                speed_ratio: p.state.speed_ratio,
                learned_factor: p.state.learned_factor,
                observed_before_own: own,
                observed_before_all: all,
                learned,
            });
            done += 1;
            progress(&Progress {
                done,
                expected,
                pass,
                model: &s.name,
                predicted_ms: p.latency_ms,
                measured_ms: measured,
            });
        }
        if let Passes::Span { seconds, min } = plan.passes {
            // Passes so far took this long each: as many as the span needs, at least `min`.
            let per = start.elapsed().as_secs_f64() / pass as f64;
            let want = (seconds / per.max(1e-9)).ceil() as usize;
            expected = want.clamp(min.max(pass), MAX_PASSES) * n;
        }
    }
    Ok(report(
        subjects,
        records,
        plan,
        pass,
        start.elapsed().as_secs_f64(),
        (refused, learner.resets),
    ))
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

fn report(
    subjects: &[Subject],
    records: Vec<Vec<PassRecord>>,
    plan: &Plan,
    passes: usize,
    seconds: f64,
    (refused, resets): (u64, u64),
) -> Report {
    let mut models = Vec::with_capacity(subjects.len());
    for (s, recs) in subjects.iter().zip(records) {
        let predicted = mean(recs.iter().map(|r| r.predicted_ms));
        let measured = mean(recs.iter().map(|r| r.measured_ms));
        let series: Vec<f64> = recs.iter().map(|r| r.measured_ms).collect();
        let baseline = plan.flops.map(|f| f.predict(&s.d));
        let static_ms = recs.first().map_or(s.base.latency_ms, |r| r.static_ms);
        models.push(ModelReport {
            model: s.name.clone(),
            predicted_ms: predicted,
            measured_ms: measured,
            error_pct: error_pct(predicted, measured),
            static_ms,
            static_error_pct: error_pct(static_ms, measured),
            baseline_ms: baseline,
            baseline_error_pct: baseline.map(|b| error_pct(b, measured)),
            speed_ratio: mean(recs.iter().map(|r| r.speed_factor)),
            floor_mape_pct: noise_floor([&series[..]]).mape_pct,
            passes: recs,
        });
    }
    let pairs = |f: &dyn Fn(&ModelReport) -> Option<f64>| -> Vec<(f64, f64)> {
        models
            .iter()
            .filter_map(|m| f(m).map(|p| (p, m.measured_ms)))
            .collect()
    };
    let every: Vec<(f64, f64)> = models
        .iter()
        .flat_map(|m| m.passes.iter().map(|r| (r.predicted_ms, r.measured_ms)))
        .collect();
    let deadlines: Vec<(f64, bool)> = models
        .iter()
        .flat_map(|m| &m.passes)
        .flat_map(|r| reliability::pairs(r.predicted_ms, r.interval_ms, r.measured_ms))
        .collect();
    let first: Vec<(f64, f64)> = models
        .iter()
        .filter_map(|m| m.passes.first().map(|r| (r.predicted_ms, r.measured_ms)))
        .collect();
    let series: Vec<Vec<f64>> = models
        .iter()
        .map(|m| m.passes.iter().map(|r| r.measured_ms).collect())
        .collect();
    Report {
        passes,
        observe: plan.observe,
        seed: plan.seed,
        seconds,
        summary: Summary::of(&pairs(&|m| Some(m.predicted_ms))),
        per_pass: Summary::of(&every),
        first_pass: Summary::of(&first),
        static_: Summary::of(&pairs(&|m| Some(m.static_ms))),
        baseline_flops: plan.flops.map(|_| Summary::of(&pairs(&|m| m.baseline_ms))),
        unlearned: plan.observe.then(|| {
            let unlearned: Vec<(f64, f64)> = models
                .iter()
                .map(|m| {
                    let p = mean(m.passes.iter().map(|r| r.predicted_ms / r.learned_factor));
                    (p, m.measured_ms)
                })
                .collect();
            Summary::of(&unlearned)
        }),
        noise_floor: noise_floor(series.iter().map(|v| &v[..])),
        observations_refused: refused,
        learner_resets: resets,
        reliability: Reliability::of(&deadlines),
        speed_tracking: super::tracking::of(
            &models
                .iter()
                .map(|m| {
                    m.passes
                        .iter()
                        .map(|r| super::tracking::Sample {
                            predicted_ms: r.predicted_ms,
                            measured_ms: r.measured_ms,
                            speed_factor: r.speed_factor,
                            speed_ratio: r.speed_ratio,
                        })
                        .collect()
                })
                .collect::<Vec<_>>(),
        ),
        models,
    }
}

#[cfg(test)]
mod tests;
