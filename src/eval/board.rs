//! This board as the evaluation's [`Bench`]: the state from the sensors (with the board's speed
//! from the reference workload timed just before), and each model measured as a job that keeps
//! running.
use super::{Bench, EvalError};
use crate::runtime::{Prepared, RunSpec};
use crate::sense::settle;
use crate::sense::{Sampler, SenseConfig, Snapshot};
use crate::workload::reference::SpeedNow;
use std::time::{Duration, Instant};

pub struct Board {
    sampler: Sampler,
    /// The board's speed against its calibration (None: the profile has no reference timing).
    speed: Option<SpeedNow>,
    prepared: Vec<Prepared>,
    window_s: f64,
    runs: usize,
    threads: usize,
}

impl Board {
    /// Starts the sensors; `prepared[i]` is subject `i`, measured for at least `window_s` seconds
    /// and `runs` runs with `threads` threads. `speed`: time the reference workload before each
    /// measurement (when the profile has a reference timing to compare with), and with more than
    /// one thread what that many threads give now.
    pub fn new(
        prepared: Vec<Prepared>,
        window_s: f64,
        runs: usize,
        threads: usize,
        speed: bool,
    ) -> Result<Board, EvalError> {
        Ok(Board {
            sampler: Sampler::start(SenseConfig::for_measuring()),
            speed: speed
                .then(|| {
                    SpeedNow::new(crate::sense::snapshot::REFERENCE_HISTORY)
                        .map(|s| s.with_parallel(threads))
                })
                .transpose()?,
            prepared,
            window_s,
            runs,
            threads,
        })
    }

    /// Waits for the sensors to see the board as it is now (after a load started or stopped):
    /// fresh samples, then the sampler's window spent busy timing the reference workload, so the
    /// state's means hold this process running (as it will while measuring), not idle seconds.
    pub fn settle(&mut self) -> Result<(), EvalError> {
        settle(&self.sampler, 2.0);
        let busy = SenseConfig::for_measuring().window_seconds.max(2.0);
        let start = Instant::now();
        match &mut self.speed {
            Some(sp) => {
                while start.elapsed().as_secs_f64() < busy {
                    sp.read()?;
                }
            }
            None => std::thread::sleep(Duration::from_secs_f64(busy)),
        }
        Ok(())
    }
}

impl Bench for Board {
    fn state(&mut self) -> Result<Snapshot, EvalError> {
        let mut snap = self.sampler.snapshot();
        if let Some(sp) = &mut self.speed {
            sp.read()?;
            // The latest reading is the one taken just now; the history says how long the speed
            // it shows has lasted.
            snap.probe.reference_recent_cpu_ms = sp.latest();
            snap.probe.reference_history_cpu_ms = sp.history();
            snap.probe.reference_noise_var = sp.noise_var();
            if let Some((threads, ratios)) = sp.parallel() {
                snap.probe.reference_parallel_threads = Some(threads);
                snap.probe.reference_parallel_ratios = ratios;
            }
        }
        Ok(snap)
    }

    /// The model's latency as a job that keeps running: 150 ms of warm-up first, because a thread
    /// that has slept gets the CPU first when it wakes and a short burst would not see a neighbour
    /// at all; then runs for at least the window (and the runs), reporting the mean with the
    /// slowest and fastest 10 % dropped. Under time-sharing a thread's per-run latency swings as
    /// the load balancer moves threads every few hundred milliseconds; over a window of seconds
    /// the mean is the latency a scheduler plans with, and the trim drops spikes.
    fn measure(&mut self, i: usize) -> Result<f64, EvalError> {
        let Some(m) = self.prepared.get(i) else {
            return Ok(f64::NAN);
        };
        let burn = RunSpec {
            threads: self.threads,
            warmup: 0,
            warmup_seconds: 0.0,
            runs: 10_000,
            max_seconds: 0.15,
        };
        m.time(&burn)?;
        let mut samples: Vec<f64> = Vec::new();
        let start = Instant::now();
        while samples.len() < self.runs || start.elapsed().as_secs_f64() < self.window_s {
            let spec = RunSpec {
                threads: self.threads,
                warmup: 0,
                warmup_seconds: 0.0,
                runs: self.runs.max(1),
                max_seconds: self.window_s,
            };
            samples.extend(m.time(&spec)?.samples_ms);
            if start.elapsed().as_secs_f64() > 20.0 * self.window_s.max(1.0) {
                break;
            }
        }
        Ok(crate::util::trimmed_mean(samples, 0.1))
    }
}
