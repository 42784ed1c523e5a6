//! Online learning from observed latencies: every observation corrects the next prediction of every
//! model. The correction is a bounded factor exp(c), c the sum of
//! - a slow shared regression on the state features ([`rls`]): how the slowdown model errs as the
//!   measured state moves, learned across all models;
//! - fast board-wide and per-kernel-kind offsets ([`offsets`]): a regime the sensors miss, caught
//!   by the first jobs that run in it and felt at once by every other model (through the kinds,
//!   in proportion to each model's kernel-time shares);
//! - a per-model offset: the profile's lasting error on that model.
//!
//! Bad observations are refused with the reason; a run of consistent refusals of one model is a
//! level shift, and learned. A learner whose state is unsound or whose own record says it has gone
//! wrong ([`health`]) is reset with a warning, never trusted forever. Memory is bounded (an LRU of
//! models); learning is deterministic, so replaying a journal rebuilds the same learner.
mod health;
mod offsets;
mod rls;
#[cfg(test)]
mod tests;

pub use health::Health;
pub use offsets::{Fast, KINDS, KindShares, OFFSET_MAX, Offset};
pub use rls::{Cov, LAMBDA, N, Phi, W_MAX};

use lru::LruCache;
use serde::{Deserialize, Serialize};
use std::num::NonZeroUsize;

/// Largest |log-correction| applied to a prediction: a factor of 5 either way.
pub const CORRECTION_MAX: f64 = 1.609;
/// Recent innovations kept per model, for the outlier bound and the interval.
const RECENT: usize = 16;
/// Consecutive refusals of one model, all on one side and close together, that make a level
/// shift (the model really runs at a new speed) rather than outliers.
const SHIFT_RUN: usize = 3;

/// What the learner sees of one observation: the state features and, when known, the share of the
/// model's time in each kernel kind.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Features {
    pub phi: Phi,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<KindShares>,
}

impl From<Phi> for Features {
    fn from(phi: Phi) -> Features {
        Features { phi, kinds: None }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "Unchecked")]
pub struct Learner {
    /// Coefficients of the shared regression, ln(observed / predicted) ≈ w·φ + offsets.
    pub w: [f64; N],
    /// Covariance of `w`.
    pub p: Cov,
    /// Forgetting factor of the regression (1 = never forget).
    pub lambda: f64,
    /// Board-wide and per-kind offsets, with the observation noise.
    pub fast: Fast,
    pub observations: u64,
    pub rejected: u64,
    /// Times the learner was found unsound or doing harm and started afresh.
    pub resets: u64,
    /// Why it was last reset.
    pub last_reset: Option<String>,
    pub health: Health,
    /// Per-model offset, most recent models kept.
    #[serde(with = "residuals_serde")]
    pub residuals: LruCache<String, Residual>,
}

/// A model's own offset and its recent record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Residual {
    /// Mean of the model's log-offset.
    pub mean: f64,
    /// Its variance.
    #[serde(default = "prior_var")]
    pub var: f64,
    pub count: u64,
    /// Recent absolute innovations, for the robust outlier bound and the interval.
    pub recent: Vec<f64>,
    /// Innovations of the refusals in a row since the last learned observation.
    #[serde(default)]
    pub refused: Vec<f64>,
}

fn prior_var() -> f64 {
    offsets::model_prior().var
}

impl Default for Residual {
    fn default() -> Self {
        Residual {
            mean: 0.0,
            var: prior_var(),
            count: 0,
            recent: Vec::new(),
            refused: Vec::new(),
        }
    }
}

/// The learner as read from a file, before it is checked.
#[derive(Deserialize)]
struct Unchecked {
    w: [f64; N],
    p: Cov,
    #[serde(default = "lambda")]
    lambda: f64,
    #[serde(default)]
    fast: Fast,
    observations: u64,
    rejected: u64,
    #[serde(default)]
    resets: u64,
    #[serde(default)]
    last_reset: Option<String>,
    #[serde(default)]
    health: Health,
    #[serde(with = "residuals_serde")]
    residuals: LruCache<String, Residual>,
}

fn lambda() -> f64 {
    LAMBDA
}

impl From<Unchecked> for Learner {
    /// A state that is unsound when read (written by an older learner that diverged, or damaged)
    /// is reset, not trusted.
    fn from(u: Unchecked) -> Learner {
        let mut l = Learner {
            w: u.w,
            p: u.p,
            lambda: u.lambda,
            fast: u.fast,
            observations: u.observations,
            rejected: u.rejected,
            resets: u.resets,
            last_reset: u.last_reset,
            health: u.health,
            residuals: u.residuals,
        };
        let bad_model = l
            .residuals
            .iter()
            .find(|(_, r)| !residual_sound(r))
            .map(|(m, r)| format!("model {m}'s offset {} (variance {})", r.mean, r.var));
        if let Some(why) = l.fault().or(bad_model) {
            l.reset(format!("the saved state is unsound: {why}"));
        }
        l
    }
}

