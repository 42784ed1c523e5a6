//! Live sensing: what this board is doing right now — CPU frequency, utilisation, pressure,
//! hardware counters or active probes, temperatures and power — sampled in the background and
//! summarised for the predictor.
//!
//! # Use
//!
//! ```no_run
//! use augur::sense::{SenseConfig, Sampler};
//! let sampler = Sampler::start(SenseConfig::default());          // never blocks, never fails
//! let snap = sampler.snapshot();                                   // cheap clone of the newest state
//! let others = snap.others_busy();                                 // busy minus augur's own threads
//! let slowdown = snap.probe.compute_ratio;                         // probe EWMA / idle baseline
//! # let _ = (others, slowdown);
//! ```
//!
//! - [`SenseConfig`] (`[sense]` in the config; serde, every field defaulted): `sysfs_root`,
//!   `procfs_root`, `counter_trace` (a recorded trace the `perf` and `memory_pmu` sensors replay
//!   instead of perf events; see [`counters`]), `sample_hz` (10), `slow_sample_hz` (1),
//!   `ring_len`, `window_seconds`, `ewma_alpha`, `sample_timeout_ms` (passive sensors; probes get
//!   10 s), `probe_budget` (0.01 of one core, for the sampler as a whole, probes included),
//!   `probe_compute_seconds` and
//!   `probe_memory_seconds` (CPU time of one probe run, 0.02), `probe_memory_buffer_bytes`
//!   (default 2 × LLC), `disable` (sensor names).
//! - [`Sampler::start`]`(cfg) -> Sampler` and [`Sampler::start_with`]`(cfg, Box<dyn Fn(&Snapshot) + Send>)`
//!   (the hook runs on the sampling thread after each sample); [`Sampler::snapshot`] /
//!   [`Sampler::snapshot_arc`] (a short lock around an `Arc` swap, never held during sampling),
//!   [`Sampler::sensors`], [`Sampler::wait_for`], [`Sampler::stop`] (also on drop; joins).
//! - [`Snapshot`]: plain data with serde defaults, so a what-if state can be built by hand (see
//!   `docs/state.md` for the JSON schema).
//! - [`read_once`]`(&cfg) -> Snapshot`: a one-off state (a few samples ~100 ms apart, probes run once,
//!   the reference workload four times).
//! - [`settle()`]`(&sampler, seconds) -> Snapshot`: the state once the sampler has caught up with a
//!   change of load (fresh samples, the memory probe re-run).
//! - [`energy::EnergyMeter`]: joules over an interval from the board's energy counter or power rail
//!   (or why there is none); [`energy::Meter`] is its interface.
//! - [`metrics::record`]`(&Snapshot)`: Prometheus metrics through the `metrics` facade.
//! - [`probe::compute_rate`]`() -> f64` (FLOP/s) and [`probe::memory_bandwidth`]`() -> f64`
//!   (bytes/s): one-shot probes for a roofline fallback.
//! - [`Sensor`]: the one interface of every sensor; [`sensors`] builds them from a config.
//!
//! Sensors: `cpufreq`, `cpu_time`, `loadavg`, `pressure`, `perf`, `memory_pmu`, `probe_compute`,
//! `probe_memory`, `thermal`, `power`. One that cannot work on this board is listed with
//! `available: false`, a reason and a remedy; it never stops the others or start-up.
pub mod config;
pub mod counters;
pub mod cpufreq;
pub mod cputime;
pub mod energy;
pub mod error;
pub mod fs;
pub mod loadavg;
pub mod metrics;
pub mod overhead;
pub mod perf;
pub mod pmu;
pub mod power;
pub mod probe;
pub mod psi;
pub mod sampler;
pub mod sensor;
pub mod settle;
pub mod snapshot;
pub mod state;
pub mod thermal;
pub mod what_if;

pub use config::SenseConfig;
pub use error::{SenseError, Unavailable};
pub use sampler::{OnSample, Sampler};
pub use sensor::{Frame, SampleCtx, Sensor};
pub use settle::settle;
pub use snapshot::{SensorStatus, Snapshot, Stat};

use std::time::{Duration, Instant};

