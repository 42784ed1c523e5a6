//! The chance that a job meets a deadline, from a prediction and its interval.
//!
//! A prediction's interval is the 90th percentile of the absolute log error seen so far (by the
//! profile's fit under load, or by the learner for this model), so it says how wide the error of
//! the log latency is. The error is taken as Laplace in the log: latency = predicted × e^ε with ε of
//! density e^(−|ε|/b) / 2b, b set so that |ε| stays within the interval's half-width for nine tenths
//! of the jobs. Laplace rather than normal because the errors measured on a shared board are
//! heavy-tailed — most jobs land close to the prediction, a few (a regime switch) far from it — and
//! a normal matched to the same 90 % point puts too little mass near the prediction: deadlines a
//! little above it were met far more often than it said. How well this holds is measured, not
//! assumed: `augur eval` reports the reliability table of these probabilities against what was met.

/// ln 10: for a Laplace error of scale b, P(|ε| ≤ x) = 1 − e^(−x/b), nine tenths at x = b ln 10.
const LN10: f64 = std::f64::consts::LN_10;

/// The narrowest scale the error is given: a prediction is never taken as exact.
const MIN_SCALE: f64 = 0.007;

/// The log-Laplace error of a prediction: the scale b of ln(actual / predicted).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorModel {
    pub scale: f64,
}

impl ErrorModel {
    /// From an interval `[lo, hi]` around `latency_ms` that holds about 90 % of the jobs.
    pub fn from_interval(latency_ms: f64, interval_ms: [f64; 2]) -> ErrorModel {
        let half = if latency_ms > 0.0 && interval_ms[0] > 0.0 && interval_ms[1] > 0.0 {
            ((interval_ms[1] / interval_ms[0]).ln() / 2.0).abs()
        } else {
            f64::NAN
        };
        let scale = if half.is_finite() { half / LN10 } else { 1.0 };
        ErrorModel {
            scale: scale.max(MIN_SCALE),
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
        laplace_cdf((deadline_ms / latency_ms).ln() / self.scale)
    }

    /// The latency met with probability `p` (0 < p < 1): the deadline a scheduler should allow.
    pub fn quantile(&self, latency_ms: f64, p: f64) -> f64 {
        let p = p.clamp(1e-6, 1.0 - 1e-6);
        let z = if p < 0.5 {
            (2.0 * p).ln()
        } else {
            -(2.0 * (1.0 - p)).ln()
        };
        latency_ms * (self.scale * z).exp()
    }
}

/// The standard Laplace distribution function at `z` (in units of the scale).
fn laplace_cdf(z: f64) -> f64 {
    if z < 0.0 {
        0.5 * z.exp()
    } else {
        1.0 - 0.5 * (-z).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_holds_ninety_percent() {
        let m = ErrorModel::from_interval(10.0, [10.0 / 1.2, 12.0]);
        // The upper end of the interval is met by 95 % (the other 5 % are above it), the lower
        // end by 5 %.
        assert!((m.p_within(10.0, 12.0) - 0.95).abs() < 1e-9);
        assert!((m.p_within(10.0, 10.0 / 1.2) - 0.05).abs() < 1e-9);
        assert!((m.p_within(10.0, 10.0) - 0.5).abs() < 1e-12);
        assert!((m.quantile(10.0, 0.95) - 12.0).abs() < 1e-9);
        assert!((m.quantile(10.0, 0.05) - 10.0 / 1.2).abs() < 1e-9);
        // Sharper than a normal of the same 90 % point near the prediction.
        assert!(m.p_within(10.0, 10.3) > 0.6);
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
        assert_eq!(wide.scale, 1.0);
        assert!(ErrorModel::from_interval(10.0, [10.0, 10.0]).scale >= MIN_SCALE);
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
