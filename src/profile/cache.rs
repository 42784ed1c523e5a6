//! The board's cache curve: what a byte costs to stream when the data cycled through is a given size,
//! swept at calibration from one buffer size to twice the last-level cache. It says how much slower a
//! model runs because its working set (weights and activations) has outgrown the caches, from
//! timings rather than from the nominal cache size: on a shared or virtual host the share of the
//! last-level cache a process really keeps is often a fraction of what sysfs reports, and the knee
//! is where the sweep puts it.
//!
//! Entry point: [`CacheCurve::extra_seconds_per_byte`].
use serde::{Deserialize, Serialize};

/// Points of (buffer bytes, seconds per byte streamed), by size; read costs only ever grow with
/// size (noise that says otherwise is flattened when the curve is made).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheCurve {
    pub points: Vec<[f64; 2]>,
}

impl CacheCurve {
    /// A curve from swept (bytes, bytes/s) pairs; points that are not finite and positive are left
    /// out. Each point's cost is at least that of every smaller buffer: a larger working set never
    /// streams faster, so a lower figure there is noise of the host.
    pub fn from_bandwidths(sweep: &[(u64, f64)]) -> CacheCurve {
        let mut pts: Vec<[f64; 2]> = sweep
            .iter()
            .filter(|(b, bw)| *b > 0 && bw.is_finite() && *bw > 0.0)
            .map(|&(b, bw)| [b as f64, 1.0 / bw])
            .collect();
        pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
        let mut worst: f64 = 0.0;
        for p in &mut pts {
            worst = worst.max(p[1]);
            p[1] = worst;
        }
        CacheCurve { points: pts }
    }

    /// A curve from several sweeps of the same sizes, each size at the best bandwidth any sweep
    /// saw. A sweep takes about a second, and a neighbour streaming through the shared caches in
    /// that second halves what it reads; the kernels were timed over minutes around it, so the
    /// board's own curve is the fastest one seen, as the probes keep the best of their runs.
    pub fn from_sweeps(sweeps: &[Vec<(u64, f64)>]) -> CacheCurve {
        let mut best: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
        for &(bytes, bw) in sweeps.iter().flatten() {
            if bw.is_finite() && bw > 0.0 {
                let b = best.entry(bytes).or_insert(bw);
                *b = b.max(bw);
            }
        }
        CacheCurve::from_bandwidths(&best.into_iter().collect::<Vec<_>>())
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Seconds per byte with a working set of `bytes`: linear in the log of the size between swept
    /// points, the end points' cost beyond them; None for an empty curve.
    pub fn seconds_per_byte(&self, bytes: f64) -> Option<f64> {
        let first = self.points.first()?;
        let last = self.points.last()?;
        if bytes <= first[0] {
            return Some(first[1]);
        }
        if bytes >= last[0] {
            return Some(last[1]);
        }
        let i = self.points.partition_point(|p| p[0] <= bytes);
        let (a, b) = (self.points.get(i.checked_sub(1)?)?, self.points.get(i)?);
        let t = (bytes.ln() - a[0].ln()) / (b[0].ln() - a[0].ln()).max(f64::MIN_POSITIVE);
        Some(a[1] + t * (b[1] - a[1]))
    }

    /// Extra seconds per byte a kernel pays for its bytes inside a run whose working set is
    /// `footprint` bytes, over what it paid when it was timed with a working set of `timed` bytes
    /// (0 for a kernel timed in a network whose cost was taken back to the hot cache): never
    /// negative, 0 for an empty curve.
    pub fn extra_seconds_per_byte(&self, footprint: f64, timed: f64) -> f64 {
        match (
            self.seconds_per_byte(footprint),
            self.seconds_per_byte(timed),
        ) {
            (Some(a), Some(b)) => (a - b).max(0.0),
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn cost_grows_past_the_knee_and_is_flat_beyond_the_sweep() {
        let c = CacheCurve::from_bandwidths(&[(MIB, 100e9), (8 * MIB, 50e9), (32 * MIB, 20e9)]);
        let hot = c.seconds_per_byte(0.5e6).unwrap();
        assert_eq!(hot, 1.0 / 100e9);
        assert_eq!(c.seconds_per_byte(1e9).unwrap(), 1.0 / 20e9);
        // Halfway in log size between 8 and 32 MiB is 16 MiB.
        let mid = c.seconds_per_byte(16.0 * MIB as f64).unwrap();
        assert!((mid - (1.0 / 50e9 + 1.0 / 20e9) / 2.0).abs() < 1e-15);
        assert_eq!(c.extra_seconds_per_byte(0.9e6, 0.0), 0.0);
        assert!((c.extra_seconds_per_byte(64e6, 0.0) - (1.0 / 20e9 - 1.0 / 100e9)).abs() < 1e-15);
        // Timed already with a larger working set than the run's: nothing extra.
        assert_eq!(c.extra_seconds_per_byte(2e6, 40e6), 0.0);
    }

    #[test]
    fn several_sweeps_keep_the_fastest_reading_of_each_size() {
        let quiet = vec![(MIB, 100e9), (8 * MIB, 90e9), (64 * MIB, 30e9)];
        // A neighbour streamed through the caches during the second sweep's small sizes.
        let busy = vec![
            (MIB, 50e9),
            (8 * MIB, 95e9),
            (64 * MIB, 15e9),
            (128 * MIB, f64::NAN),
        ];
        let c = CacheCurve::from_sweeps(&[busy, quiet.clone()]);
        assert_eq!(c.points.len(), 3);
        assert_eq!(c.points[0][1], 1.0 / 100e9);
        assert_eq!(c.points[1][1], 1.0 / 95e9);
        assert_eq!(c.points[2][1], 1.0 / 30e9);
        assert_eq!(
            CacheCurve::from_sweeps(std::slice::from_ref(&quiet)),
            CacheCurve::from_bandwidths(&quiet)
        );
        assert!(CacheCurve::from_sweeps(&[]).is_empty());
    }

    #[test]
    fn noise_that_makes_a_larger_buffer_faster_is_flattened_and_bad_points_dropped() {
        let c = CacheCurve::from_bandwidths(&[
            (4 * MIB, 40e9),
            (MIB, 100e9),
            (16 * MIB, 45e9),
            (2 * MIB, f64::NAN),
            (0, 10e9),
        ]);
        assert_eq!(c.points.len(), 3);
        assert_eq!(c.points[2][1], 1.0 / 40e9);
        assert!(c.points.windows(2).all(|w| w[0][1] <= w[1][1]));
        assert!(CacheCurve::default().seconds_per_byte(1e6).is_none());
        assert_eq!(CacheCurve::default().extra_seconds_per_byte(1e9, 0.0), 0.0);
    }
}