/// Every sensor for this configuration, in sampling order; disabled ones stand in as [`sensor::Disabled`].
pub fn sensors(cfg: &SenseConfig) -> Vec<Box<dyn Sensor>> {
    let roots = cfg.roots();
    let counters = counters::from_config(cfg);
    let slow = cfg.slow_period();
    let fast = cfg.period();
    let llc = probe::llc_bytes(&roots);
    let buffer = cfg
        .probe_memory_buffer_bytes
        .unwrap_or_else(|| probe::memory_buffer_bytes(llc));
    let seconds = |s: f64| {
        Duration::from_secs_f64(if s.is_finite() {
            s.clamp(1e-4, 1.0)
        } else {
            0.02
        })
    };
    let all: Vec<Box<dyn Sensor>> = vec![
        Box::new(cpufreq::CpuFreqSensor::new(roots.clone(), slow)),
        Box::new(cputime::CpuTimeSensor::new(roots.clone())),
        Box::new(loadavg::LoadAvgSensor::new(roots.clone())),
        Box::new(psi::PsiSensor::new(roots.clone())),
        Box::new(perf::PerfSensor::with_source(
            roots.clone(),
            counters.clone(),
        )),
        Box::new(pmu::MemoryPmuSensor::with_source(roots.clone(), counters)),
        Box::new(probe::ProbeSensor::compute(
            seconds(cfg.probe_compute_seconds),
            fast,
        )),
        Box::new(probe::ProbeSensor::memory(
            buffer,
            seconds(cfg.probe_memory_seconds),
            fast,
        )),
        Box::new(probe::ProbeSensor::reference(fast, parallel_threads())),
        Box::new(thermal::ThermalSensor::new(roots.clone(), slow)),
        Box::new(power::PowerSensor::new(roots, slow)),
    ];
    all.into_iter()
        .map(|s| {
            if cfg.is_disabled(s.name()) {
                Box::new(sensor::Disabled(s.name())) as Box<dyn Sensor>
            } else {
                s
            }
        })
        .collect()
}

/// A one-off state for the command line: samples until utilisation has an interval and each live
/// probe has run once (at most ~5 s), then stops; the reference workload is then timed again here
/// until the snapshot holds [`ONE_OFF_READINGS`] readings.
pub fn read_once(cfg: &SenseConfig) -> Snapshot {
    let mut snap = sample_once(cfg);
    if snap.sensor_up("probe_reference") {
        more_readings(&mut snap);
    }
    snap
}

/// Reference readings a one-off state holds. The sampler's probe runs about once a minute on its
/// budget, so a command that asks once would hold one reading, too few to tell a spell from a
/// blip (see `predict::slowdown::persistence`); taken back to back (~0.5 s more), they say whether
/// the board's speed holds over the second the command runs in.
const ONE_OFF_READINGS: usize = 4;

fn more_readings(snap: &mut Snapshot) {
    let p = &mut snap.probe;
    let parallel = parallel_threads();
    let enough = |p: &snapshot::Probes| {
        p.reference_history_cpu_ms.len() >= ONE_OFF_READINGS
            && (parallel < 2 || p.reference_parallel_ratios.len() >= ONE_OFF_READINGS)
    };
    if enough(p) {
        return;
    }
    let Ok(w) = crate::workload::reference::ReferenceWorkload::new() else {
        return;
    };
    let mut taken = Vec::with_capacity(ONE_OFF_READINGS);
    while !enough(p) {
        let Ok(ms) = w.median_cpu_ms(1) else { return };
        taken.push(ms);
        p.reference_history_cpu_ms.push(ms);
        p.reference_runs += 1;
        if parallel > 1 {
            let Ok(ratio) = w.parallel_ratio(parallel) else {
                return;
            };
            p.reference_parallel_threads = Some(parallel);
            p.reference_parallel_ratios.push(ratio);
        }
    }
    p.reference_recent_cpu_ms =
        crate::workload::reference::recent(p.reference_history_cpu_ms.iter().copied());
    // The readings just taken, a second apart at most, are passes at one speed: their scatter is
    // the noise of the recent median (of three) the prediction follows.
    let recent = taken.len().min(3);
    if taken.len() >= 2 {
        p.reference_noise_var = Some(
            crate::workload::reference::median_noise_var(&taken) * taken.len() as f64
                / recent as f64,
        );
    }
}

/// Threads of the parallel reading: every core the process may use (under 2: none taken).
fn parallel_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn sample_once(cfg: &SenseConfig) -> Snapshot {
    let sampler = Sampler::start(cfg.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seq = 1;
    loop {
        let snap = sampler.wait_for(seq, deadline.saturating_duration_since(Instant::now()));
        let waiting = |name: &str, runs: u64| snap.sensor_up(name) && runs == 0;
        let ready = snap.seq >= 5
            && !waiting("probe_compute", snap.probe.compute_runs)
            && !waiting("probe_memory", snap.probe.memory_runs)
            && !waiting("probe_reference", snap.probe.reference_runs);
        if ready || Instant::now() >= deadline {
            return (*snap).clone();
        }
        seq = snap.seq + 1;
    }
}
