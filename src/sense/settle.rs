//! Waiting for the sensed state to catch up with a change of load, before a measurement is taken.
use super::{Sampler, Snapshot};
use std::time::Duration;

/// Waits until the sampler has taken fresh samples and re-run its probes under the new conditions.
pub fn settle(sampler: &Sampler, seconds: f64) -> Snapshot {
    let start = sampler.snapshot();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let mut s = sampler.snapshot();
    // Probes are rate-limited: give the memory probe up to 5 s more to run once under the new load.
    // (Its callers measure in this process and time the reference workload themselves.)
    let t0 = std::time::Instant::now();
    let waiting = |s: &Snapshot| {
        s.probe.memory_runs <= start.probe.memory_runs + 1 && t0.elapsed() < Duration::from_secs(5)
    };
    while waiting(&s) {
        std::thread::sleep(Duration::from_millis(200));
        s = sampler.snapshot();
    }
    s
}
