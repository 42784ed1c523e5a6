//! [`Sampler`]: the sampling thread. It probes every sensor once, then samples them at the
//! configured rate into the ring buffer and publishes a [`Snapshot`] that readers clone without
//! ever waiting for a sample to finish.
//!
//! Sensors run on a separate worker thread so that each sample has a real timeout: a sensor whose
//! read hangs (a wedged I2C hwmon, say) is abandoned with its worker and reported as timed out,
//! and sampling goes on with a fresh worker.
use super::config::SenseConfig;
use super::error::{SenseError, Unavailable};
use super::sensor::{Frame, SampleCtx, Sensor};
use super::snapshot::{SamplerCost, SensorStatus, Snapshot};
use super::state::State;
use crate::util::clock::thread_cpu_seconds;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Called with every new snapshot, on the sampling thread (the daemon pings its watchdog here).
pub type OnSample = Box<dyn Fn(&Snapshot) + Send>;

/// Probing allocates and calibrates, and an active probe run stretches with contention (that is
/// what it measures): both get more time than a passive read before they count as hung.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

struct Shared {
    snap: Mutex<Arc<Snapshot>>,
    fresh: Condvar,
    stop: Mutex<bool>,
    wake: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking hook must not take the readers down with it; the data is replaced whole anyway.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running sampler; stops and joins its thread when dropped.
pub struct Sampler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    pub fn start(cfg: SenseConfig) -> Sampler {
        Self::start_inner(cfg, None)
    }

    pub fn start_with(cfg: SenseConfig, on_sample: OnSample) -> Sampler {
        Self::start_inner(cfg, Some(on_sample))
    }