fn residual_sound(r: &Residual) -> bool {
    offsets::model_sound(&Offset {
        mean: r.mean,
        var: r.var,
    })
}

mod residuals_serde {
    use super::Residual;
    use lru::LruCache;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::num::NonZeroUsize;

    pub fn serialize<S: Serializer>(
        c: &LruCache<String, Residual>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        // Oldest first, so restoring by pushing in order rebuilds the same recency.
        let v: Vec<(&String, &Residual)> = c.iter().rev().collect();
        (c.cap().get(), v).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<LruCache<String, Residual>, D::Error> {
        let (cap, v): (usize, Vec<(String, Residual)>) = Deserialize::deserialize(d)?;
        let mut c = LruCache::new(NonZeroUsize::new(cap.max(1)).unwrap_or(NonZeroUsize::MIN));
        for (k, r) in v {
            c.put(k, r);
        }
        Ok(c)
    }
}

/// Why an observation was not learned.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Rejected {
    #[error("observed latency {0} is not a positive finite number")]
    NotPositive(f64),
    #[error("predicted latency {0} is not a positive finite number")]
    BadPrediction(f64),
    #[error("the state features are not finite numbers")]
    BadFeatures,
    #[error(
        "observed {observed_ms:.3} ms is {ratio:.1}× the prediction, beyond the robust bound {bound:.1}×"
    )]
    Outlier {
        observed_ms: f64,
        ratio: f64,
        bound: f64,
    },
}

impl Default for Learner {
    fn default() -> Self {
        Learner::new(4096)
    }
}

/// Kind shares a learner can use: finite, non-negative, summing to at most 1.
fn usable_kinds(k: Option<&KindShares>) -> Option<&KindShares> {
    k.filter(|h| {
        h.iter().all(|x| x.is_finite() && *x >= 0.0) && h.iter().sum::<f64>() <= 1.0 + 1e-6
    })
}

impl Learner {
    pub fn new(max_models: usize) -> Learner {
        Learner {
            w: [0.0; N],
            p: rls::initial_covariance(),
            lambda: LAMBDA,
            fast: Fast::default(),
            observations: 0,
            rejected: 0,
            resets: 0,
            last_reset: None,
            health: Health::default(),
            residuals: LruCache::new(
                NonZeroUsize::new(max_models.max(1)).unwrap_or(NonZeroUsize::MIN),
            ),
        }
    }

    /// Multiplicative correction for a prediction of `model` in state `phi` (kernel kinds unknown).
    pub fn correction(&self, model: &str, phi: &Phi) -> f64 {
        self.correction_for(model, &Features::from(*phi))
    }

    /// Multiplicative correction for a prediction of `model` with features `x`.
    pub fn correction_for(&self, model: &str, x: &Features) -> f64 {
        self.log_correction(model, x).exp()
    }

    fn log_correction(&self, model: &str, x: &Features) -> f64 {
        let shared = rls::usable(&x.phi).map_or(0.0, |phi| rls::predict(&self.w, &phi));
        let own = self.residuals.peek(model).map_or(0.0, |r| r.mean);
        let c = shared + self.fast.predict(usable_kinds(x.kinds.as_ref())) + own;
        if c.is_finite() {
            c.clamp(-CORRECTION_MAX, CORRECTION_MAX)
        } else {
            0.0
        }
    }

    /// Relative interval [lo, hi] for `model` from its recent residuals (None until it has a few).
    pub fn interval(&self, model: &str) -> Option<(f64, f64)> {
        let r = self.residuals.peek(model)?;
        if r.recent.len() < 3 {
            return None;
        }
        let mut v = r.recent.clone();
        v.sort_by(f64::total_cmp);
        let q = v[((v.len() - 1) as f64 * 0.9).round() as usize].max(0.02);
        Some(((-q).exp(), q.exp()))
    }

    /// Learns from one observation with state features `phi` (kernel kinds unknown).
    /// `predicted_ms` is the prediction *before* this learner's correction (base × slowdown), so
    /// the learner's own state never feeds back into its target.
    pub fn observe(
        &mut self,
        model: &str,
        phi: &Phi,
        predicted_ms: f64,
        observed_ms: f64,
    ) -> Result<(), Rejected> {
        self.learn(model, &Features::from(*phi), predicted_ms, observed_ms)
    }

