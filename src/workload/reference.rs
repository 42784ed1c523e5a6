//! The reference workload: a fixed set of small generated networks run by tract, whose CPU time is
//! taken all through calibration and again whenever a prediction should know how fast the board runs
//! now. The ratio of the two is the board's speed relative to its calibration: on a board with DVFS it
//! follows the clock, on a shared host it follows neighbours on the caches and the memory bus — which
//! a compute probe's register loop does not see (on this VM it stayed flat while models drifted 4 %).
//!
//! CPU time of the timing thread, not wall time: time-sharing is the CPU-share term's business and
//! must not be counted twice.
use crate::model::generate::synthetic;
use crate::runtime::{Prepared, RunSpec, RuntimeError, TractBackend};
use crate::util::clock::thread_cpu_seconds;

/// Seed and indices of the networks: one inverted-residual network with squeeze-excitation, one of
/// fire modules and two of channel shuffles (1–12 ms each here, ~21 ms a pass — small enough for the
/// sampler to run within its CPU budget).
const SEED: u64 = 2024;
const NETWORKS: [usize; 4] = [3, 4, 5, 12];

/// Names what the workload is, so a profile timed on another one is not compared with it.
pub fn identity() -> String {
    format!("synthetic/{SEED}/{NETWORKS:?}/v1")
}

/// The workload's networks as graphs: what a profile is asked about them (the thread scaling it
/// expects, beside what the parallel reading measures).
pub fn graphs() -> Result<Vec<crate::model::Graph>, crate::model::builder::BuildError> {
    NETWORKS.iter().map(|&i| synthetic(SEED, i)).collect()
}

pub struct ReferenceWorkload {
    nets: Vec<Prepared>,
}

impl ReferenceWorkload {
    /// Builds the networks and runs them three times over: the first runs of a plan allocate and
    /// fault their pages in, and are slower by a margin a speed ratio must not carry.
    pub fn new() -> Result<ReferenceWorkload, RuntimeError> {
        let backend = TractBackend::new();
        let mut nets = Vec::new();
        for i in NETWORKS {
            let load = |e: String| RuntimeError::Load {
                model: format!("reference network {i}"),
                detail: e,
            };
            let g = synthetic(SEED, i).map_err(|e| load(e.to_string()))?;
            let bytes = crate::model::export::to_onnx_bytes(&g).map_err(|e| load(e.to_string()))?;
            nets.push(backend.prepare(&bytes)?);
        }
        let w = ReferenceWorkload { nets };
        for _ in 0..3 {
            w.pass_cpu_ms()?;
        }
        Ok(w)
    }

    /// CPU milliseconds of one pass over the networks.
    pub fn pass_cpu_ms(&self) -> Result<f64, RuntimeError> {
        let c0 = thread_cpu_seconds();
        for n in &self.nets {
            n.time(&once())?;
        }
        Ok((thread_cpu_seconds() - c0) * 1e3)
    }

    /// Median CPU milliseconds of `passes` passes, after 150 ms of passes not counted: on this VM a
    /// thread that has slept runs its first tens of milliseconds up to 25 % slower (the host lends
    /// an idle core's caches to other tenants), which a job that keeps running does not see.
    pub fn median_cpu_ms(&self, passes: usize) -> Result<f64, RuntimeError> {
        Ok(self.read(passes)?.cpu_ms)
    }

    /// One reading: [`Self::median_cpu_ms`] and the share of the wall clock the thread ran meanwhile.
    pub fn read(&self, passes: usize) -> Result<Reading, RuntimeError> {
        let wall = std::time::Instant::now();
        let c0 = thread_cpu_seconds();
        while wall.elapsed() < std::time::Duration::from_millis(150) {
            self.pass_cpu_ms()?;
        }
        let v = (0..passes.max(1))
            .map(|_| self.pass_cpu_ms())
            .collect::<Result<Vec<f64>, _>>()?;
        let share = (thread_cpu_seconds() - c0) / wall.elapsed().as_secs_f64().max(1e-9);
        Ok(Reading {
            cpu_ms: crate::util::median(&v),
            share: share.clamp(0.0, 1.0),
            noise_var: median_noise_var(&v),
        })
    }
}

