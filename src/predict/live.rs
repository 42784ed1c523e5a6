//! Predict → learn in one place: the live prediction corrected by the online learner, and an
//! observation turned into what the learner learns, for every caller (daemon, CLI, evaluation).
use super::learner::{Features, Learner, Rejected};
use super::{BasePrediction, Prediction, Predictor};
use crate::kernels::Decomposition;
use crate::sense::Snapshot;

/// One model's job as the predictor sees it: its name for the learner (the daemon's model id, a
/// file name …), its cached decomposition and base, and its thread count.
#[derive(Clone, Copy, Debug)]
pub struct Job<'a> {
    pub model: &'a str,
    pub d: &'a Decomposition,
    pub base: &'a BasePrediction,
    pub threads: usize,
}

/// An observation ready to be learned (or journalled first, then learned): what the learner needs,
/// computed from the state the job ran in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pending {
    pub features: Features,
    /// Base × slowdown, before the learner's correction: the learner's target is relative to it.
    pub predicted_ms: f64,
    /// The prediction as it would have been answered, with the learner's correction.
    pub served_ms: f64,
}

impl Predictor {
    /// The features the online learner sees for a prediction: the state's, and the model's time
    /// per kernel kind.
    pub fn features(&self, base: &BasePrediction, p: &Prediction) -> Features {
        Features {
            phi: self.phi(base, p),
            kinds: Some(base.kind_shares),
        }
    }

    /// [`Predictor::predict`] corrected by what `learner` has learned of this model, of every
    /// model, and of the board lately.
    pub fn predict_live(
        &self,
        job: &Job,
        state: &Snapshot,
        learner: &Learner,
        with_kernels: bool,
    ) -> Prediction {
        let mut p = self.predict(job.d, job.base, state, job.threads, with_kernels);
        // The profile's band (`Predictor::band`) until the learner knows this model's errors.
        let own = if p.latency_ms > 0.0 {
            (
                p.interval_ms[0] / p.latency_ms,
                p.interval_ms[1] / p.latency_ms,
            )
        } else {
            self.slowdown.interval(job.base.calibrated)
        };
        let c = learner.correction_for(job.model, &self.features(job.base, &p));
        p.latency_ms *= c;
        p.slowdown *= c;
        // The learned correction stretches every kernel, and with it the energy they take.
        p.energy_joules = p.energy_joules.map(|j| j * c);
        p.state.learned_factor = c;
        let (lo, hi) = learner.interval(job.model).unwrap_or(own);
        p.interval_ms = [p.latency_ms * lo, p.latency_ms * hi];
        if let Some(ks) = p.kernels.as_mut() {
            for k in ks {
                k.latency_ms *= c;
            }
        }
        p
    }

    /// What the learner needs of a job that ran in `state`, before it is learned (the daemon
    /// journals it first). Non-finite figures become 0, which the learner refuses.
    pub fn pending(&self, job: &Job, state: &Snapshot, learner: &Learner) -> Pending {
        let p = self.predict(job.d, job.base, state, job.threads, false);
        let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
        let mut features = self.features(job.base, &p);
        features.phi = features.phi.map(finite);
        let served = p.latency_ms * learner.correction_for(job.model, &features);
        Pending {
            features,
            predicted_ms: finite(p.latency_ms),
            served_ms: finite(served),
        }
    }

    /// Learns that `job`, run in `state`, took `observed_ms`: predict → features → learner.
    pub fn observe(
        &self,
        job: &Job,
        state: &Snapshot,
        learner: &mut Learner,
        observed_ms: f64,
    ) -> Result<Pending, Rejected> {
        let pending = self.pending(job, state, learner);
        learner.learn(
            job.model,
            &pending.features,
            pending.predicted_ms,
            observed_ms,
        )?;
        Ok(pending)
    }
}
