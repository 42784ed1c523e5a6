//! The slow shared correction: recursive least squares of the log-ratio observed/predicted on the
//! state features, with a long memory (forgetting factor), kept numerically sound.
//!
//! Textbook RLS loses the positive-definiteness of its covariance after thousands of steady
//! observations (round-off in `P − kφᵀP`, and windup along directions the features never excite);
//! its gain then grows without bound and the weights run away. Here the covariance is updated in
//! Joseph form (a sum of positive semi-definite terms), symmetrised, and bounded by a congruence
//! scaling that caps every diagonal entry (which keeps it positive definite, unlike clamping the
//! diagonal alone); the weights are projected onto a box. [`Rls::fault`] says when the state is
//! unsound anyway, for the learner to reset it.
// 4×4 matrix arithmetic reads as the formulas with indices, not with iterator chains.
#![allow(clippy::needless_range_loop)]

/// Number of state features the shared correction uses.
pub const N: usize = 4;

/// State features of one observation, all 0 on a quiet board but the first: [1 (bias), CPU
/// oversubscription, lost memory bandwidth × the model's memory share, frequency drop].
pub type Phi = [f64; N];

/// Largest |weight| per feature. The bias is a log-ratio (ln 4: a factor of 4 either way); the
/// others are log-ratios per unit of their feature.
pub const W_MAX: [f64; N] = [1.386, 2.0, 2.0, 2.0];
/// Largest |feature| used: a sensor reading beyond this is an error, not a state to learn from.
pub const PHI_MAX: f64 = 16.0;
/// Initial covariance (the weights' prior variance): a log-ratio of about ±1.
const P0: f64 = 1.0;
/// Cap on each diagonal entry of the covariance, against windup of unexcited directions.
const P_MAX: f64 = 10.0;
/// Forgetting factor: a memory of about 1 / (1 − λ) = 200 observations.
pub const LAMBDA: f64 = 0.995;

/// Covariance of the weights (RLS "inverse correlation").
pub type Cov = [[f64; N]; N];

/// The regression: coefficients of ln(observed / predicted) = w·φ, their covariance, and the
/// forgetting factor (1 = never forget). Borrowed from the learner, whose serialised fields they are.
pub struct Rls<'a> {
    pub w: &'a mut [f64; N],
    pub p: &'a mut Cov,
    pub lambda: f64,
}

/// The prior covariance.
pub fn initial_covariance() -> Cov {
    let mut p = [[0.0; N]; N];
    for (i, row) in p.iter_mut().enumerate() {
        row[i] = P0;
    }
    p
}

/// The shared log-correction `w·φ` for features `phi` (already [`usable`]).
pub fn predict(w: &[f64; N], phi: &Phi) -> f64 {
    dot(w, phi)
}

fn dot(a: &[f64; N], b: &[f64; N]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Features as the regression uses them: finite ones clamped to ±[`PHI_MAX`], None otherwise.
pub fn usable(phi: &Phi) -> Option<Phi> {
    phi.iter()
        .all(|x| x.is_finite())
        .then(|| phi.map(|x| x.clamp(-PHI_MAX, PHI_MAX)))
}

impl Rls<'_> {
    /// One update towards target `y` (a log-ratio) for features `phi` (already [`usable`]).
    pub fn update(&mut self, phi: &Phi, y: f64) {
        let pphi: [f64; N] = self.p.map(|row| dot(&row, phi));
        let denom = self.lambda + dot(phi, &pphi);
        if !(denom.is_finite() && denom > 1e-12 && y.is_finite()) {
            return;
        }
        let k = pphi.map(|v| v / denom);
        let err = y - predict(self.w, phi);
        for ((w, k), max) in self.w.iter_mut().zip(&k).zip(W_MAX) {
            *w = (*w + k * err).clamp(-max, max);
        }
        // Joseph form: P' = [(I − kφᵀ) P (I − kφᵀ)ᵀ + λ k kᵀ] / λ, equal to (P − kφᵀP) / λ in
        // exact arithmetic but positive semi-definite by construction in floating point.
        let mut a = [[0.0; N]; N];
        for (i, row) in a.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = if i == j { 1.0 } else { 0.0 } - k[i] * phi[j];
            }
        }
        let mut ap = [[0.0; N]; N];
        for i in 0..N {
            for j in 0..N {
                ap[i][j] = (0..N).map(|m| a[i][m] * self.p[m][j]).sum();
            }
        }
        let mut np = [[0.0; N]; N];
        for i in 0..N {
            for j in 0..N {
                let apa: f64 = (0..N).map(|m| ap[i][m] * a[j][m]).sum();
                np[i][j] = (apa + self.lambda * k[i] * k[j]) / self.lambda;
            }
        }
        // Symmetrise, then cap the diagonal by the congruence D P D (D diagonal, positive), which
        // keeps P positive definite while bounding every variance and hence the gain.
        let mut d = [1.0; N];
        for i in 0..N {
            for j in 0..i {
                let s = 0.5 * (np[i][j] + np[j][i]);
                np[i][j] = s;
                np[j][i] = s;
            }
            if np[i][i] > P_MAX {
                d[i] = (P_MAX / np[i][i]).sqrt();
            }
        }
        for (i, row) in np.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v *= d[i] * d[j];
            }
        }
        *self.p = np;
    }
}

