//! [`Snapshot`]: the live state of the board as the predictor sees it, plain data all the way down so
//! that a what-if state can be written by hand or read from JSON (every field has a serde default).
//!
//! Units are base units: hertz, seconds, bytes, FLOP/s, watts, degrees Celsius; "fractions" are 0..=1
//! of all CPUs together unless said otherwise.
use serde::{Deserialize, Serialize};

/// One quantity seen three ways: the newest value, the mean over the window, and an EWMA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stat {
    pub latest: Option<f64>,
    pub mean: Option<f64>,
    pub ewma: Option<f64>,
}

/// Whether a sensor is live, and if not, why and what would fix it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SensorStatus {
    pub name: String,
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
    /// Where a live sensor reads from, or what part of it is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Cumulative CPU time of one CPU (or of all, `cpu: None`) by mode, seconds since boot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuSeconds {
    pub user: f64,
    pub nice: f64,
    pub system: f64,
    pub idle: f64,
    pub iowait: f64,
    pub irq: f64,
    pub softirq: f64,
    pub steal: f64,
}

/// One logical CPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuState {
    pub cpu: usize,
    /// Index into [`Snapshot::clusters`].
    pub cluster: Option<usize>,
    /// `cpu_capacity` (1024 = the biggest core), where the kernel exposes it.
    pub capacity: Option<u32>,
    pub frequency_hertz: Option<f64>,
    pub min_hertz: Option<f64>,
    pub max_hertz: Option<f64>,
    pub governor: Option<String>,
    /// Busy fraction of this CPU over the last sample interval.
    pub busy: Option<f64>,
    pub seconds: Option<CpuSeconds>,
}

/// A group of CPUs sharing a frequency domain (a big.LITTLE cluster).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cluster {
    pub id: usize,
    pub cpus: Vec<usize>,
    pub capacity: Option<u32>,
    pub frequency_hertz: Option<f64>,
    pub max_hertz: Option<f64>,
}

/// Fractions of all CPU time by mode; `busy` = 1 − idle − iowait. user includes nice, irq includes softirq.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Utilization {
    pub busy: Stat,
    pub user: Stat,
    pub system: Stat,
    pub iowait: Stat,
    pub irq: Stat,
    pub steal: Stat,
    pub idle: Stat,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
    pub runnable: Option<u64>,
    pub threads: Option<u64>,
}

/// One line of a PSI file; averages are percentages as the kernel gives them (0..=100).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_seconds: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Psi {
    pub some: PsiLine,
    /// Absent for `cpu` on kernels before 5.13.
    pub full: Option<PsiLine>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pressure {
    pub cpu: Option<Psi>,
    pub memory: Option<Psi>,
    pub io: Option<Psi>,
}

/// A point of the live cache curve: streaming a buffer of `bytes` cyclically costs
/// `seconds_per_byte`. A what-if state may leave either out; a point without both is not used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CachePoint {
    pub bytes: u64,
    pub seconds_per_byte: f64,
}

/// What the active probes measured: the rate a newly started job would get right now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Probes {
    /// FLOP/s of the compute probe.
    pub compute_flops: Stat,
    /// Best compute rate seen since start: the quiet-machine reference.
    pub compute_baseline_flops: Option<f64>,
    /// `compute_flops.ewma / compute_baseline_flops`.
    pub compute_ratio: Option<f64>,
    pub compute_runs: u64,
    /// Bytes/s of the memory probe.
    pub memory_bandwidth_bytes_per_second: Stat,
    pub memory_baseline_bytes_per_second: Option<f64>,
    /// `memory_bandwidth_bytes_per_second.ewma / memory_baseline_bytes_per_second`.
    pub memory_ratio: Option<f64>,
    pub memory_runs: u64,
    pub memory_buffer_bytes: Option<u64>,
    /// CPU milliseconds of one pass of the reference workload (see `workload::reference`).
    #[serde(default)]
    pub reference_cpu_ms: Stat,
    #[serde(default)]
    pub reference_runs: u64,
    /// Median of the last three reference runs: follows a change within three runs, where the EWMA
    /// (runs are seconds apart) would take a minute.
    #[serde(default)]
    pub reference_recent_cpu_ms: Option<f64>,
    /// The last reference runs, oldest first (at most [`REFERENCE_HISTORY`]): how long a change of
    /// speed has lasted, which says how far the next job will follow it (`predict::slowdown`).
    /// Written even when empty: a what-if patch may set it only if the live snapshot shows it.
    #[serde(default)]
    pub reference_history_cpu_ms: Vec<f64>,
    /// Threads of the parallel reading (the board's cores; none on a one-core board).
    #[serde(default)]
    pub reference_parallel_threads: Option<usize>,
    /// The last parallel readings, oldest first (at most [`REFERENCE_HISTORY`]): wall time of a
    /// pass at `reference_parallel_threads` over one at a single thread, taken back to back
    /// (`workload::reference::ReferenceWorkload::parallel_ratio`). Written even when empty.
    #[serde(default)]
    pub reference_parallel_ratios: Vec<f64>,
    /// The cache curve as the board streams it now, by size,
    /// each the median of the memory probe's last readings at that size. A neighbour that takes
    /// a share of the last-level cache moves its knee to smaller sizes than calibration's sweep
    /// found, and then a part of a model (its working set smaller) loses less than the whole does
    /// (`plan`). Written even when empty.
    #[serde(default)]
    pub cache_curve: Vec<CachePoint>,
    /// The latest reading's own noise, in logs (the variance of its median of passes timed back to
    /// back), set only where that reading was taken on demand just before the prediction (`augur
    /// eval`, a command's one-off reading), not by the sampler's probe, whose reading may be a
    /// minute old. A prediction then follows the reading as far as it stands out of that noise
    /// (`predict::slowdown::signal_share`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_noise_var: Option<f64>,
}

