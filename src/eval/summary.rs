//! Scores of a set of predictions against measurements, and the noise floor of a run: how well
//! each measurement is predicted by the same model's measurement in the previous pass.
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default, Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Pairs scored.
    pub n: usize,
    /// Share of predictions within ±5 % of the measurement (0–1).
    pub within_5_pct: f64,
    pub within_10_pct: f64,
    /// Mean absolute percentage error.
    pub mape_pct: f64,
    /// Median of (predicted − measured) / measured, %: the bias (negative: predicts too low).
    pub median_signed_pct: f64,
    pub rmse_ms: f64,
}

/// Signed error of `predicted` against `measured`, %.
pub fn error_pct(predicted: f64, measured: f64) -> f64 {
    (predicted - measured) / measured * 100.0
}

impl Summary {
    /// Scores (predicted, measured) pairs; pairs whose measurement is not a positive finite number,
    /// or whose prediction is not finite, are left out.
    pub fn of(pairs: &[(f64, f64)]) -> Summary {
        let pairs: Vec<(f64, f64)> = pairs
            .iter()
            .copied()
            .filter(|&(p, m)| p.is_finite() && m.is_finite() && m > 0.0)
            .collect();
        if pairs.is_empty() {
            return Summary::default();
        }
        let n = pairs.len() as f64;
        let signed: Vec<f64> = pairs.iter().map(|&(p, m)| error_pct(p, m)).collect();
        let within = |pct: f64| signed.iter().filter(|e| e.abs() <= pct).count() as f64 / n;
        Summary {
            n: pairs.len(),
            within_5_pct: within(5.0),
            within_10_pct: within(10.0),
            mape_pct: signed.iter().map(|e| e.abs()).sum::<f64>() / n,
            median_signed_pct: crate::util::median(&signed),
            rmse_ms: (pairs.iter().map(|(p, m)| (p - m).powi(2)).sum::<f64>() / n).sqrt(),
        }
    }
}

/// The (previous-pass measurement, measurement) pairs of one model's measurements in pass order:
/// what a scheduler that remembers last time would have predicted, and what came.
pub fn previous_pass_pairs(measured: &[f64]) -> Vec<(f64, f64)> {
    measured.windows(2).map(|w| (w[0], w[1])).collect()
}

/// The noise floor of a run: each model's measurements (in pass order) predicted by its
/// measurement in the previous pass, scored over passes 2..P of every model.
pub fn noise_floor<'a>(per_model: impl IntoIterator<Item = &'a [f64]>) -> Summary {
    let pairs: Vec<(f64, f64)> = per_model
        .into_iter()
        .flat_map(previous_pass_pairs)
        .collect();
    Summary::of(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_pairs() {
        // Errors: +10 %, −5 %, 0 %, +20 %.
        let s = Summary::of(&[(11.0, 10.0), (19.0, 20.0), (5.0, 5.0), (12.0, 10.0)]);
        assert_eq!(s.n, 4);
        assert!((s.mape_pct - 8.75).abs() < 1e-9, "{}", s.mape_pct);
        assert!((s.median_signed_pct - 5.0).abs() < 1e-9);
        assert!((s.within_5_pct - 0.5).abs() < 1e-12);
        assert!((s.within_10_pct - 0.75).abs() < 1e-12);
        let rmse = ((1.0 + 1.0 + 0.0 + 4.0) / 4.0f64).sqrt();
        assert!((s.rmse_ms - rmse).abs() < 1e-12);
        assert_eq!(Summary::of(&[]), Summary::default());
        assert_eq!(Summary::of(&[(1.0, 0.0), (f64::NAN, 1.0)]).n, 0);
    }

    #[test]
    fn the_floor_predicts_each_pass_by_the_previous_one() {
        // Model a: 10, 12, 9 → errors of 10 for 12 (−16.67 %) and of 12 for 9 (+33.3 %).
        // Model b: 20, 20 → 0 %. A model measured once adds nothing.
        let a = [10.0, 12.0, 9.0];
        let b = [20.0, 20.0];
        let c = [7.0];
        let f = noise_floor([&a[..], &b[..], &c[..]]);
        assert_eq!(f.n, 3);
        let want = (100.0 * 2.0 / 12.0 + 100.0 * 3.0 / 9.0 + 0.0) / 3.0;
        assert!((f.mape_pct - want).abs() < 1e-9, "{} vs {want}", f.mape_pct);
        assert!((f.median_signed_pct - 0.0).abs() < 1e-9);
        assert_eq!(previous_pass_pairs(&a), vec![(10.0, 12.0), (12.0, 9.0)]);
    }
}
