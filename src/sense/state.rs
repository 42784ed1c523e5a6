//! The ring buffer of frames and what is derived from it: latest values, windowed means, EWMAs and
//! the probes' idle baselines, assembled into a [`Snapshot`].
use super::config::SenseConfig;
use super::sensor::Frame;
use super::snapshot::{
    CachePoint, CpuState, PerfRates, Probes, SamplerCost, SensorStatus, Snapshot, Stat, Utilization,
};
use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

type Get = fn(&Frame) -> Option<f64>;

fn modes(f: &Frame) -> Option<super::sensor::ModeFractions> {
    f.cpu_time.as_ref()?.modes
}

/// Every series summarised as a [`Stat`], in the order `stats` indexes them.
const SERIES: [Get; 11] = [
    |f| modes(f).map(|m| m.busy),
    |f| modes(f).map(|m| m.user),
    |f| modes(f).map(|m| m.system),
    |f| modes(f).map(|m| m.iowait),
    |f| modes(f).map(|m| m.irq),
    |f| modes(f).map(|m| m.steal),
    |f| modes(f).map(|m| m.idle),
    |f| f.cpu_time.as_ref()?.own_fraction,
    |f| f.probe_compute_flops,
    |f| f.probe_memory_bytes_per_second,
    |f| f.probe_reference_cpu_ms,
];
/// Readings kept per size of the live cache curve; the snapshot gives their median, so that one
/// preempted pass does not move the curve.
const CACHE_READINGS: usize = 3;
const COMPUTE: usize = 8;
const MEMORY: usize = 9;
const REFERENCE: usize = 10;

/// Best sustained rate: the max over time of the median of the last three runs, so that one lucky
/// run does not become the reference.
#[derive(Debug, Default, Clone)]
struct Baseline {
    recent: VecDeque<f64>,
    best: Option<f64>,
    runs: u64,
}

impl Baseline {
    fn push(&mut self, v: f64) {
        self.runs += 1;
        self.recent.push_back(v);
        if self.recent.len() > 3 {
            self.recent.pop_front();
        }
        let mut r: Vec<f64> = self.recent.iter().copied().collect();
        r.sort_by(f64::total_cmp);
        let candidate = match r.len() {
            3 => r[1],
            _ => r[0],
        };
        self.best = Some(self.best.map_or(candidate, |b| b.max(candidate)));
    }
}

pub struct State {
    alpha: f64,
    window: f64,
    ring_len: usize,
    sample_hz: f64,
    ring: VecDeque<Frame>,
    /// The newest value of every field, carried forward across ticks where its sensor did not run.
    merged: Frame,
    ewma: [Option<f64>; 11],
    reference_runs: u64,
    /// The last runs of the reference workload, oldest first.
    reference_history: VecDeque<f64>,
    /// The parallel readings' threads and their last readings, oldest first.
    parallel_threads: Option<usize>,
    parallel_history: VecDeque<f64>,
    /// The live cache curve's last readings by buffer size, oldest first.
    cache: std::collections::BTreeMap<u64, VecDeque<f64>>,
    compute: Baseline,
    memory: Baseline,
    seq: u64,
}

impl State {
    pub fn new(cfg: &SenseConfig) -> Self {
        State {
            alpha: cfg.alpha(),
            window: if cfg.window_seconds > 0.0 {
                cfg.window_seconds
            } else {
                5.0
            },
            ring_len: cfg.ring_len.max(2),
            sample_hz: 1.0 / cfg.period().as_secs_f64(),
            ring: VecDeque::new(),
            merged: Frame::default(),
            ewma: [None; 11],
            reference_runs: 0,
            reference_history: VecDeque::new(),
            parallel_threads: None,
            parallel_history: VecDeque::new(),
            cache: Default::default(),
            compute: Baseline::default(),
            memory: Baseline::default(),
            seq: 0,
        }
    }

    /// Frames in the ring, oldest first.
    pub fn frames(&self) -> impl Iterator<Item = &Frame> {
        self.ring.iter()
    }

