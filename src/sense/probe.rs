//! Active probes for boards without hardware counters: a short fixed multiply-add loop (compute rate)
//! and a short streaming read over a buffer larger than the last-level cache (memory bandwidth).
//! Both are timed by the wall clock, so they report what a job started now would get, contention
//! included; they are spaced so that their CPU time stays within the budget.
//!
//! One-shot use (roofline at start-up): [`compute_rate`] and [`memory_bandwidth`].
use super::error::{SenseError, Unavailable};
use super::fs::{Roots, numbered_entries, read_trimmed};
use super::sensor::{Every, Frame, SampleCtx, Sensor};
use crate::util::clock::{process_cpu_seconds, thread_cpu_seconds};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Independent accumulators: enough for the loop to be throughput-bound, not latency-bound.
const LANES: usize = 64;
const FLOP_PER_ITER: f64 = (2 * LANES) as f64;

#[inline(never)]
fn fma_loop(iters: u64, seed: f32) -> f32 {
    let mut acc = [seed; LANES];
    // Converges to a / (1 - m) = 0.1: no overflow, no denormals, whatever the iteration count.
    let (m, a) = (black_box(0.9999_f32), black_box(1e-5_f32));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = *v * m + a;
        }
    }
    acc.iter().sum()
}

#[inline(never)]
fn stream_sum(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for c in words.chunks_exact(8) {
        for (a, w) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(*w);
        }
    }
    acc.iter().fold(0, |a, b| a.wrapping_add(*b))
}

/// The compute probe's loop with a fixed iteration count, chosen once so that a run takes about
/// the target time on the machine as it is at calibration.
#[derive(Debug, Clone)]
pub struct ComputeKernel {
    iters: u64,
}

impl ComputeKernel {
    /// Sized by the thread's CPU clock, not the wall clock: a preemption during calibration must
    /// not shrink every later run below the length at which it sees contention.
    pub fn calibrated(target: Duration) -> Self {
        let mut iters = 256u64;
        // Grow until a run is long enough to time, then scale to the target.
        for _ in 0..32 {
            let c0 = thread_cpu_seconds();
            black_box(fma_loop(iters, 1.0));
            let dt = thread_cpu_seconds() - c0;
            if dt >= target.as_secs_f64() / 4.0 {
                let scaled = iters as f64 * target.as_secs_f64() / dt.max(1e-9);
                return ComputeKernel {
                    iters: scaled.clamp(64.0, 1e12) as u64,
                };
            }
            iters *= 2;
        }
        ComputeKernel { iters }
    }

    /// Runs once; FLOP/s by the wall clock.
    pub fn run(&self) -> f64 {
        let t = Instant::now();
        black_box(fma_loop(self.iters, black_box(1.0)));
        self.iters as f64 * FLOP_PER_ITER / t.elapsed().as_secs_f64().max(1e-9)
    }

    pub(crate) fn flop_per_run(&self) -> f64 {
        self.iters as f64 * FLOP_PER_ITER
    }
}

/// A resident buffer larger than the last-level cache, streamed cyclically: whatever a run reads
/// was evicted since its last visit, so each run goes to DRAM.
pub struct MemoryKernel {
    buf: Vec<u64>,
    /// Words one run streams, fixed at calibration.
    run_words: usize,
    pos: usize,
}