    /// Learns from one observation with features `x`; see [`Learner::observe`].
    pub fn learn(
        &mut self,
        model: &str,
        x: &Features,
        predicted_ms: f64,
        observed_ms: f64,
    ) -> Result<(), Rejected> {
        if !(observed_ms.is_finite() && observed_ms > 0.0) {
            self.rejected += 1;
            return Err(Rejected::NotPositive(observed_ms));
        }
        if !(predicted_ms.is_finite() && predicted_ms > 0.0) {
            self.rejected += 1;
            return Err(Rejected::BadPrediction(predicted_ms));
        }
        let Some(phi) = rls::usable(&x.phi) else {
            self.rejected += 1;
            return Err(Rejected::BadFeatures);
        };
        let kinds = usable_kinds(x.kinds.as_ref()).copied();
        let y = (observed_ms / predicted_ms).ln();
        let shared = rls::predict(&self.w, &phi);
        let fast = self.fast.predict(kinds.as_ref());
        let c = self.log_correction(model, x);
        let r = self
            .residuals
            .get_or_insert_mut(model.to_string(), Residual::default);
        let e = y - shared - fast - r.mean;
        // Robust bound: 6 median absolute innovations of this model, never tighter than 1.5×, and
        // 5× for a model seen fewer than 5 times.
        let bound = if r.recent.len() >= 5 {
            (6.0 * crate::util::median(&r.recent)).max(1.5f64.ln())
        } else {
            5f64.ln()
        };
        if e.abs() > bound || !e.is_finite() {
            r.refused.push(e);
            let n = r.refused.len();
            let shift = n >= SHIFT_RUN && {
                let last = &r.refused[n - SHIFT_RUN..];
                let (lo, hi) = last
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                        (a.min(v), b.max(v))
                    });
                (lo > 0.0 || hi < 0.0) && hi - lo <= 1.5f64.ln() && hi.abs() < 20f64.ln()
            };
            if !shift {
                if r.refused.len() > RECENT {
                    r.refused.remove(0);
                }
                self.rejected += 1;
                self.health.record(y, c, true);
                if let Some(why) = self.health.verdict() {
                    self.reset(why);
                }
                return Err(Rejected::Outlier {
                    observed_ms,
                    ratio: e.exp(),
                    bound: bound.exp(),
                });
            }
            // The model runs at a new speed: its old record no longer bounds it.
            r.recent.clear();
            r.var = r.var.max(prior_var());
        }
        r.refused.clear();
        let own = r.mean;
        // The slow regression learns what the fast offsets and the model's own do not explain;
        // the offsets then share what is left.
        rls::Rls {
            w: &mut self.w,
            p: &mut self.p,
            lambda: self.lambda,
        }
        .update(&phi, y - fast - own);
        let e2 = y - rls::predict(&self.w, &phi) - fast - own;
        let mut o = Offset {
            mean: r.mean,
            var: r.var,
        };
        self.fast.update(kinds.as_ref(), &mut o, e2);
        r.mean = o.mean;
        r.var = o.var;
        r.count += 1;
        r.recent.push(e.abs());
        if r.recent.len() > RECENT {
            r.recent.remove(0);
        }
        let own_fault = (!residual_sound(r)).then(|| format!("model {model}'s offset {}", r.mean));
        self.observations += 1;
        self.health.record(y, c, false);
        if let Some(why) = self.fault().or(own_fault).or_else(|| self.health.verdict()) {
            self.reset(why);
        }
        Ok(())
    }

    /// Why the shared state cannot be trusted, if it cannot.
    pub fn fault(&self) -> Option<String> {
        rls::fault(&self.w, &self.p, self.lambda).or_else(|| self.fast.fault())
    }

    /// Starts afresh (counts kept), with a warning: what was learned is not trusted.
    fn reset(&mut self, why: String) {
        tracing::warn!(
            "online learner reset after {} observations: {why}",
            self.observations
        );
        let cap = self.residuals.cap();
        *self = Learner {
            observations: self.observations,
            rejected: self.rejected,
            resets: self.resets + 1,
            last_reset: Some(why),
            residuals: LruCache::new(cap),
            ..Learner::new(1)
        };
    }

    /// Writes the learned state atomically.
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        crate::util::write_atomic(path, &json)
    }

    /// Restores the learned state; a missing file is a fresh learner, a corrupt one an error (an
    /// unsound one is reset).
    pub fn load(path: &std::path::Path, max_models: usize) -> std::io::Result<Learner> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Learner::new(max_models)),
            Err(e) => Err(e),
        }
    }
}