impl ReferenceWorkload {
    /// Wall milliseconds of one pass at `threads` over one at a single thread, the two taken back
    /// to back three times after 150 ms of both (the pool's threads have slept too), with the
    /// median of the three: what extra threads give now against what they gave on a quiet board
    /// (the profile's thread scaling says that). On a shared host the other cores are not the
    /// board's alone (stolen by the hypervisor, or shared with another tenant), and a one-thread
    /// reading, timed by CPU time on one core, sees none of that.
    pub fn parallel_ratio(&self, threads: usize) -> Result<f64, RuntimeError> {
        let threads = threads.max(2);
        let wall = std::time::Instant::now();
        while wall.elapsed() < std::time::Duration::from_millis(150) {
            self.pass_wall_ms(threads)?;
            self.pass_wall_ms(1)?;
        }
        let mut ratios = Vec::with_capacity(3);
        for _ in 0..3 {
            let one = self.pass_wall_ms(1)?;
            let many = self.pass_wall_ms(threads)?;
            if one > 0.0 {
                ratios.push(many / one);
            }
        }
        Ok(crate::util::median(&ratios))
    }

    /// Wall milliseconds of the networks' runs, one each, at `threads`.
    fn pass_wall_ms(&self, threads: usize) -> Result<f64, RuntimeError> {
        let spec = RunSpec { threads, ..once() };
        let mut ms = 0.0;
        for n in &self.nets {
            ms += n.time(&spec)?.samples_ms.iter().sum::<f64>();
        }
        Ok(ms)
    }
}

/// One timing of the workload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// Median CPU milliseconds of a pass.
    pub cpu_ms: f64,
    /// CPU time over wall time while timing (1: the thread had a core to itself; 0.5: it shared one).
    pub share: f64,
    /// The variance, in logs, of the median as an estimate of the speed of that moment
    /// ([`median_noise_var`] of the passes).
    pub noise_var: f64,
}

/// The variance, in logs, of the median of `ms` (passes timed back to back, so at one speed): what
/// the reading's own noise leaves in it. From the passes' median absolute deviation (robust to a
/// pass a neighbour hit), as a normal's σ², times π/2 over their number (the median's variance);
/// 0 with fewer than two passes.
pub fn median_noise_var(ms: &[f64]) -> f64 {
    let logs: Vec<f64> = ms
        .iter()
        .filter(|v| v.is_finite() && **v > 0.0)
        .map(|v| v.ln())
        .collect();
    if logs.len() < 2 {
        return 0.0;
    }
    let mid = crate::util::median(&logs);
    let dev: Vec<f64> = logs.iter().map(|x| (x - mid).abs()).collect();
    let sigma = 1.4826 * crate::util::median(&dev);
    std::f64::consts::FRAC_PI_2 * sigma * sigma / logs.len() as f64
}

/// The board's speed now, for a command that measures in this process and so keeps the sampler's
/// reference probe off (see `SenseConfig::for_measuring`): the workload timed on demand, just before
/// a measurement, and put in the snapshot a prediction uses, where the sampler's would be in a daemon.
///
/// The latest reading alone, of five passes, not a median of several readings: beside a memory
/// streamer this VM's speed switches between regimes lasting about ten seconds, and a median over
/// earlier readings lags a regime behind. Timing a job of other generated networks right after each
/// reading (`examples/speed_trace.rs`, 90 s), the fresh reading foretold it with MAPE 1.9 % against
/// 2.0 % for the median of the last three, 3.6 % with no speed term; on the quiet board the two were
/// 1.3 % and 1.1 %.
pub struct SpeedNow {
    workload: ReferenceWorkload,
    history: std::collections::VecDeque<f64>,
    /// The latest reading's own noise ([`Reading::noise_var`]).
    noise_var: Option<f64>,
    keep: usize,
    /// Threads of the parallel reading, and its readings ([`ReferenceWorkload::parallel_ratio`]).
    parallel: Option<(usize, std::collections::VecDeque<f64>)>,
}

