//! How far measured latencies followed the reference workload's reading taken just before each
//! prediction: the evidence for a profile's `slowdown.speed_elasticity` on this board, from the
//! run's own (pass, model) records.
use serde::Serialize;

/// What one (pass, model) record contributes.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub predicted_ms: f64,
    pub measured_ms: f64,
    /// The speed factor the prediction applied (1: none).
    pub speed_factor: f64,
    /// The reading's ratio to calibration, applied or not.
    pub speed_ratio: Option<f64>,
}

/// The elasticities every run re-scores its predictions at.
const GRID: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpeedTracking {
    /// (pass, model) records with a reading.
    pub pairs: usize,
    /// Spread of the readings: the 90th over the 10th percentile of the ratio, minus 1.
    pub ratio_spread: f64,
    /// Least-squares slope of log(measured / prediction without the speed term) on log(ratio),
    /// within each model (each model's own means taken out, so its static error does not count).
    pub slope: f64,
    /// The slope's standard error.
    pub slope_stderr: f64,
    /// MAPE per model on the means, with the speed term re-applied at each elasticity of `GRID`:
    /// `[elasticity, MAPE %]`.
    pub mape_pct_at: Vec<[f64; 2]>,
}

/// `models[i]` holds model i's samples, one per pass. None where no sample carries a reading (a
/// profile without a reference timing).
pub fn of(models: &[Vec<Sample>]) -> Option<SpeedTracking> {
    // Per record: ln ratio and ln(measured / prediction without the speed term).
    let per_model: Vec<Vec<(f64, f64, f64, f64)>> = models
        .iter()
        .map(|m| {
            m.iter()
                .filter_map(|r| {
                    let ratio = r.speed_ratio.filter(|v| v.is_finite() && *v > 0.0)?;
                    let applied = if r.speed_factor > 0.0 {
                        r.speed_factor
                    } else {
                        1.0
                    };
                    let without = r.predicted_ms / applied;
                    (without > 0.0 && r.measured_ms > 0.0).then_some((
                        ratio.ln(),
                        (r.measured_ms / without).ln(),
                        without,
                        r.measured_ms,
                    ))
                })
                .collect()
        })
        .filter(|v: &Vec<_>| !v.is_empty())
        .collect();
    let pairs: usize = per_model.iter().map(Vec::len).sum();
    if pairs == 0 {
        return None;
    }
    let (mut sxx, mut sxy) = (0.0, 0.0);
    let mut centred: Vec<(f64, f64)> = Vec::with_capacity(pairs);
    for v in &per_model {
        let n = v.len() as f64;
        let mx = v.iter().map(|p| p.0).sum::<f64>() / n;
        let my = v.iter().map(|p| p.1).sum::<f64>() / n;
        for p in v {
            let (x, y) = (p.0 - mx, p.1 - my);
            sxx += x * x;
            sxy += x * y;
            centred.push((x, y));
        }
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    // Degrees of freedom: the pairs less one mean per model and the slope.
    let dof = pairs.saturating_sub(per_model.len() + 1).max(1) as f64;
    let rss: f64 = centred.iter().map(|(x, y)| (y - slope * x).powi(2)).sum();
    let slope_stderr = if sxx > 0.0 {
        (rss / dof / sxx).sqrt()
    } else {
        f64::INFINITY
    };
    let ratios: Vec<f64> = per_model.iter().flatten().map(|p| p.0.exp()).collect();
    let ratio_spread = match (
        crate::util::percentile(ratios.iter().copied(), 0.1),
        crate::util::percentile(ratios.iter().copied(), 0.9),
    ) {
        (Some(lo), Some(hi)) if lo > 0.0 => hi / lo - 1.0,
        _ => 0.0,
    };
    let mape_pct_at = GRID
        .iter()
        .map(|&e| {
            // Per model on the means, as the report's own summary is.
            let means: Vec<(f64, f64)> = per_model
                .iter()
                .map(|v| {
                    let n = v.len() as f64;
                    let p = v.iter().map(|r| r.2 * (e * r.0).exp()).sum::<f64>() / n;
                    let m = v.iter().map(|r| r.3).sum::<f64>() / n;
                    (p, m)
                })
                .collect();
            [e, super::Summary::of(&means).mape_pct]
        })
        .collect();
    Some(SpeedTracking {
        pairs,
        ratio_spread,
        slope,
        slope_stderr,
        mape_pct_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model of static time `base` whose passes saw `ratios` and ran `base × ratio^follow × own`.
    fn model(
        base: f64,
        own: f64,
        ratios: &[Option<f64>],
        follow: f64,
        applied: f64,
    ) -> Vec<Sample> {
        ratios
            .iter()
            .map(|r| {
                let x = r.unwrap_or(1.0);
                let factor = x.powf(applied);
                Sample {
                    predicted_ms: base * factor,
                    measured_ms: base * own * x.powf(follow),
                    speed_factor: factor,
                    speed_ratio: *r,
                }
            })
            .collect()
    }

    #[test]
    fn a_board_that_follows_half_the_reading_shows_a_slope_of_a_half_whatever_was_applied() {
        let ratios = [Some(1.0), Some(1.4), Some(0.95), Some(1.2)];
        for applied in [0.0, 1.0] {
            // Each model's own static error (1.1, 0.8) is taken out by centring within the model.
            let models = vec![
                model(10.0, 1.1, &ratios, 0.5, applied),
                model(30.0, 0.8, &[Some(1.3), Some(1.0), Some(1.1)], 0.5, applied),
            ];
            let t = of(&models).unwrap();
            assert_eq!(t.pairs, 7);
            assert!((t.slope - 0.5).abs() < 1e-9, "{t:?}");
            assert!(t.slope_stderr < 1e-6, "{t:?}");
            assert!(t.ratio_spread > 0.2, "{t:?}");
            // Without static errors, re-scoring at each elasticity finds the one the board followed.
            let exact = of(&[model(10.0, 1.0, &ratios, 0.5, applied)]).unwrap();
            let at = |e: f64| exact.mape_pct_at.iter().find(|p| p[0] == e).unwrap()[1];
            assert!(at(0.5) < 1e-9, "{exact:?}");
            assert!(at(0.0) > 1.0 && at(1.0) > 1.0, "{exact:?}");
        }
    }

    #[test]
    fn without_readings_there_is_nothing_to_say() {
        let models = vec![model(10.0, 1.0, &[None, None], 0.0, 0.0)];
        assert_eq!(of(&models), None);
        assert_eq!(of(&[]), None);
    }
}
