//! What sensing costs: runs a [`Sampler`] for a while and reads the CPU time of its threads from
//! `/proc/self/task/*/schedstat` (nanoseconds; `stat` ticks as a fallback), independently of the
//! sampler's own accounting. Backs the hidden `augur state --overhead SECS`.
use super::config::SenseConfig;
use super::fs::{Roots, read_string};
use super::sampler::Sampler;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct OverheadReport {
    pub seconds: f64,
    pub sample_hz: f64,
    /// CPU time of the `augur-sense*` threads over the measurement, from procfs.
    pub cpu_seconds: f64,
    /// `cpu_seconds / seconds`: the share of one core.
    pub share_of_one_core: f64,
    /// The sampler's own view of the same over its window, for comparison.
    pub self_reported_share: Option<f64>,
    pub samples: u64,
    pub compute_probe_runs: u64,
    pub memory_probe_runs: u64,
    pub live_sensors: Vec<String>,
}

/// CPU seconds so far of this process's threads whose name starts with `prefix`.
pub(crate) fn threads_cpu_seconds(roots: &Roots, prefix: &str) -> f64 {
    let Ok(rd) = std::fs::read_dir(roots.proc("self/task")) else {
        return 0.0;
    };
    let tck = 100.0;
    rd.filter_map(|e| e.ok())
        .filter(|e| read_string(&e.path().join("comm")).is_ok_and(|c| c.trim().starts_with(prefix)))
        .map(|e| {
            let from_schedstat = read_string(&e.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_ascii_whitespace().next()?.parse::<f64>().ok())
                .map(|ns| ns / 1e9);
            from_schedstat.unwrap_or_else(|| {
                read_string(&e.path().join("stat")).ok().map_or(0.0, |s| {
                    let f: Vec<&str> = s
                        .rsplit_once(')')
                        .map_or("", |(_, r)| r)
                        .split_ascii_whitespace()
                        .collect();
                    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                    (t(11) + t(12)) / tck
                })
            })
        })
        .sum()
}

/// Samples for `warmup`, then measures for `duration`.
pub fn measure(cfg: SenseConfig, warmup: Duration, duration: Duration) -> OverheadReport {
    let roots = cfg.roots();
    let sampler = Sampler::start(cfg);
    std::thread::sleep(warmup);
    let (t0, c0) = (Instant::now(), threads_cpu_seconds(&roots, "augur-sense"));
    std::thread::sleep(duration);
    let (secs, c1) = (
        t0.elapsed().as_secs_f64(),
        threads_cpu_seconds(&roots, "augur-sense"),
    );
    let snap = sampler.snapshot();
    sampler.stop();
    OverheadReport {
        seconds: secs,
        sample_hz: snap.sample_hz,
        cpu_seconds: c1 - c0,
        share_of_one_core: (c1 - c0) / secs,
        self_reported_share: snap.sampler.cpu_share,
        samples: snap.seq,
        compute_probe_runs: snap.probe.compute_runs,
        memory_probe_runs: snap.probe.memory_runs,
        live_sensors: snap
            .sensors
            .iter()
            .filter(|s| s.available)
            .map(|s| s.name.clone())
            .collect(),
    }
}
