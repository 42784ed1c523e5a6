//! Accuracy of a set of predictions against their measurements, as `augur eval` and its scenarios
//! report it.
use serde::Serialize;

#[derive(Serialize, Default, Clone, Copy)]
pub struct Summary {
    /// Share of models within ±5 % (0–1).
    pub within_5_pct: f64,
    pub within_10_pct: f64,
    pub mape_pct: f64,
    pub rmse_ms: f64,
}

impl Summary {
    pub fn of(pairs: &[(f64, f64)]) -> Summary {
        if pairs.is_empty() {
            return Summary::default();
        }
        let n = pairs.len() as f64;
        let rel: Vec<f64> = pairs.iter().map(|(p, m)| ((p - m) / m).abs()).collect();
        Summary {
            within_5_pct: rel.iter().filter(|&&e| e <= 0.05).count() as f64 / n,
            within_10_pct: rel.iter().filter(|&&e| e <= 0.10).count() as f64 / n,
            mape_pct: rel.iter().sum::<f64>() / n * 100.0,
            rmse_ms: (pairs.iter().map(|(p, m)| (p - m).powi(2)).sum::<f64>() / n).sqrt(),
        }
    }
}