    pub fn push(
        &mut self,
        frame: Frame,
        sensors: Vec<SensorStatus>,
        cost: SamplerCost,
    ) -> Snapshot {
        self.seq += 1;
        for (i, get) in SERIES.iter().enumerate() {
            if let Some(v) = get(&frame).filter(|v| v.is_finite()) {
                self.ewma[i] =
                    Some(self.ewma[i].map_or(v, |e| self.alpha * v + (1.0 - self.alpha) * e));
            }
        }
        if let Some(v) = frame.probe_compute_flops {
            self.compute.push(v);
        }
        if let Some(v) = frame.probe_memory_bytes_per_second {
            self.memory.push(v);
        }
        if let Some(v) = frame.probe_reference_cpu_ms.filter(|v| v.is_finite()) {
            self.reference_runs += 1;
            self.reference_history.push_back(v);
            if self.reference_history.len() > super::snapshot::REFERENCE_HISTORY {
                self.reference_history.pop_front();
            }
        }
        if let Some((threads, v)) = frame.probe_parallel_ratio.filter(|(_, v)| v.is_finite()) {
            if self.parallel_threads != Some(threads) {
                self.parallel_history.clear();
            }
            self.parallel_threads = Some(threads);
            self.parallel_history.push_back(v);
            if self.parallel_history.len() > super::snapshot::REFERENCE_HISTORY {
                self.parallel_history.pop_front();
            }
        }
        for &(bytes, s) in &frame.probe_cache {
            let r = self.cache.entry(bytes).or_default();
            r.push_back(s);
            if r.len() > CACHE_READINGS {
                r.pop_front();
            }
        }
        self.merged.absorb(frame.clone());
        self.merged.t = frame.t;
        self.ring.push_back(frame);
        while self.ring.len() > self.ring_len {
            self.ring.pop_front();
        }
        self.snapshot(sensors, cost)
    }

    fn stat(&self, i: usize) -> Stat {
        let get = SERIES[i];
        let now = self.ring.back().map_or(0.0, |f| f.t);
        let latest = self.ring.iter().rev().find_map(get);
        let (sum, n) = self
            .ring
            .iter()
            .rev()
            .take_while(|f| now - f.t <= self.window)
            .filter_map(get)
            .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
        Stat {
            latest,
            mean: (n > 0).then(|| sum / n as f64),
            ewma: self.ewma[i],
        }
    }