/// Why this state cannot be trusted, if it cannot: non-finite or out-of-bounds weights, a
/// forgetting factor outside (0.9, 1], a covariance that is not symmetric positive definite or
/// above its cap.
pub fn fault(w: &[f64; N], p: &Cov, lambda: f64) -> Option<String> {
    for (i, (w, max)) in w.iter().zip(W_MAX).enumerate() {
        if !(w.is_finite() && w.abs() <= max + 1e-9) {
            return Some(format!("shared weight {i} is {w} (bound ±{max})"));
        }
    }
    if !(lambda > 0.9 && lambda <= 1.0) {
        return Some(format!("forgetting factor {} outside (0.9, 1]", lambda));
    }
    for i in 0..N {
        if !(p[i][i].is_finite() && p[i][i] <= P_MAX * (1.0 + 1e-9)) {
            return Some(format!("covariance diagonal {i} is {}", p[i][i]));
        }
        for j in 0..i {
            let (a, b) = (p[i][j], p[j][i]);
            if !(a.is_finite() && (a - b).abs() <= 1e-9 * (1.0 + a.abs())) {
                return Some("covariance is not symmetric".into());
            }
        }
    }
    if !positive_definite(p) {
        return Some("covariance is not positive definite".into());
    }
    None
}

/// Cholesky factorisation succeeds (every pivot positive).
pub fn positive_definite(p: &[[f64; N]; N]) -> bool {
    let mut l = [[0.0; N]; N];
    for i in 0..N {
        for j in 0..=i {
            let s: f64 = (0..j).map(|m| l[i][m] * l[j][m]).sum();
            if i == j {
                let d = p[i][i] - s;
                if !(d.is_finite() && d > 0.0) {
                    return false;
                }
                l[i][i] = d.sqrt();
            } else {
                l[i][j] = (p[i][j] - s) / l[j][j];
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_covariance_stays_positive_definite_under_a_long_steady_spell() {
        // The failure this module exists for: thousands of near-identical, nearly collinear
        // feature vectors (bias and a CPU term that barely moves).
        let (mut w, mut p) = ([0.0; N], initial_covariance());
        for i in 0..20_000 {
            let cpu = 0.13 + 1e-4 * ((i % 5) as f64);
            let mut r = Rls {
                w: &mut w,
                p: &mut p,
                lambda: LAMBDA,
            };
            r.update(&[1.0, cpu, 0.0, 0.0], -0.2 - 0.5 * cpu);
            assert_eq!(fault(&w, &p, LAMBDA), None, "after {i} updates");
        }
        let got = predict(&w, &[1.0, 0.13, 0.0, 0.0]);
        assert!((got - (-0.2 - 0.5 * 0.13)).abs() < 0.01, "{got}");
    }

    #[test]
    fn a_diagonal_clamped_covariance_is_found_unsound() {
        // The state a diagonal-only clamp left behind: tiny variances, huge covariances.
        let mut p = initial_covariance();
        p[0][0] = 1e-6;
        p[1][1] = 1e-6;
        p[0][1] = 9e4;
        p[1][0] = 9e4;
        assert!(fault(&[0.0; N], &p, LAMBDA).is_some());
        assert!(fault(&[0.0, 541.0, 0.0, 0.0], &initial_covariance(), LAMBDA).is_some());
        assert_eq!(fault(&[0.0; N], &initial_covariance(), LAMBDA), None);
    }
}