impl MemoryKernel {
    /// Allocates and writes the buffer, then sizes a run to take about `target` of CPU time at the
    /// bandwidth of one warm-up pass.
    pub fn calibrated(buffer_bytes: u64, target: Duration) -> Result<Self, SenseError> {
        let words = ((buffer_bytes / 8).max(1 << 17) as usize).next_multiple_of(8);
        let mut buf = Vec::new();
        buf.try_reserve_exact(words).map_err(|_| {
            SenseError::Unavailable(Unavailable::new(
                format!(
                    "cannot allocate {} MiB for the memory probe",
                    (words * 8) >> 20
                ),
                "lower sense.probe_memory_buffer_bytes",
            ))
        })?;
        // Written, not zeroed: zero pages would be mapped lazily and the first runs would time faults.
        buf.extend((0..words as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let mut k = MemoryKernel {
            buf,
            run_words: words,
            pos: 0,
        };
        // Bandwidth per CPU-second of the warm-up pass, for the same reason as the compute probe.
        let c0 = thread_cpu_seconds();
        k.run();
        let bandwidth = words as f64 * 8.0 / (thread_cpu_seconds() - c0).max(1e-9);
        let run_words = (bandwidth * target.as_secs_f64() / 8.0) as usize;
        k.run_words = run_words.clamp(1 << 14, 64 * words).next_multiple_of(8);
        Ok(k)
    }

    pub(crate) fn buffer_bytes(&self) -> u64 {
        self.buf.len() as u64 * 8
    }

    pub(crate) fn bytes_per_run(&self) -> u64 {
        self.run_words as u64 * 8
    }

    /// Streams the next `bytes_per_run`, wrapping round the buffer; bytes/s by the wall clock.
    pub fn run(&mut self) -> f64 {
        let t = Instant::now();
        let mut left = self.run_words;
        while left > 0 {
            let end = (self.pos + left).min(self.buf.len());
            black_box(stream_sum(black_box(&self.buf[self.pos..end])));
            left -= end - self.pos;
            self.pos = if end >= self.buf.len() { 0 } else { end };
        }
        self.run_words as f64 * 8.0 / t.elapsed().as_secs_f64().max(1e-9)
    }

    /// Seconds per byte of streaming the first `bytes` of the buffer cyclically, as the board
    /// streams them now: one pass to bring them back from wherever the last run left them, then
    /// at least [`CACHE_POINT_PASSES`] passes and [`CACHE_POINT_MIN`], each timed by the wall
    /// clock, the fastest kept: a preemption only ever slows a pass, and one slowed pass read as
    /// the curve would move its knee. None past the buffer.
    pub fn seconds_per_byte_at(&mut self, bytes: u64) -> Option<f64> {
        let words = usize::try_from(bytes / 8).ok()?.next_multiple_of(8);
        let part = self.buf.get(..words).filter(|p| !p.is_empty())?;
        black_box(stream_sum(black_box(part)));
        let start = Instant::now();
        let (mut passes, mut best) = (0u32, f64::INFINITY);
        while passes < CACHE_POINT_PASSES || start.elapsed() < CACHE_POINT_MIN {
            let t = Instant::now();
            black_box(stream_sum(black_box(part)));
            best = best.min(t.elapsed().as_secs_f64());
            passes += 1;
        }
        Some(best / (words * 8) as f64)
    }
}

/// Fewest timed passes of a live cache-curve point.
const CACHE_POINT_PASSES: u32 = 3;
/// Shortest timed stretch of a live cache-curve point: a pass over a small buffer takes
/// microseconds, and the best of many is steadier than the best of three.
const CACHE_POINT_MIN: Duration = Duration::from_millis(2);
/// Largest buffer of the live cache curve: model working sets past it all stream from DRAM (the
/// curve is flat beyond its last point), and each point costs four passes over its buffer.
const CACHE_LADDER_MAX: u64 = 256 << 20;

/// Buffer sizes of the live cache curve: 1 MiB times 1 and 1.5 in powers of two, up to the memory
/// probe's buffer or [`CACHE_LADDER_MAX`] (as calibration's sweep, whose curve it stands in for
/// while the board is loaded).
pub fn cache_ladder(buffer: u64) -> Vec<u64> {
    let top = buffer.min(CACHE_LADDER_MAX);
    let mut sizes = Vec::new();
    let mut s: u64 = 1 << 20;
    while s <= top {
        sizes.push(s);
        if s + s / 2 <= top {
            sizes.push(s + s / 2);
        }
        s *= 2;
    }
    sizes
}

/// Size of the largest data or unified cache of cpu0, bytes.
pub fn llc_bytes(roots: &Roots) -> Option<u64> {
    let dir = roots.sys("devices/system/cpu/cpu0/cache");
    numbered_entries(&dir, "index")
        .into_iter()
        .filter(|(_, d)| read_trimmed(&d.join("type")).is_ok_and(|t| t != "Instruction"))
        .filter_map(|(_, d)| parse_size(&read_trimmed(&d.join("size")).ok()?))
        .max()
}

/// `32768K`, `1M`, `512` → bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok().map(|n| n * mult)
}

/// Buffer for the memory probe: twice the LLC, 8 MiB if the LLC is unknown.
pub fn memory_buffer_bytes(llc: Option<u64>) -> u64 {
    2 * llc.unwrap_or(4 << 20)
}

/// One-shot compute rate, FLOP/s: the best of a few 20 ms runs of the probe loop.
pub fn compute_rate() -> f64 {
    let k = ComputeKernel::calibrated(Duration::from_millis(20));
    (0..5).map(|_| k.run()).fold(0.0, f64::max)
}

/// One-shot memory bandwidth, bytes/s: the best of a few 20 ms streaming runs over a buffer twice
/// the LLC; 0 if the buffer cannot be allocated.
pub fn memory_bandwidth() -> f64 {
    let bytes = memory_buffer_bytes(llc_bytes(&Roots::default()));
    best_bandwidth(bytes, Duration::from_millis(20)).unwrap_or(0.0)
}

/// The best of five streaming runs of about `target` each over a buffer of `bytes`; None if the
/// buffer cannot be allocated.
fn best_bandwidth(bytes: u64, target: Duration) -> Option<f64> {
    let mut k = MemoryKernel::calibrated(bytes, target).ok()?;
    Some((0..5).map(|_| k.run()).fold(0.0, f64::max))
}

/// Streaming bandwidth by working-set size, bytes/s: for buffers from 1 MiB (the probe's smallest,
/// past the private caches of most cores) to twice the LLC in steps of about √2, the best of a few
/// 10 ms runs each. Sizes whose buffer cannot be allocated are left out.
pub fn cache_sweep(llc: Option<u64>) -> Vec<(u64, f64)> {
    let top = memory_buffer_bytes(llc).max(8 << 20);
    let mut sizes = Vec::new();
    let mut s: u64 = 1 << 20;
    while s <= top {
        sizes.push(s);
        sizes.push(s + s / 2);
        s *= 2;
    }
    sizes.retain(|&b| b <= top);
    sizes
        .into_iter()
        .filter_map(|b| Some((b, best_bandwidth(b, Duration::from_millis(10))?)))
        .collect()
}

enum Kind {
    Compute {
        target: Duration,
        kernel: Option<ComputeKernel>,
    },
    Memory {
        buffer: u64,
        target: Duration,
        kernel: Option<MemoryKernel>,
        /// The live cache curve's sizes and the next to time: every size at the first run, one
        /// more with each run after.
        ladder: Vec<u64>,
        next: Option<usize>,
    },
    Reference {
        workload: Option<crate::workload::reference::ReferenceWorkload>,
        /// Threads of the parallel reading taken beside each one (under 2: none).
        parallel: usize,
    },
}

/// A probe run as a sensor, paced by its share of the CPU budget.
pub struct ProbeSensor {
    kind: Kind,
    every: Every,
    min_period: Duration,
}

impl ProbeSensor {
    pub fn compute(target: Duration, min_period: Duration) -> Self {
        ProbeSensor {
            kind: Kind::Compute {
                target,
                kernel: None,
            },
            every: Every::new(min_period),
            min_period,
        }
    }

