//! The chance that a job meets a deadline, from a prediction and its interval.
//!
//! A prediction's interval is the 90th percentile of the absolute log error seen so far (by the
//! profile's fit under load, or by the learner for this model), so it says how wide the error of
//! the log latency is. The error is taken as normal in the log: latency = predicted × e^ε with
//! ε ~ N(0, σ²) and σ from the interval's half-width. How well this holds is measured, not assumed:
//! `augur eval` reports the reliability table of these probabilities against what was met.

/// The two-sided 90 % point of a standard normal: |ε| ≤ 1.645 σ for nine tenths of the errors.
const Z90: f64 = 1.644_853_626_951_472_2;

/// The narrowest spread the error is given: a prediction is never taken as exact.
const MIN_SIGMA: f64 = 0.01;

/// The log-normal error of a prediction: its σ of ln(actual / predicted).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorModel {
    pub sigma: f64,
}

impl ErrorModel {
    /// From an interval `[lo, hi]` around `latency_ms` that holds about 90 % of the jobs.
    pub fn from_interval(latency_ms: f64, interval_ms: [f64; 2]) -> ErrorModel {
        let half = if latency_ms > 0.0 && interval_ms[0] > 0.0 && interval_ms[1] > 0.0 {
            ((interval_ms[1] / interval_ms[0]).ln() / 2.0).abs()
        } else {
            f64::NAN
        };
        let sigma = if half.is_finite() { half / Z90 } else { 1.0 };
        ErrorModel {
            sigma: sigma.max(MIN_SIGMA),
        }
    }

    /// Probability that a job predicted at `latency_ms` finishes within `deadline_ms`.
    pub fn p_within(&self, latency_ms: f64, deadline_ms: f64) -> f64 {
        if deadline_ms == f64::INFINITY {
            return 1.0;
        }
        // NaN fails every comparison, so it lands here too.
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(deadline_ms) || !positive(latency_ms) {
            return 0.0;
        }
        let z = (deadline_ms / latency_ms).ln() / self.sigma;
        normal_cdf(z)
    }

    /// The latency met with probability `p` (0 < p < 1): the deadline a scheduler should allow.
    pub fn quantile(&self, latency_ms: f64, p: f64) -> f64 {
        let p = p.clamp(1e-6, 1.0 - 1e-6);
        latency_ms * (self.sigma * normal_quantile(p)).exp()
    }
}

/// Φ(z) through libm's erfc, which stays accurate in the tails where 1 − erf loses digits.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// Φ⁻¹(p) by bisection on [`normal_cdf`]: called a handful of times per answer, so plain and exact
/// to 1e-9 beats a rational approximation with its own error to check.
fn normal_quantile(p: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0f64, 10.0f64);
    for _ in 0..80 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_holds_ninety_percent() {
        let m = ErrorModel::from_interval(10.0, [10.0 / 1.2, 12.0]);
        // The upper end of the interval is met by 95 % (the other 5 % are above it).
        assert!((m.p_within(10.0, 12.0) - 0.95).abs() < 1e-3);
        assert!((m.p_within(10.0, 10.0) - 0.5).abs() < 1e-12);
        assert!((m.quantile(10.0, 0.95) - 12.0).abs() < 1e-3);
    }

    #[test]
    fn odd_inputs_give_certain_answers_not_nan() {
        let m = ErrorModel::from_interval(10.0, [9.0, 11.0]);
        assert_eq!(m.p_within(10.0, 0.0), 0.0);
        assert_eq!(m.p_within(10.0, -5.0), 0.0);
        assert_eq!(m.p_within(10.0, f64::NAN), 0.0);
        assert_eq!(m.p_within(10.0, f64::INFINITY), 1.0);
        assert_eq!(m.p_within(f64::NAN, 5.0), 0.0);
        let wide = ErrorModel::from_interval(0.0, [0.0, 0.0]);
        assert_eq!(wide.sigma, 1.0);
        assert!(ErrorModel::from_interval(10.0, [10.0, 10.0]).sigma >= MIN_SIGMA);
    }

    #[test]
    fn probability_grows_with_the_deadline() {
        let m = ErrorModel::from_interval(10.0, [8.0, 12.5]);
        let mut last = 0.0;
        for d in [5.0, 8.0, 9.5, 10.0, 11.0, 12.5, 20.0] {
            let p = m.p_within(10.0, d);
            assert!(p >= last, "{d}: {p} < {last}");
            last = p;
        }
    }
}