impl SpeedNow {
    /// Keeps the last `keep` readings.
    pub fn new(keep: usize) -> Result<SpeedNow, RuntimeError> {
        Ok(SpeedNow {
            workload: ReferenceWorkload::new()?,
            history: std::collections::VecDeque::new(),
            noise_var: None,
            keep: keep.max(1),
            parallel: None,
        })
    }

    /// Also reads what `threads` threads give (for a job of more than one thread).
    pub fn with_parallel(mut self, threads: usize) -> SpeedNow {
        self.parallel = (threads > 1).then(|| (threads, std::collections::VecDeque::new()));
        self
    }

    /// Times the workload once more.
    pub fn read(&mut self) -> Result<(), RuntimeError> {
        let r = self.workload.read(5)?;
        self.history.push_back(r.cpu_ms);
        self.noise_var = Some(r.noise_var);
        while self.history.len() > self.keep {
            self.history.pop_front();
        }
        if let Some((threads, h)) = &mut self.parallel {
            h.push_back(self.workload.parallel_ratio(*threads)?);
            while h.len() > self.keep {
                h.pop_front();
            }
        }
        Ok(())
    }

    /// The parallel reading's threads and its readings, oldest first (None without one).
    pub fn parallel(&self) -> Option<(usize, Vec<f64>)> {
        self.parallel
            .as_ref()
            .map(|(t, h)| (*t, h.iter().copied().collect()))
    }

    /// The latest reading, CPU milliseconds of a pass (none before the first [`Self::read`]).
    pub fn latest(&self) -> Option<f64> {
        self.history.back().copied()
    }

    /// The latest reading's own noise, in logs (none before the first [`Self::read`]): a snapshot's
    /// `probe.reference_noise_var`.
    pub fn noise_var(&self) -> Option<f64> {
        self.noise_var
    }

    /// The readings kept, oldest first: what the sampler's reference probe leaves in a snapshot's
    /// `probe.reference_history_cpu_ms`.
    pub fn history(&self) -> Vec<f64> {
        self.history.iter().copied().collect()
    }
}

/// The median of the last three readings of `history` (oldest first): it follows a change within
/// three readings, where an average over minutes would lag, and one odd reading does not move it.
pub fn recent(history: impl DoubleEndedIterator<Item = f64>) -> Option<f64> {
    let last: Vec<f64> = history.rev().take(3).collect();
    crate::util::percentile(last, 0.5)
}

fn once() -> RunSpec {
    RunSpec {
        threads: 1,
        warmup: 0,
        warmup_seconds: 0.0,
        runs: 1,
        max_seconds: 10.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_noise_of_a_reading_is_its_median_s_variance() {
        // Passes all alike: no noise; one pass: none to tell.
        assert_eq!(median_noise_var(&[20.0; 5]), 0.0);
        assert_eq!(median_noise_var(&[20.0]), 0.0);
        // ±5 % about 20 ms: σ from the median absolute deviation (0.05 in logs, near enough),
        // × 1.4826, squared, × π/2 over five passes; one pass a neighbour hit does not move it.
        let v = median_noise_var(&[19.0, 21.0, 20.0, 19.0, 21.0]);
        let dev = (21.0f64 / 20.0).ln();
        let want = std::f64::consts::FRAC_PI_2 * (1.4826 * dev).powi(2) / 5.0;
        assert!((v - want).abs() < 1e-4 * want, "{v} {want}");
        let hit = median_noise_var(&[19.0, 21.0, 20.0, 19.0, 60.0]);
        assert!((hit / want - 1.0).abs() < 0.15, "{hit} {want}");
        // Unusable passes are left out.
        assert_eq!(median_noise_var(&[f64::NAN, 0.0, 20.0]), 0.0);
    }

    #[test]
    fn workload_runs_and_takes_cpu_time() {
        let w = ReferenceWorkload::new().unwrap();
        let t = w.median_cpu_ms(3).unwrap();
        assert!(t > 0.5 && t < 5_000.0, "{t}");
    }
}
