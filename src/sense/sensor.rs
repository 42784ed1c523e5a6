//! The one interface every sensor implements ([`Sensor`]), and the [`Frame`] a sample writes into.
//!
//! A sensor is probed once (can it work on this board?), then sampled whenever it says it is due. A
//! sensor that cannot work answers with an [`Unavailable`] reason and remedy instead of failing.
use super::error::{SenseError, Unavailable};
use super::snapshot::{
    Cluster, CpuSeconds, CpuState, LoadAvg, PerfRates, PowerRail, Pressure, ThermalZone,
};
use std::time::{Duration, Instant};

/// What the sampler tells a sensor about this tick.
#[derive(Debug, Clone, Copy)]
pub struct SampleCtx {
    pub now: Instant,
    /// Share of one core this sensor may spend on average (only probes use it).
    pub cpu_share: f64,
}

pub trait Sensor: Send {
    /// Stable name, used in `augur_sensor_up{sensor}` and `sense.disable`.
    fn name(&self) -> &'static str;
    /// Called once before sampling. `Ok(detail)`: live, with an optional note on its source.
    fn probe(&mut self) -> Result<Option<String>, Unavailable>;
    /// Whether the sensor wants to be sampled at `now`; slow sensors and probes skip most ticks.
    fn due(&self, _now: Instant) -> bool {
        true
    }
    /// Reads the sensor into `frame`. [`SenseError::NoData`] means "nothing this time", not a failure.
    fn sample(&mut self, ctx: &SampleCtx, frame: &mut Frame) -> Result<(), SenseError>;
    /// Probes spend CPU on purpose and are spaced out by the budget.
    fn is_probe(&self) -> bool {
        false
    }
}

/// Busy and per-mode fractions over one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModeFractions {
    pub busy: f64,
    pub user: f64,
    pub system: f64,
    pub iowait: f64,
    pub irq: f64,
    pub steal: f64,
    pub idle: f64,
}

/// What `/proc/stat` and `/proc/self/stat` gave in one sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuTimeFrame {
    /// All CPUs together; None on the first sample, which has no interval yet.
    pub modes: Option<ModeFractions>,
    pub per_cpu_busy: Vec<(usize, f64)>,
    pub per_cpu_seconds: Vec<(usize, CpuSeconds)>,
    pub total_seconds: Option<CpuSeconds>,
    /// augur's own CPU use as a fraction of all CPUs.
    pub own_fraction: Option<f64>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,
}

/// The raw readings of one tick; fields of sensors that did not run this tick stay empty.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    /// Seconds since the sampler started.
    pub t: f64,
    pub cpus: Vec<CpuState>,
    pub clusters: Vec<Cluster>,
    pub cpu_time: Option<CpuTimeFrame>,
    pub loadavg: Option<LoadAvg>,
    pub pressure: Option<Pressure>,
    pub probe_compute_flops: Option<f64>,
    pub probe_memory_bytes_per_second: Option<f64>,
    pub probe_memory_buffer_bytes: Option<u64>,
    /// Live cache-curve points of this tick: (buffer bytes, seconds per byte streamed).
    pub probe_cache: Vec<(u64, f64)>,
    pub probe_reference_cpu_ms: Option<f64>,
    /// The reference workload's parallel reading: (threads, wall at threads over wall at one).
    pub probe_parallel_ratio: Option<(usize, f64)>,
    pub perf: Option<PerfRates>,
    pub memory_pmu_bytes_per_second: Option<f64>,
    pub thermal: Option<Vec<ThermalZone>>,
    pub power: Option<Vec<PowerRail>>,
}

/// Spacing for sensors that run slower than the tick: due when `next` has passed.
#[derive(Debug, Clone, Copy)]
pub struct Every {
    period: Duration,
    next: Option<Instant>,
}

impl Every {
    pub fn new(period: Duration) -> Self {
        Every { period, next: None }
    }

    pub fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|n| now >= n)
    }

    pub fn ran(&mut self, now: Instant) {
        self.next = Some(now + self.period);
    }

    /// Next run after a pause of `d` instead of the fixed period (the probes' budget).
    pub fn ran_for(&mut self, now: Instant, d: Duration) {
        self.next = Some(now + d);
    }
}

/// Stands in for a sensor switched off in the configuration.
pub struct Disabled(pub &'static str);

impl Sensor for Disabled {
    fn name(&self) -> &'static str {
        self.0
    }

    fn probe(&mut self) -> Result<Option<String>, Unavailable> {
        Err(Unavailable::new(
            "disabled in the configuration (sense.disable)",
            format!("remove \"{}\" from sense.disable", self.0),
        ))
    }

    fn sample(&mut self, _: &SampleCtx, _: &mut Frame) -> Result<(), SenseError> {
        Err(SenseError::NoData)
    }
}

impl Frame {
    /// Takes every reading `other` has, keeping ours where it has none; used to combine the
    /// per-sensor partial frames of one tick, and to carry slow sensors' last values forward.
    pub fn absorb(&mut self, other: Frame) {
        fn take<T>(mine: &mut Option<T>, theirs: Option<T>) {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
        if !other.cpus.is_empty() {
            self.cpus = other.cpus;
        }
        if !other.clusters.is_empty() {
            self.clusters = other.clusters;
        }
        take(&mut self.cpu_time, other.cpu_time);
        take(&mut self.loadavg, other.loadavg);
        take(&mut self.pressure, other.pressure);
        take(&mut self.probe_compute_flops, other.probe_compute_flops);
        take(
            &mut self.probe_reference_cpu_ms,
            other.probe_reference_cpu_ms,
        );
        take(&mut self.probe_parallel_ratio, other.probe_parallel_ratio);
        take(
            &mut self.probe_memory_bytes_per_second,
            other.probe_memory_bytes_per_second,
        );
        take(
            &mut self.probe_memory_buffer_bytes,
            other.probe_memory_buffer_bytes,
        );
        if !other.probe_cache.is_empty() {
            self.probe_cache = other.probe_cache;
        }
        take(&mut self.perf, other.perf);
        take(
            &mut self.memory_pmu_bytes_per_second,
            other.memory_pmu_bytes_per_second,
        );
        take(&mut self.thermal, other.thermal);
        take(&mut self.power, other.power);
    }
}
