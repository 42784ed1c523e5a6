//! Whether the deadline probabilities are calibrated: each (pass, model) prediction is asked the
//! chance of meeting a ladder of deadlines around it, the measurement says which were met, and the
//! pairs are binned by predicted probability (a reliability table) and scored by the Brier score.
//! Of the predictions that say 90 %, about 90 % should be met.
use crate::predict::deadline::ErrorModel;
use serde::Serialize;

/// The deadlines asked of each prediction, as multiples of the predicted latency: from well below
/// to well above, so that the probabilities spread over the whole 0–1 range.
pub const LADDER: [f64; 8] = [0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.35];

/// Bins of predicted probability: 0–0.1, 0.1–0.2, …, 0.9–1.0.
const BINS: usize = 10;

/// One bin of the table.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Bin {
    /// Predicted probabilities in `[lo, hi)` (the last bin holds 1.0 too).
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    /// Mean predicted probability and share of deadlines met (null in an empty bin).
    pub mean_predicted: Option<f64>,
    pub observed: Option<f64>,
}

/// The reliability table of a run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Reliability {
    /// Deadlines asked of each prediction, × its predicted latency.
    pub ladder: Vec<f64>,
    /// (prediction, deadline) pairs scored.
    pub n: usize,
    /// Mean of (p − met)², met being 0 or 1: 0 is perfect, 0.25 is a coin's 0.5 every time.
    /// Null when nothing was scored.
    pub brier: Option<f64>,
    pub bins: Vec<Bin>,
}

/// The (probability, met) pairs of one prediction: its interval gives the error model, each rung
/// of the ladder a deadline. A measurement that is not a positive finite number adds nothing.
pub fn pairs(predicted_ms: f64, interval_ms: [f64; 2], measured_ms: f64) -> Vec<(f64, bool)> {
    if !(measured_ms.is_finite() && measured_ms > 0.0 && predicted_ms.is_finite()) {
        return Vec::new();
    }
    let error = ErrorModel::from_interval(predicted_ms, interval_ms);
    LADDER
        .iter()
        .map(|f| {
            let deadline = predicted_ms * f;
            (
                error.p_within(predicted_ms, deadline),
                measured_ms <= deadline,
            )
        })
        .collect()
}

impl Reliability {
    /// The table of (predicted probability, met) pairs; pairs with a probability that is not a
    /// number in 0–1 are left out.
    pub fn of(pairs: &[(f64, bool)]) -> Reliability {
        let mut sums = [(0usize, 0.0f64, 0usize); BINS];
        let (mut n, mut squares) = (0usize, 0.0f64);
        for &(p, met) in pairs {
            if !(0.0..=1.0).contains(&p) {
                continue;
            }
            let i = ((p * BINS as f64) as usize).min(BINS - 1);
            let o = if met { 1.0 } else { 0.0 };
            sums[i].0 += 1;
            sums[i].1 += p;
            sums[i].2 += usize::from(met);
            n += 1;
            squares += (p - o) * (p - o);
        }
        // A share of nothing is no number: null, not 0/0.
        let share = |x: f64, of: usize| if of > 0 { Some(x / of as f64) } else { None };
        let bins = sums
            .iter()
            .enumerate()
            .map(|(i, &(count, p, met))| Bin {
                lo: i as f64 / BINS as f64,
                hi: (i + 1) as f64 / BINS as f64,
                count,
                mean_predicted: share(p, count),
                observed: share(met as f64, count),
            })
            .collect();
        Reliability {
            ladder: LADDER.to_vec(),
            n,
            brier: share(squares, n),
            bins,
        }
    }