    fn start_inner(cfg: SenseConfig, hook: Option<OnSample>) -> Sampler {
        let shared = Arc::new(Shared {
            snap: Mutex::new(Arc::new(Snapshot::default())),
            fresh: Condvar::new(),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let sh = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("augur-sense".into())
            .spawn(move || run(cfg, sh, hook))
            .map_err(|e| {
                tracing::error!("cannot start the sampling thread: {e}; live state stays empty")
            })
            .ok();
        Sampler { shared, thread }
    }

    /// The newest snapshot (a default one before the first sample).
    pub fn snapshot(&self) -> Snapshot {
        (*self.snapshot_arc()).clone()
    }

    /// The newest snapshot without copying it.
    pub fn snapshot_arc(&self) -> Arc<Snapshot> {
        Arc::clone(&lock(&self.shared.snap))
    }

    /// Which sensors are live and why the others are not (empty until probing is done).
    pub fn sensors(&self) -> Vec<SensorStatus> {
        self.snapshot_arc().sensors.clone()
    }

    /// Waits until a snapshot with `seq >= seq` is published, or the timeout passes.
    pub fn wait_for(&self, seq: u64, timeout: Duration) -> Arc<Snapshot> {
        let g = lock(&self.shared.snap);
        let (g, _) = self
            .shared
            .fresh
            .wait_timeout_while(g, timeout, |s| s.seq < seq)
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&g)
    }

    /// Stops sampling and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        *lock(&self.shared.stop) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

enum Job {
    Probe(Box<dyn Sensor>),
    Sample(Box<dyn Sensor>, SampleCtx),
}

enum Reply {
    Probed(Box<dyn Sensor>, Result<Option<String>, Unavailable>),
    Sampled(Box<dyn Sensor>, Box<Frame>, Result<(), SenseError>, f64),
}

/// The thread sensors run on, and its CPU time so far.
struct Worker {
    tx: Sender<Job>,
    rx: Receiver<(Reply, f64)>,
    handle: JoinHandle<()>,
}

fn spawn_worker() -> Option<Worker> {
    let (tx, jobs) = mpsc::channel::<Job>();
    let (done, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("augur-sense-io".into())
        .spawn(move || {
            for job in jobs {
                let reply = match job {
                    Job::Probe(mut s) => {
                        let r = catch_unwind(AssertUnwindSafe(|| s.probe())).unwrap_or_else(|_| {
                            Err(Unavailable::new(
                                "the sensor panicked while probing",
                                "report a bug",
                            ))
                        });
                        Reply::Probed(s, r)
                    }
                    Job::Sample(mut s, ctx) => {
                        let mut f = Frame::default();
                        let c0 = thread_cpu_seconds();
                        let r = catch_unwind(AssertUnwindSafe(|| s.sample(&ctx, &mut f)))
                            .unwrap_or(Err(SenseError::NoData));
                        Reply::Sampled(s, Box::new(f), r, thread_cpu_seconds() - c0)
                    }
                };
                if done.send((reply, thread_cpu_seconds())).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| tracing::error!("cannot start the sensor worker thread: {e}"))
        .ok()?;
    Some(Worker { tx, rx, handle })
}

/// One sensor's slot: the sensor itself while it is usable, and its status.
struct Slot {
    name: &'static str,
    sensor: Option<Box<dyn Sensor>>,
    status: SensorStatus,
    probe: bool,
}

struct Runner {
    worker: Option<Worker>,
    /// CPU time of workers already retired.
    retired_cpu: f64,
    worker_cpu: f64,
    timeout: Duration,
}

impl Runner {
    fn worker(&mut self) -> Option<&Worker> {
        if self.worker.is_none() {
            self.worker = spawn_worker();
            self.worker_cpu = 0.0;
        }
        self.worker.as_ref()
    }

    fn call(&mut self, job: Job, timeout: Duration) -> Result<Reply, SenseError> {
        let w = self.worker().ok_or(SenseError::WorkerGone)?;
        w.tx.send(job).map_err(|_| SenseError::WorkerGone)?;
        match w.rx.recv_timeout(timeout) {
            Ok((reply, cpu)) => {
                self.worker_cpu = cpu;
                Ok(reply)
            }
            Err(e) => {
                // The stuck thread keeps the sensor; it exits by itself once its read returns.
                self.retired_cpu += self.worker_cpu;
                self.worker = None;
                Err(match e {
                    RecvTimeoutError::Timeout => SenseError::Timeout(timeout),
                    RecvTimeoutError::Disconnected => SenseError::WorkerGone,
                })
            }
        }
    }

    fn cpu_total(&self) -> f64 {
        self.retired_cpu + self.worker_cpu
    }

    fn finish(mut self) {
        if let Some(w) = self.worker.take() {
            drop(w.tx);
            let _ = w.handle.join();
        }
    }
}

fn stopped(shared: &Shared) -> bool {
    *lock(&shared.stop)
}

/// Probes every sensor once (in the runner, bounded by the probe timeout): a slot each, available
/// or with its reason and remedy. None when asked to stop meanwhile.
fn probe_slots(cfg: &SenseConfig, runner: &mut Runner, shared: &Shared) -> Option<Vec<Slot>> {
    let mut slots: Vec<Slot> = Vec::new();
    for s in super::sensors(cfg) {
        let name = s.name();
        let probe = s.is_probe();
        let mut status = SensorStatus {
            name: name.into(),
            ..Default::default()
        };
        let sensor = match runner.call(Job::Probe(s), PROBE_TIMEOUT) {
            Ok(Reply::Probed(s, Ok(detail))) => {
                status.available = true;
                status.detail = detail;
                Some(s)
            }
            Ok(Reply::Probed(_, Err(u))) => {
                status.reason = Some(u.reason);
                status.remedy = Some(u.remedy);
                None
            }
            Ok(Reply::Sampled(..)) => None,
            Err(e) => {
                status.reason = Some(format!("probing failed: {e}"));
                status.remedy = Some("check the driver behind this sensor (dmesg)".into());
                None
            }
        };
        tracing::debug!(sensor = name, available = status.available, reason = ?status.reason, "probed");
        slots.push(Slot {
            name,
            sensor,
            status,
            probe,
        });
        if stopped(shared) {
            return None;
        }
    }
    Some(slots)
}

/// Samples one due sensor into `frame` and keeps its status; the probe CPU seconds it used.
fn sample_slot(
    runner: &mut Runner,
    slot: &mut Slot,
    sensor: Box<dyn Sensor>,
    now: Instant,
    allowance: f64,
    frame: &mut Frame,
) -> f64 {
    let ctx = SampleCtx {
        now,
        cpu_share: if slot.probe { allowance } else { 0.0 },
    };
    let timeout = if slot.probe {
        PROBE_TIMEOUT
    } else {
        runner.timeout
    };
    let mut probe_cpu = 0.0;
    match runner.call(Job::Sample(sensor, ctx), timeout) {
        Ok(Reply::Sampled(s, f, result, cpu)) => {
            slot.sensor = Some(s);
            if slot.probe {
                probe_cpu = cpu.max(0.0);
            }
            match result {
                Ok(()) => {
                    frame.absorb(*f);
                    if !slot.status.available {
                        tracing::info!(sensor = slot.name, "sensor is back");
                    }
                    slot.status.available = true;
                    slot.status.reason = None;
                    slot.status.remedy = None;
                }
                Err(SenseError::NoData) => {}
                Err(e) => {
                    if slot.status.available {
                        tracing::warn!(sensor = slot.name, "sample failed: {e}");
                    }
                    slot.status.available = false;
                    slot.status.reason = Some(format!("sample failed: {e}"));
                    slot.status.remedy = Some("transient read error; retried every sample".into());
                }
            }
        }
        Ok(Reply::Probed(..)) => {}
        Err(e) => {
            tracing::warn!(sensor = slot.name, "dropped: {e}");
            slot.status.available = false;
            slot.status.reason = Some(format!("{e}; the sensor was dropped"));
            slot.status.remedy = Some(
                "check the driver behind this sensor (dmesg), or raise sense.sample_timeout_ms"
                    .into(),
            );
        }
    }
    probe_cpu
}

fn run(cfg: SenseConfig, shared: Arc<Shared>, hook: Option<OnSample>) {
    let start = Instant::now();
    let own0 = thread_cpu_seconds();
    let mut runner = Runner {
        worker: None,
        retired_cpu: 0.0,
        worker_cpu: 0.0,
        timeout: cfg.timeout(),
    };
    let Some(mut slots) = probe_slots(&cfg, &mut runner, &shared) else {
        runner.finish();
        return;
    };

    let mut state = State::new(&cfg);
    let period = cfg.period();
    let mut next = Instant::now();
    let mut probe_cpu = 0.0f64;
    let mut late_ticks = 0u64;
    // (time, total CPU, probe CPU) per tick, over the window: for the cost share and the budget.
    let mut costs: VecDeque<(Instant, f64, f64)> = VecDeque::new();
    let window = Duration::from_secs_f64(cfg.window_seconds.clamp(1.0, 60.0));
    let mut passive_share = 0.0f64;

    loop {
        let now = Instant::now();
        let live_probes = slots
            .iter()
            .filter(|s| s.probe && s.sensor.is_some())
            .count()
            .max(1);
        // Probes get what the passive sensors leave of the budget, but never less than a quarter.
        // Pacing aims at 90 % of it: runs are seconds apart, and one extra run in a measurement
        // window must not push the total over.
        let target = 0.9 * cfg.probe_budget;
        let allowance = (target - passive_share).max(target * 0.25) / live_probes as f64;
        let mut frame = Frame {
            t: now.duration_since(start).as_secs_f64(),
            ..Default::default()
        };
        for slot in &mut slots {
            let Some(sensor) = slot.sensor.take() else {
                continue;
            };
            if !sensor.due(now) {
                slot.sensor = Some(sensor);
                continue;
            }
            probe_cpu += sample_slot(&mut runner, slot, sensor, now, allowance, &mut frame);
        }

        let total_cpu = (thread_cpu_seconds() - own0) + runner.cpu_total();
        let t = Instant::now();
        costs.push_back((t, total_cpu, probe_cpu));
        while costs.len() > 2
            && costs
                .front()
                .is_some_and(|(t0, ..)| t.duration_since(*t0) > window)
        {
            costs.pop_front();
        }
        let mut cpu_share = None;
        if let (Some(a), Some(b)) = (costs.front(), costs.back()) {
            let dt = b.0.duration_since(a.0).as_secs_f64();
            if dt > 0.0 {
                cpu_share = Some((b.1 - a.1) / dt);
                passive_share = ((b.1 - b.2) - (a.1 - a.2)).max(0.0) / dt;
            }
        }
        let cost = SamplerCost {
            cpu_seconds_total: total_cpu,
            probe_cpu_seconds_total: probe_cpu,
            cpu_share,
            late_ticks,
        };
        let statuses = slots.iter().map(|s| s.status.clone()).collect();
        let snap = Arc::new(state.push(frame, statuses, cost));
        *lock(&shared.snap) = Arc::clone(&snap);
        shared.fresh.notify_all();
        if let Some(h) = &hook
            && catch_unwind(AssertUnwindSafe(|| h(&snap))).is_err()
        {
            tracing::error!("the on-sample hook panicked");
        }

        next += period;
        let now = Instant::now();
        if now > next + period {
            late_ticks += 1;
            next = now + period;
        }
        let g = lock(&shared.stop);
        let (g, _) = shared
            .wake
            .wait_timeout_while(g, next.saturating_duration_since(now), |stop| !*stop)
            .unwrap_or_else(PoisonError::into_inner);
        if *g {
            break;
        }
    }
    runner.finish();
}