    fn snapshot(&self, sensors: Vec<SensorStatus>, sampler: SamplerCost) -> Snapshot {
        let m = &self.merged;
        let ct = m.cpu_time.as_ref();
        let mut cpus: Vec<CpuState> = if m.cpus.is_empty() {
            ct.map(|c| {
                c.per_cpu_seconds
                    .iter()
                    .map(|(cpu, _)| CpuState {
                        cpu: *cpu,
                        ..Default::default()
                    })
                    .collect()
            })
            .unwrap_or_default()
        } else {
            m.cpus.clone()
        };
        if let Some(ct) = ct {
            for c in &mut cpus {
                c.busy = ct
                    .per_cpu_busy
                    .iter()
                    .find(|(n, _)| *n == c.cpu)
                    .map(|(_, b)| *b);
                c.seconds = ct
                    .per_cpu_seconds
                    .iter()
                    .find(|(n, _)| *n == c.cpu)
                    .map(|(_, s)| s.clone());
            }
        }
        let ratios: Vec<f64> = cpus
            .iter()
            .filter_map(|c| Some(c.frequency_hertz? / c.max_hertz.filter(|m| *m > 0.0)?))
            .collect();
        let freq_ratio =
            (!ratios.is_empty()).then(|| ratios.iter().sum::<f64>() / ratios.len() as f64);
        let compute = self.stat(COMPUTE);
        let memory = self.stat(MEMORY);
        let ratio = |s: &Stat, b: Option<f64>| Some(s.ewma? / b.filter(|b| *b > 0.0)?);
        let probe = Probes {
            compute_ratio: ratio(&compute, self.compute.best),
            compute_baseline_flops: self.compute.best,
            compute_runs: self.compute.runs,
            compute_flops: compute,
            memory_ratio: ratio(&memory, self.memory.best),
            memory_baseline_bytes_per_second: self.memory.best,
            memory_runs: self.memory.runs,
            memory_bandwidth_bytes_per_second: memory,
            memory_buffer_bytes: m.probe_memory_buffer_bytes,
            reference_cpu_ms: self.stat(REFERENCE),
            reference_runs: self.reference_runs,
            reference_recent_cpu_ms: crate::workload::reference::recent(
                self.reference_history.iter().copied(),
            ),
            reference_history_cpu_ms: self.reference_history.iter().copied().collect(),
            reference_parallel_threads: self.parallel_threads,
            reference_parallel_ratios: self.parallel_history.iter().copied().collect(),
            cache_curve: self
                .cache
                .iter()
                .filter_map(|(&bytes, r)| {
                    Some(CachePoint {
                        bytes,
                        seconds_per_byte: crate::util::stats::percentile(r.iter().copied(), 0.5)?,
                    })
                })
                .collect(),
            // The sampler's reading may be a minute old: it is followed as far as readings have
            // persisted, not by its noise alone.
            reference_noise_var: None,
        };
        let perf = match (&m.perf, m.memory_pmu_bytes_per_second) {
            (Some(p), bw) => Some(PerfRates {
                memory_bandwidth_bytes_per_second: bw,
                ..p.clone()
            }),
            (None, Some(bw)) => Some(PerfRates {
                memory_bandwidth_bytes_per_second: Some(bw),
                ..Default::default()
            }),
            (None, None) => None,
        };
        Snapshot {
            timestamp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            seq: self.seq,
            sample_hz: self.sample_hz,
            window_seconds: self.window,
            cpus,
            clusters: m.clusters.clone(),
            freq_ratio,
            utilization: Utilization {
                busy: self.stat(0),
                user: self.stat(1),
                system: self.stat(2),
                iowait: self.stat(3),
                irq: self.stat(4),
                steal: self.stat(5),
                idle: self.stat(6),
            },
            own_cpu: self.stat(7),
            cpu_seconds: ct.and_then(|c| c.total_seconds.clone()),
            procs_running: ct.and_then(|c| c.procs_running),
            procs_blocked: ct.and_then(|c| c.procs_blocked),
            loadavg: m.loadavg.clone(),
            pressure: m.pressure.clone().unwrap_or_default(),
            probe,
            perf,
            thermal: m.thermal.clone().unwrap_or_default(),
            power: m.power.clone().unwrap_or_default(),
            sensors,
            sampler,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sense::sensor::{CpuTimeFrame, ModeFractions};

    fn util_frame(t: f64, busy: f64) -> Frame {
        Frame {
            t,
            cpu_time: Some(CpuTimeFrame {
                modes: Some(ModeFractions {
                    busy,
                    idle: 1.0 - busy,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn window_mean_ewma_and_carry_forward() {
        let cfg = SenseConfig {
            window_seconds: 1.0,
            ewma_alpha: 0.5,
            ..Default::default()
        };
        let mut s = State::new(&cfg);
        s.push(util_frame(0.0, 1.0), vec![], SamplerCost::default());
        let mut f = util_frame(2.0, 0.0);
        f.probe_compute_flops = Some(10.0);
        s.push(f, vec![], SamplerCost::default());
        let snap = s.push(util_frame(2.5, 0.25), vec![], SamplerCost::default());
        let b = snap.utilization.busy;
        assert_eq!(b.latest, Some(0.25));
        assert_eq!(
            b.mean,
            Some(0.125),
            "the frame at t=0 is outside the 1 s window"
        );
        assert_eq!(b.ewma, Some(0.375));
        assert_eq!(
            snap.probe.compute_flops.latest,
            Some(10.0),
            "probe values carry forward"
        );
        assert_eq!(snap.probe.compute_baseline_flops, Some(10.0));
        assert_eq!(snap.probe.compute_ratio, Some(1.0));
    }

    #[test]
    fn the_live_cache_curve_is_the_median_of_each_size_s_last_readings() {
        let mut s = State::new(&SenseConfig::default());
        let frame = |points: Vec<(u64, f64)>| Frame {
            probe_cache: points,
            ..Default::default()
        };
        // The probe's first run times every size; later runs one size each.
        s.push(
            frame(vec![(1 << 20, 1.0), (2 << 20, 2.0)]),
            vec![],
            SamplerCost::default(),
        );
        for v in [9.0, 3.0, 4.0] {
            s.push(frame(vec![(1 << 20, v)]), vec![], SamplerCost::default());
        }
        // A tick without a reading keeps the curve, and does not count its last point again.
        let snap = s.push(Frame::default(), vec![], SamplerCost::default());
        let curve: Vec<(u64, f64)> = snap
            .probe
            .cache_curve
            .iter()
            .map(|p| (p.bytes, p.seconds_per_byte))
            .collect();
        assert_eq!(
            curve,
            vec![(1 << 20, 4.0), (2 << 20, 2.0)],
            "1 MiB: the median of 9, 3, 4 (the first reading dropped)"
        );
        let curve = crate::predict::live_cache_curve(&snap).unwrap();
        // Dearer at 1 MiB than at 2 MiB: the curve pools the two.
        assert_eq!(curve.seconds_per_byte((2u64 << 20) as f64), Some(3.0));
    }

    #[test]
    fn baseline_ignores_a_single_lucky_run() {
        let mut b = Baseline::default();
        for v in [10.0, 10.0, 10.0, 100.0, 10.0, 10.0] {
            b.push(v);
        }
        assert_eq!(b.best, Some(10.0));
    }

    #[test]
    fn the_reference_runs_are_kept_for_their_recent_median_and_their_history() {
        let mut s = State::new(&SenseConfig::default());
        let n = super::super::snapshot::REFERENCE_HISTORY + 5;
        let mut snap = None;
        for i in 0..n {
            let mut f = util_frame(i as f64, 0.1);
            // One run in four is an odd one, far slower.
            f.probe_reference_cpu_ms = Some(if i % 4 == 3 { 60.0 } else { 20.0 + i as f64 });
            snap = Some(s.push(f, vec![], SamplerCost::default()));
        }
        let p = snap.unwrap().probe;
        assert_eq!(p.reference_runs, n as u64);
        // The last three runs: the odd one does not move their median.
        let last = (n - 1) as f64;
        assert_eq!(p.reference_recent_cpu_ms, Some(20.0 + last));
        assert_eq!(
            p.reference_history_cpu_ms.len(),
            super::super::snapshot::REFERENCE_HISTORY
        );
        assert_eq!(p.reference_history_cpu_ms.last(), Some(&(20.0 + last)));
        // No parallel reading was taken: none is shown.
        assert_eq!(p.reference_parallel_threads, None);
        assert!(p.reference_parallel_ratios.is_empty());
    }

    #[test]
    fn parallel_readings_are_kept_and_start_again_when_the_threads_change() {
        let mut s = State::new(&SenseConfig::default());
        let n = super::super::snapshot::REFERENCE_HISTORY + 3;
        let mut snap = None;
        for i in 0..n {
            let mut f = util_frame(i as f64, 0.1);
            f.probe_parallel_ratio = Some((2, 0.6 + i as f64 / 100.0));
            snap = Some(s.push(f, vec![], SamplerCost::default()));
        }
        let p = snap.unwrap().probe;
        assert_eq!(p.reference_parallel_threads, Some(2));
        assert_eq!(
            p.reference_parallel_ratios.len(),
            super::super::snapshot::REFERENCE_HISTORY
        );
        assert_eq!(
            p.reference_parallel_ratios.last(),
            Some(&(0.6 + (n - 1) as f64 / 100.0))
        );
        // A reading at another thread count is not comparable with the ones before it; one that
        // is not a number is dropped.
        let mut f = util_frame(n as f64, 0.1);
        f.probe_parallel_ratio = Some((4, f64::NAN));
        let p = s.push(f, vec![], SamplerCost::default()).probe;
        assert_eq!(
            p.reference_parallel_ratios.len(),
            super::super::snapshot::REFERENCE_HISTORY
        );
        let mut f = util_frame(n as f64 + 1.0, 0.1);
        f.probe_parallel_ratio = Some((4, 0.4));
        let p = s.push(f, vec![], SamplerCost::default()).probe;
        assert_eq!(p.reference_parallel_threads, Some(4));
        assert_eq!(p.reference_parallel_ratios, vec![0.4]);
    }
}