    /// The reference workload (a pass of small networks through tract, ~21 ms of CPU here), timed by
    /// the thread's CPU clock: how fast the board runs now against its calibration; with
    /// `parallel` > 1, also what that many threads give now (a job of several threads needs a core
    /// the one-thread reading does not use).
    pub fn reference(min_period: Duration, parallel: usize) -> Self {
        ProbeSensor {
            kind: Kind::Reference {
                workload: None,
                parallel,
            },
            every: Every::new(min_period),
            min_period,
        }
    }

    pub fn memory(buffer: u64, target: Duration, min_period: Duration) -> Self {
        ProbeSensor {
            kind: Kind::Memory {
                buffer,
                target,
                kernel: None,
                ladder: Vec::new(),
                next: None,
            },
            every: Every::new(min_period),
            min_period,
        }
    }
}

impl Sensor for ProbeSensor {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Compute { .. } => "probe_compute",
            Kind::Memory { .. } => "probe_memory",
            Kind::Reference { .. } => "probe_reference",
        }
    }

    fn probe(&mut self) -> Result<Option<String>, Unavailable> {
        match &mut self.kind {
            Kind::Compute { target, kernel } => {
                let k = ComputeKernel::calibrated(*target);
                let detail = format!("{:.2e} FLOP per run (~{:?})", k.flop_per_run(), target);
                *kernel = Some(k);
                Ok(Some(detail))
            }
            Kind::Memory {
                buffer,
                target,
                kernel,
                ladder,
                next,
            } => {
                let k = MemoryKernel::calibrated(*buffer, *target).map_err(|e| match e {
                    SenseError::Unavailable(u) => u,
                    e => Unavailable::new(e.to_string(), "lower sense.probe_memory_buffer_bytes"),
                })?;
                let detail = format!(
                    "{} MiB per run (~{:?}) through a {} MiB buffer",
                    k.bytes_per_run() >> 20,
                    target,
                    k.buffer_bytes() >> 20
                );
                *ladder = cache_ladder(k.buffer_bytes());
                *next = None;
                *kernel = Some(k);
                Ok(Some(detail))
            }
            Kind::Reference { workload, .. } => {
                let w = crate::workload::reference::ReferenceWorkload::new().map_err(|e| {
                    Unavailable::new(
                        format!("reference workload cannot run: {e}"),
                        "report it; predictions fall back to the frequency and bandwidth terms",
                    )
                })?;
                *workload = Some(w);
                Ok(Some(crate::workload::reference::identity()))
            }
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.every.due(now)
    }

    fn is_probe(&self) -> bool {
        true
    }

    fn sample(&mut self, ctx: &SampleCtx, frame: &mut Frame) -> Result<(), SenseError> {
        let cpu0 = thread_cpu_seconds();
        let mut extra_cpu = 0.0;
        match &mut self.kind {
            Kind::Compute {
                kernel: Some(k), ..
            } => frame.probe_compute_flops = Some(k.run()),
            Kind::Memory {
                kernel: Some(k),
                ladder,
                next,
                ..
            } => {
                frame.probe_memory_bytes_per_second = Some(k.run());
                frame.probe_memory_buffer_bytes = Some(k.buffer_bytes());
                // The whole curve at once the first time, so that a one-off reading has it; then
                // one size a run, round the ladder, to keep each run's cost near the bandwidth's.
                let sizes = match *next {
                    None => 0..ladder.len(),
                    Some(i) => i..(i + 1).min(ladder.len()),
                };
                *next = Some(if ladder.is_empty() {
                    0
                } else {
                    sizes.end % ladder.len()
                });
                for &b in ladder.get(sizes).unwrap_or_default() {
                    if let Some(s) = k
                        .seconds_per_byte_at(b)
                        .filter(|s| s.is_finite() && *s > 0.0)
                    {
                        frame.probe_cache.push((b, s));
                    }
                }
            }
            Kind::Reference {
                workload: Some(w),
                parallel,
            } => {
                // As calibration and eval time it: a pass after 150 ms of passes, since the
                // sampler's thread has slept between samples (~170 ms of CPU a run, so at the
                // default 1 % budget a run about every minute: enough for drift, slow for a
                // sudden neighbour; raise `sense.probe_budget` to follow faster).
                frame.probe_reference_cpu_ms =
                    Some(w.median_cpu_ms(1).map_err(|_| SenseError::NoData)?);
                if *parallel > 1 {
                    // The pool's threads run off this thread's clock, so the process's clock
                    // counts them (with whatever else the process ran meanwhile: a little more
                    // charged, never less). Not wall time × threads: a process stopped or
                    // descheduled mid-run would be charged its whole pause, and the next run
                    // put off by up to an hour.
                    let (process0, own0) = (process_cpu_seconds(), thread_cpu_seconds());
                    let ratio = w
                        .parallel_ratio(*parallel)
                        .map_err(|_| SenseError::NoData)?;
                    frame.probe_parallel_ratio = Some((*parallel, ratio));
                    extra_cpu = ((process_cpu_seconds() - process0)
                        - (thread_cpu_seconds() - own0))
                        .max(0.0);
                }
            }
            _ => return Err(SenseError::NoData),
        }
        let cost = (thread_cpu_seconds() - cpu0).max(0.0) + extra_cpu;
        // Pace by what the run cost: at share s of a core, a run of c CPU-seconds may recur every c/s.
        let pause = Duration::from_secs_f64((cost / ctx.cpu_share.max(1e-4)).min(3600.0));
        self.every.ran_for(ctx.now, pause.max(self.min_period));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(memory_buffer_bytes(Some(32 << 20)), 64 << 20);
        assert_eq!(memory_buffer_bytes(None), 8 << 20);
    }

    #[test]
    fn the_live_cache_ladder_stops_at_the_buffer_and_its_points_are_timed() {
        assert_eq!(cache_ladder(512 << 10), Vec::<u64>::new());
        assert_eq!(cache_ladder(1 << 20), vec![1 << 20]);
        assert_eq!(
            cache_ladder(5 << 20),
            vec![1 << 20, 3 << 19, 2 << 20, 3 << 20, 4 << 20]
        );
        let top = cache_ladder(u64::MAX);
        assert_eq!(top.last(), Some(&CACHE_LADDER_MAX));
        let mut m = MemoryKernel::calibrated(2 << 20, Duration::from_millis(1)).unwrap();
        for b in cache_ladder(m.buffer_bytes()) {
            let s = m.seconds_per_byte_at(b).unwrap();
            assert!(s.is_finite() && s > 0.0 && s < 1e-6, "{b}: {s}");
        }
        assert_eq!(m.seconds_per_byte_at(4 << 20), None);
        assert_eq!(m.seconds_per_byte_at(0), None);
    }

    #[test]
    fn kernels_report_positive_rates() {
        let k = ComputeKernel::calibrated(Duration::from_millis(2));
        assert!(k.run() > 1e6);
        let mut m = MemoryKernel::calibrated(1 << 20, Duration::from_millis(2)).unwrap();
        assert_eq!(m.buffer_bytes(), 1 << 20);
        // A run may wrap round the buffer several times.
        assert!(m.bytes_per_run() >= 1 << 17);
        for _ in 0..5 {
            assert!(m.run() > 1e6);
        }
    }
}
