//! Order statistics: the one median/percentile helper every stage uses, instead of sorting by hand.

/// Quantile `q` of sorted, non-empty data, interpolated linearly between order statistics (numpy's
/// default, so figures compare with what a Python backend reports); NaN when `sorted` is empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The finite values of `v`, sorted.
pub fn sorted_finite(v: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut s: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    s
}

/// Quantile `q` of the finite values of `v` (in any order); None when there are none.
pub fn percentile(v: impl IntoIterator<Item = f64>, q: f64) -> Option<f64> {
    let s = sorted_finite(v);
    (!s.is_empty()).then(|| quantile(&s, q))
}

/// Median of the finite values of `v` (0 when there are none).
pub fn median(v: &[f64]) -> f64 {
    percentile(v.iter().copied(), 0.5).unwrap_or(0.0)
}

/// Mean of `v` without its lowest and highest `trim` shares (NaN when `v` holds no finite value).
pub fn trimmed_mean(v: Vec<f64>, trim: f64) -> f64 {
    let v = sorted_finite(v);
    if v.is_empty() {
        return f64::NAN;
    }
    let cut = ((v.len() as f64 * trim.clamp(0.0, 0.49)).floor() as usize).min((v.len() - 1) / 2);
    let kept = &v[cut..v.len() - cut];
    kept.iter().sum::<f64>() / kept.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_mean_drops_the_tails() {
        let v: Vec<f64> = (1..=10).map(f64::from).chain([1000.0]).collect();
        // 11 values, one dropped at each end: 2..=10 → mean 6.
        assert_eq!(trimmed_mean(v, 0.1), 6.0);
        assert_eq!(trimmed_mean(vec![3.0], 0.4), 3.0);
        assert!(trimmed_mean(vec![f64::NAN], 0.1).is_nan());
    }

    #[test]
    fn medians_and_percentiles_skip_what_is_not_a_number() {
        assert_eq!(median(&[3.0, f64::NAN, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(percentile([f64::INFINITY], 0.5), None);
        assert_eq!(percentile((1..=11).map(f64::from), 0.9), Some(10.0));
        assert_eq!(percentile([5.0, 1.0], 0.0), Some(1.0));
    }
}
