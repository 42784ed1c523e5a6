//! Online learning from observed latencies: recursive least squares on the slowdown coefficients
//! (shared by every model, so what one model teaches improves unseen ones) and a decaying per-model
//! residual. Bounded memory; bad observations are rejected with the reason.
use lru::LruCache;
use serde::{Deserialize, Serialize};
use std::num::NonZeroUsize;

/// Number of state features the shared correction uses.
pub const N: usize = 4;

/// State features of one observation, all 0 on a quiet board: [1 (bias), CPU oversubscription,
/// lost memory bandwidth × the model's memory share, frequency drop].
pub type Phi = [f64; N];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Learner {
    /// Coefficients of ln(observed / predicted) = w·φ.
    pub w: [f64; N],
    /// RLS inverse covariance.
    pub p: [[f64; N]; N],
    /// Forgetting factor of the RLS (1 = never forget).
    pub lambda: f64,
    /// Weight of a new observation in a model's residual (EWMA).
    pub residual_alpha: f64,
    pub observations: u64,
    pub rejected: u64,
    /// Per-model residual of ln(observed / shared-corrected prediction), most recent models kept.
    #[serde(with = "residuals_serde")]
    pub residuals: LruCache<String, Residual>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Residual {
    pub mean: f64,
    pub count: u64,
    /// Recent absolute residuals, for the robust outlier bound and the interval.
    pub recent: Vec<f64>,
}

const RECENT: usize = 16;

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

impl Learner {
    pub fn new(max_models: usize) -> Learner {
        let mut p = [[0.0; N]; N];
        for (i, row) in p.iter_mut().enumerate() {
            row[i] = 10.0;
        }
        Learner {
            w: [0.0; N],
            p,
            lambda: 0.995,
            residual_alpha: 0.5,
            observations: 0,
            rejected: 0,
            residuals: LruCache::new(
                NonZeroUsize::new(max_models.max(1)).unwrap_or(NonZeroUsize::MIN),
            ),
        }
    }

    /// Multiplicative correction for a prediction of `model` in state `phi`.
    pub fn correction(&self, model: &str, phi: &Phi) -> f64 {
        let shared: f64 = self.w.iter().zip(phi).map(|(w, x)| w * x).sum();
        let own = self.residuals.peek(model).map(|r| r.mean).unwrap_or(0.0);
        (shared + own).clamp(-3.0, 3.0).exp()
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

    /// Learns from one observation. `predicted_ms` is the prediction *before* this learner's
    /// correction (base × slowdown), so the learner's own state never feeds back into its target.
    pub fn observe(
        &mut self,
        model: &str,
        phi: &Phi,
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
        let y = (observed_ms / predicted_ms).ln();
        let corrected = y
            - self.correction_shared(phi)
            - self.residuals.peek(model).map(|r| r.mean).unwrap_or(0.0);
        // Robust bound: 6 median absolute residuals of this model, never tighter than 1.5×, and
        // never looser than 5× for a model seen for the first time.
        let bound = match self.residuals.peek(model) {
            Some(r) if r.recent.len() >= 5 => {
                let mut v = r.recent.clone();
                v.sort_by(f64::total_cmp);
                (6.0 * v[v.len() / 2]).max(1.5f64.ln())
            }
            _ => 5f64.ln(),
        };
        if corrected.abs() > bound {
            self.rejected += 1;
            return Err(Rejected::Outlier {
                observed_ms,
                ratio: corrected.exp(),
                bound: bound.exp(),
            });
        }
        // Shared part first (RLS on y − own residual), then the model's residual on what is left.
        let own = self.residuals.peek(model).map(|r| r.mean).unwrap_or(0.0);
        self.rls_update(phi, y - own);
        let left = y - self.correction_shared(phi);
        let r = self
            .residuals
            .get_or_insert_mut(model.to_string(), Residual::default);
        r.mean = if r.count == 0 {
            left
        } else {
            r.mean + self.residual_alpha * (left - r.mean)
        };
        r.count += 1;
        r.recent.push(corrected.abs());
        if r.recent.len() > RECENT {
            r.recent.remove(0);
        }
        self.observations += 1;
        Ok(())
    }

    fn correction_shared(&self, phi: &Phi) -> f64 {
        self.w.iter().zip(phi).map(|(w, x)| w * x).sum()
    }

    /// Standard RLS with forgetting: k = Pφ / (λ + φᵀPφ); w += k·(y − wᵀφ); P = (P − kφᵀP) / λ.
    fn rls_update(&mut self, phi: &Phi, y: f64) {
        let pphi: [f64; N] = self
            .p
            .map(|row| row.iter().zip(phi).map(|(p, x)| p * x).sum());
        let denom = self.lambda + phi.iter().zip(&pphi).map(|(a, b)| a * b).sum::<f64>();
        if !(denom.is_finite() && denom > 1e-12) {
            return;
        }
        let k: [f64; N] = pphi.map(|v| v / denom);
        let err = y - self.correction_shared(phi);
        for (w, k) in self.w.iter_mut().zip(&k) {
            *w += k * err;
        }
        let mut np = self.p;
        for i in 0..N {
            for j in 0..N {
                np[i][j] = (self.p[i][j] - k[i] * pphi[j]) / self.lambda;
            }
        }
        // Keep P bounded so a long quiet spell (φ ≈ const) cannot blow it up.
        for (i, row) in np.iter_mut().enumerate() {
            row[i] = row[i].clamp(1e-6, 1e3);
        }
        self.p = np;
    }

    /// Writes the learned state atomically.
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        crate::util::write_atomic(path, &json)
    }

    /// Restores the learned state; a missing file is a fresh learner, a corrupt one an error.
    pub fn load(path: &std::path::Path, max_models: usize) -> std::io::Result<Learner> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Learner::new(max_models)),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_on_synthetic_data() {
        // Truth: ln(obs/pred) = 0.05 + 0.8·cpu + 0.3·mem, plus a per-model bias.
        let mut l = Learner::new(16);
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        for i in 0..400 {
            let phi = [1.0, rnd(), rnd(), 0.0];
            let model = format!("m{}", i % 4);
            let bias = [0.0, 0.1, -0.1, 0.05][i % 4];
            let y = 0.05 + 0.8 * phi[1] + 0.3 * phi[2] + bias;
            l.observe(&model, &phi, 10.0, 10.0 * y.exp()).unwrap();
        }
        let phi = [1.0, 0.5, 0.5, 0.0];
        for (m, bias) in [("m0", 0.0), ("m1", 0.1), ("m2", -0.1), ("m3", 0.05)] {
            let truth = (0.05f64 + 0.4 + 0.15 + bias).exp();
            let got = l.correction(m, &phi);
            assert!((got / truth - 1.0).abs() < 0.03, "{m}: {got} vs {truth}");
        }
    }

    #[test]
    fn rejects_bad_observations() {
        let mut l = Learner::new(4);
        let phi = [1.0, 0.0, 0.0, 0.0];
        assert!(matches!(
            l.observe("m", &phi, 10.0, f64::NAN),
            Err(Rejected::NotPositive(_))
        ));
        assert!(matches!(
            l.observe("m", &phi, 10.0, 0.0),
            Err(Rejected::NotPositive(_))
        ));
        assert!(matches!(
            l.observe("m", &phi, 10.0, -3.0),
            Err(Rejected::NotPositive(_))
        ));
        assert!(matches!(
            l.observe("m", &phi, 10.0, 1000.0),
            Err(Rejected::Outlier { .. })
        ));
        assert_eq!(l.observations, 0);
        assert_eq!(l.rejected, 4);
        assert!(l.observe("m", &phi, 10.0, 11.0).is_ok());
    }

    #[test]
    fn bounded_models() {
        let mut l = Learner::new(3);
        let phi = [1.0, 0.0, 0.0, 0.0];
        for i in 0..10 {
            l.observe(&format!("m{i}"), &phi, 10.0, 10.5).unwrap();
        }
        assert_eq!(l.residuals.len(), 3);
    }

    #[test]
    fn persists_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("learner.json");
        let mut l = Learner::new(8);
        let phi = [1.0, 0.3, 0.1, 0.0];
        for _ in 0..5 {
            l.observe("a", &phi, 10.0, 12.0).unwrap();
        }
        l.save(&path).unwrap();
        let r = Learner::load(&path, 8).unwrap();
        assert_eq!(r.w, l.w);
        assert_eq!(r.observations, 5);
        assert_eq!(r.correction("a", &phi), l.correction("a", &phi));
        std::fs::write(&path, b"{torn").unwrap();
        assert!(Learner::load(&path, 8).is_err());
    }
}