/// Reference runs a snapshot keeps: with runs seconds apart, about a minute of the board's speed.
pub const REFERENCE_HISTORY: usize = 24;

/// Hardware counters of one CPU: totals since the counters were opened, and rates over the last interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PerfCpu {
    pub cpu: usize,
    pub cycles_total: Option<u64>,
    pub instructions_total: Option<u64>,
    pub cache_references_total: Option<u64>,
    pub cache_misses_total: Option<u64>,
    pub llc_misses_total: Option<u64>,
    pub cycles_per_second: Option<f64>,
    pub instructions_per_second: Option<f64>,
    pub cache_misses_per_second: Option<f64>,
    pub llc_misses_per_second: Option<f64>,
}

/// Hardware-counter view of the machine, where the board has counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PerfRates {
    pub cpus: Vec<PerfCpu>,
    /// Instructions per cycle over all CPUs.
    pub ipc: Option<f64>,
    /// Cache misses / cache references over all CPUs.
    pub cache_miss_ratio: Option<f64>,
    pub llc_misses_per_second: Option<f64>,
    /// DRAM traffic from an uncore/DSU/DDR PMU.
    pub memory_bandwidth_bytes_per_second: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThermalZone {
    /// `thermal_zone0`, …
    pub zone: String,
    /// The zone's `type`, e.g. `cpu-thermal`.
    pub kind: String,
    pub celsius: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PowerRail {
    /// `hwmon`, `ina3221` or `rapl`.
    pub source: String,
    /// Rail or device name, e.g. `VDD_IN` or `package-0`.
    pub name: String,
    pub watts: f64,
}

/// What sensing itself costs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerCost {
    /// CPU time of the sampler threads since start, probes included.
    pub cpu_seconds_total: f64,
    /// Of which the probes.
    pub probe_cpu_seconds_total: f64,
    /// Share of one core used by the sampler over the window.
    pub cpu_share: Option<f64>,
    /// Ticks that ran later than one period behind schedule.
    pub late_ticks: u64,
}

/// The state of the board at one moment, with the recent past summarised.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    /// Unix time of the newest sample, seconds.
    pub timestamp: f64,
    /// Samples taken so far (0: nothing sampled yet).
    pub seq: u64,
    pub sample_hz: f64,
    pub window_seconds: f64,
    pub cpus: Vec<CpuState>,
    pub clusters: Vec<Cluster>,
    /// Mean over CPUs of current/max frequency; None when either is unknown.
    pub freq_ratio: Option<f64>,
    pub utilization: Utilization,
    /// CPU used by augur's own process, fraction of all CPUs (same scale as `utilization.busy`).
    pub own_cpu: Stat,
    pub cpu_seconds: Option<CpuSeconds>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,
    pub loadavg: Option<LoadAvg>,
    pub pressure: Pressure,
    pub probe: Probes,
    pub perf: Option<PerfRates>,
    pub thermal: Vec<ThermalZone>,
    pub power: Vec<PowerRail>,
    pub sensors: Vec<SensorStatus>,
    pub sampler: SamplerCost,
}

impl Snapshot {
    /// Busy fraction not caused by augur itself (windowed means), the load a prediction competes with.
    pub fn others_busy(&self) -> Option<f64> {
        let busy = self.utilization.busy.mean?;
        Some((busy - self.own_cpu.mean.unwrap_or(0.0)).max(0.0))
    }

    /// Whether the named sensor is live.
    pub fn sensor_up(&self, name: &str) -> bool {
        self.sensors.iter().any(|s| s.name == name && s.available)
    }

    pub fn sensor(&self, name: &str) -> Option<&SensorStatus> {
        self.sensors.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_what_if_snapshot_deserialises() {
        let s: Snapshot =
            serde_json::from_str(r#"{"freq_ratio": 0.5, "utilization": {"busy": {"mean": 0.8}}}"#)
                .unwrap();
        assert_eq!(s.freq_ratio, Some(0.5));
        assert_eq!(s.others_busy(), Some(0.8));
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
