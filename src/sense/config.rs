//! [`SenseConfig`]: the `[sense]` section of the configuration, with defaults for a real board.
use super::fs::Roots;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// How and what to sense. Every field has a default, so `[sense]` may be empty or absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SenseConfig {
    /// Root of sysfs; a fixture tree in tests.
    pub sysfs_root: PathBuf,
    /// Root of procfs; a fixture tree in tests.
    pub procfs_root: PathBuf,
    /// A recorded counter trace that the `perf` and `memory_pmu` sensors replay instead of opening
    /// perf events (format in [`super::counters`]); `None`: the kernel's perf events. With a fixture
    /// `sysfs_root`, a trace recorded on that board (e.g. `tests/fixtures/jetson/counters.txt`).
    pub counter_trace: Option<PathBuf>,
    /// Samples per second of the fast sensors (CPU time, frequency, PSI, counters).
    pub sample_hz: f64,
    /// Samples per second of the slow sensors (thermal zones, power rails), whose reads can cross I2C.
    pub slow_sample_hz: f64,
    /// Frames kept in the ring buffer.
    pub ring_len: usize,
    /// Span of the windowed means, seconds.
    pub window_seconds: f64,
    /// Weight of the newest value in the EWMAs (0 < alpha ≤ 1), per sample (per run for probes).
    pub ewma_alpha: f64,
    /// A passive sensor whose sample takes longer than this is dropped and reported as timed out
    /// (probes, whose runs stretch with contention, get 10 s).
    pub sample_timeout_ms: u64,
    /// CPU share of one core that the sampler as a whole (passive sensors and probes) may use; the
    /// probes are spaced out (aiming at 90 % of it) so that the total stays under it.
    pub probe_budget: f64,
    /// CPU time one compute-probe run is sized for (once, at start); its wall time stretches with
    /// contention, which is what it measures. Must exceed the head start the scheduler gives a
    /// task waking from sleep (a few slices, ~10 ms), or the probe never sees contention.
    pub probe_compute_seconds: f64,
    /// CPU time one memory-probe run is sized for (once, at start, from a warm-up pass).
    pub probe_memory_seconds: f64,
    /// Size of the buffer the memory probe streams through; `None`: twice the last-level cache
    /// (8 MiB if unknown), so that each run reads from DRAM.
    pub probe_memory_buffer_bytes: Option<u64>,
    /// Sensors not to start, by name (`cpufreq`, `cpu_time`, `loadavg`, `pressure`, `perf`,
    /// `memory_pmu`, `probe_compute`, `probe_memory`, `probe_reference`, `thermal`, `power`).
    pub disable: Vec<String>,
}

impl Default for SenseConfig {
    fn default() -> Self {
        SenseConfig {
            sysfs_root: PathBuf::from("/sys"),
            procfs_root: PathBuf::from("/proc"),
            counter_trace: None,
            sample_hz: 10.0,
            slow_sample_hz: 1.0,
            ring_len: 600,
            window_seconds: 5.0,
            ewma_alpha: 0.2,
            sample_timeout_ms: 500,
            probe_budget: 0.01,
            probe_compute_seconds: 0.02,
            probe_memory_seconds: 0.02,
            probe_memory_buffer_bytes: None,
            disable: Vec::new(),
        }
    }
}

impl SenseConfig {
    pub fn roots(&self) -> Roots {
        Roots::new(&self.sysfs_root, &self.procfs_root)
    }

    /// The fast sampling period; a nonsensical rate falls back to the default 10 Hz.
    pub fn period(&self) -> Duration {
        period_of(self.sample_hz, 10.0)
    }

    pub fn slow_period(&self) -> Duration {
        period_of(self.slow_sample_hz, 1.0)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.sample_timeout_ms.max(1))
    }

    pub fn is_disabled(&self, sensor: &str) -> bool {
        self.disable.iter().any(|d| d == sensor)
    }

    /// For calibration and evaluation runs, which measure in their own process: they time the
    /// reference workload themselves between measurements, because a sampler running it beside a
    /// measurement would time the measurement's own cache and memory traffic (on this VM a big
    /// model running on the other core made it look 15–50 % slower).
    pub fn for_measuring() -> Self {
        SenseConfig {
            disable: vec!["probe_reference".to_string()],
            ..SenseConfig::default()
        }
    }

    pub(crate) fn alpha(&self) -> f64 {
        if self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0 {
            self.ewma_alpha
        } else {
            0.2
        }
    }
}

fn period_of(hz: f64, fallback: f64) -> Duration {
    let hz = if hz.is_finite() && hz > 0.0 && hz <= 1000.0 {
        hz
    } else {
        fallback
    };
    Duration::from_secs_f64(1.0 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_is_default_and_typos_are_rejected() {
        let c: SenseConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, SenseConfig::default());
        assert_eq!(c.period(), Duration::from_millis(100));
        assert!(serde_json::from_str::<SenseConfig>(r#"{"sample_hx": 5}"#).is_err());
        let c: SenseConfig = serde_json::from_str(r#"{"sample_hz": 0}"#).unwrap();
        assert_eq!(c.period(), Duration::from_millis(100));
    }
}