    /// The table as text, one line per non-empty bin and one for the Brier score.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "deadline reliability over {} (prediction, deadline) pairs, deadlines × {:?} of each prediction:",
            self.n, self.ladder
        )];
        out.push(format!(
            "  {:<11} {:>6} {:>10} {:>9}",
            "predicted", "count", "mean p", "met"
        ));
        for b in self.bins.iter().filter(|b| b.count > 0) {
            out.push(format!(
                "  {:.1}–{:.1}     {:>6} {:>10.3} {:>9.3}",
                b.lo,
                b.hi,
                b.count,
                b.mean_predicted.unwrap_or(f64::NAN),
                b.observed.unwrap_or(f64::NAN)
            ));
        }
        out.push(match self.brier {
            Some(b) => format!("  Brier score {b:.4} (0: perfect; 0.25: always 0.5)"),
            None => "  Brier score: nothing scored".to_string(),
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_bins_and_scores_known_pairs() {
        let pairs = [
            (0.05, false),
            (0.05, true),
            (0.15, false),
            (0.95, true),
            (0.95, true),
            (1.0, false),
            // Left out: not a probability.
            (f64::NAN, true),
            (1.5, true),
            (-0.1, false),
        ];
        let r = Reliability::of(&pairs);
        assert_eq!(r.n, 6);
        assert_eq!(r.bins.len(), 10);
        let b0 = &r.bins[0];
        assert_eq!((b0.lo, b0.hi, b0.count), (0.0, 0.1, 2));
        assert!((b0.mean_predicted.unwrap() - 0.05).abs() < 1e-12);
        assert!((b0.observed.unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(r.bins[1].count, 1);
        assert_eq!(r.bins[1].observed, Some(0.0));
        assert_eq!(r.bins[5].count, 0);
        assert_eq!(r.bins[5].mean_predicted, None);
        // 1.0 lands in the last bin with the 0.95s.
        let last = &r.bins[9];
        assert_eq!(last.count, 3);
        assert!((last.mean_predicted.unwrap() - (0.95 + 0.95 + 1.0) / 3.0).abs() < 1e-12);
        assert!((last.observed.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        let brier =
            (0.05f64.powi(2) + 0.95f64.powi(2) + 0.15f64.powi(2) + 2.0 * 0.05f64.powi(2) + 1.0)
                / 6.0;
        assert!((r.brier.unwrap() - brier).abs() < 1e-12, "{:?}", r.brier);
        assert_eq!(r.bins.iter().map(|b| b.count).sum::<usize>(), r.n);
    }

    #[test]
    fn nothing_scored_is_said_so() {
        let r = Reliability::of(&[]);
        assert_eq!((r.n, r.brier), (0, None));
        assert!(r.lines().iter().any(|l| l.contains("nothing scored")));
    }

    #[test]
    fn each_prediction_asks_the_ladder() {
        // Interval ±20 % in the log: the deadline at the prediction is a coin toss, the ladder's
        // probabilities grow, and a measurement of 1.02 × the prediction meets the rungs from 1.05.
        let p = pairs(10.0, [10.0 / 1.2, 12.0], 10.2);
        assert_eq!(p.len(), LADDER.len());
        assert!((p[3].0 - 0.5).abs() < 1e-12);
        assert!(p.windows(2).all(|w| w[0].0 < w[1].0));
        let met: Vec<bool> = p.iter().map(|x| x.1).collect();
        assert_eq!(
            met,
            [false, false, false, false, true, true, true, true].to_vec()
        );
        assert!(pairs(10.0, [9.0, 11.0], f64::NAN).is_empty());
        assert!(pairs(10.0, [9.0, 11.0], 0.0).is_empty());
    }

    #[test]
    fn calibrated_probabilities_score_as_calibrated() {
        // Measurements drawn exactly from the error model (evenly spaced quantiles of its
        // distribution): every bin's observed share matches its mean prediction closely.
        let error = ErrorModel::from_interval(10.0, [10.0 / 1.15, 11.5]);
        let mut all = Vec::new();
        let k = 2000;
        for i in 0..k {
            let q = (i as f64 + 0.5) / k as f64;
            all.extend(pairs(10.0, [10.0 / 1.15, 11.5], error.quantile(10.0, q)));
        }
        let r = Reliability::of(&all);
        for b in r.bins.iter().filter(|b| b.count > 0) {
            let (m, o) = (b.mean_predicted.unwrap(), b.observed.unwrap());
            assert!((m - o).abs() < 0.01, "{b:?}");
        }
    }
}
