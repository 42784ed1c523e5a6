//! The power phase: where the board has an energy counter, the quiet board's power is measured, then
//! each kernel kind's sampled kernels run in a loop for a window while the meter integrates, and
//! the board's power above idle is fitted per kind. Without a counter the phase is skipped and the
//! profile records why. The meter and the load are traits, so a test can play a board.
use super::build::kernel_graph;
use super::error::MeasureError;
use super::options::{Budget, Options};
use super::progress::{self, Event, Phase, Progress};
use crate::kernels::{Kernel, KernelKind};
use crate::profile::Power;
use crate::runtime::{Backend, RunSpec};
use crate::sense::energy::{EnergyMeter, Meter};
use std::collections::BTreeMap;
use std::time::Duration;

/// Windows per kind: their median is kept, so one disturbed window does not decide.
const REPEATS: usize = 3;
/// Sampled kernels per kind that the kind's windows cycle through.
const KERNELS_PER_KIND: usize = 3;

/// What keeps the board busy (or not) while the meter integrates.
pub trait Load {
    /// Leaves the board quiet for `window`.
    fn idle(&mut self, window: Duration);
    /// Runs kernels of `kind` back to back for about `window`.
    fn run(&mut self, kind: KernelKind, window: Duration) -> Result<(), MeasureError>;
    /// The kinds it has kernels for.
    fn kinds(&self) -> Vec<KernelKind>;
}

/// How long each measurement lasts.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    pub idle: Duration,
    pub kind: Duration,
}

impl Windows {
    /// Seconds-long windows; a budget given in seconds (tests, slow boards) shortens them with it.
    pub fn for_options(opts: &Options) -> Windows {
        let w = Windows::for_budget(opts.budget);
        match opts.budget_seconds {
            Some(s) if s.is_finite() && s > 0.0 => {
                let cap =
                    |d: Duration, share: f64| d.min(Duration::from_secs_f64((s * share).max(0.05)));
                Windows {
                    idle: cap(w.idle, 1.0 / 20.0),
                    kind: cap(w.kind, 1.0 / 40.0),
                }
            }
            _ => w,
        }
    }

    pub fn for_budget(budget: Budget) -> Windows {
        match budget {
            Budget::Quick => Windows {
                idle: Duration::from_secs(2),
                kind: Duration::from_millis(1500),
            },
            _ => Windows {
                idle: Duration::from_secs(4),
                kind: Duration::from_secs(3),
            },
        }
    }
}

/// The phase as calibration runs it: the board's meter (or the record of why there is none) and
/// the runtime's kernels.
pub fn phase(opts: &Options, backend: &dyn Backend, progress: Progress) -> Power {
    progress(&Event::Phase(Phase::Power));
    let mut meter = match EnergyMeter::new(&crate::util::roots::Roots::default()) {
        Ok(m) => m,
        Err(u) => {
            progress::note(progress, format!("power: skipped, no energy counter ({u})"));
            return Power::unavailable(format!(
                "no energy counter at calibration: {}; {}",
                u.reason, u.remedy
            ));
        }
    };
    let mut load = BackendLoad::new(backend, opts.threads, opts.seed);
    let power = measure(&mut meter, &mut load, Windows::for_options(opts), &|| {
        opts.stopped()
    });
    let kinds: Vec<String> = power
        .above_idle_watts
        .iter()
        .map(|(k, w)| format!("{} {w:.2} W", k.name()))
        .collect();
    match &power.unavailable {
        Some(why) => progress::note(progress, format!("power: not measured ({why})")),
        None => progress::note(
            progress,
            format!(
                "power ({}): idle {:.2} W; above idle {}",
                power.source,
                power.idle_watts.unwrap_or(0.0),
                kinds.join(", ")
            ),
        ),
    }
    power
}

/// Idle before and after the kinds (a linear drift between the two is taken out of every kind's
/// window), each kind's median power over [`REPEATS`] windows, minus idle, never below 0.
pub fn measure(
    meter: &mut dyn Meter,
    load: &mut dyn Load,
    windows: Windows,
    stopped: &dyn Fn() -> bool,
) -> Power {
    let source = meter.source();
    let fail = |e: &dyn std::fmt::Display| Power {
        source: source.clone(),
        ..Power::unavailable(format!("the energy counter failed while measuring: {e}"))
    };
    let idle =
        |meter: &mut dyn Meter, load: &mut dyn Load| meter.measure(&mut || load.idle(windows.idle));
    // Time is counted in the meter's own seconds: the middle of each window places it on the
    // line from the idle before to the idle after.
    let mut clock = 0.0;
    let mut middle = |seconds: f64| {
        clock += seconds;
        clock - seconds / 2.0
    };
    let before = match idle(meter, load) {
        Ok(i) => (middle(i.seconds), i.watts()),
        Err(e) => return fail(&e),
    };
    // (kind, middle of the window, watts)
    let mut taken: Vec<(KernelKind, f64, f64)> = Vec::new();
    'kinds: for kind in load.kinds() {
        for _ in 0..REPEATS {
            if stopped() {
                break 'kinds;
            }
            let mut ran = Ok(());
            let got = meter.measure(&mut || ran = load.run(kind, windows.kind));
            match (got, ran) {
                (Err(e), _) => return fail(&e),
                (Ok(i), Ok(())) if i.seconds > 0.0 => {
                    taken.push((kind, middle(i.seconds), i.watts()))
                }
                (Ok(i), ran) => {
                    middle(i.seconds);
                    if let Err(e) = ran {
                        tracing::info!(kind = kind.name(), error = %e, "power: a kind could not run");
                        continue 'kinds;
                    }
                }
            }
        }
    }
    let after = match idle(meter, load) {
        Ok(i) => (middle(i.seconds), i.watts()),
        Err(e) => return fail(&e),
    };
    let idle_at = |t: f64| {
        let span = after.0 - before.0;
        if span > 0.0 {
            before.1 + (after.1 - before.1) * (t - before.0) / span
        } else {
            (before.1 + after.1) / 2.0
        }
    };
    let mut per_kind: BTreeMap<KernelKind, Vec<f64>> = BTreeMap::new();
    for (kind, t, watts) in taken {
        per_kind.entry(kind).or_default().push(watts - idle_at(t));
    }
    let above_idle_watts: BTreeMap<KernelKind, f64> = per_kind
        .into_iter()
        .filter_map(|(k, mut v)| {
            v.retain(|w| w.is_finite());
            v.sort_by(f64::total_cmp);
            let median = *v.get(v.len() / 2)?;
            Some((k, median.max(0.0)))
        })
        .collect();
    let unavailable = above_idle_watts
        .is_empty()
        .then(|| "no kernel kind could be run while the counter measured".to_string());
    Power {
        source,
        idle_watts: Some((before.1 + after.1) / 2.0),
        above_idle_watts,
        unavailable,
    }
}

/// The runtime running each kind's first sampled kernels of the calibration plan.
struct BackendLoad<'a> {
    backend: &'a dyn Backend,
    threads: usize,
    kernels: BTreeMap<KernelKind, Vec<Vec<u8>>>,
}

impl<'a> BackendLoad<'a> {
    fn new(backend: &'a dyn Backend, threads: usize, seed: u64) -> BackendLoad<'a> {
        let mut kernels: BTreeMap<KernelKind, Vec<Vec<u8>>> = BTreeMap::new();
        for k in super::kernels::plan(seed) {
            let have = kernels.get(&k.kind).map_or(0, Vec::len);
            if have >= KERNELS_PER_KIND {
                continue;
            }
            if let Ok(bytes) = onnx(&k) {
                kernels.entry(k.kind).or_default().push(bytes);
            }
        }
        BackendLoad {
            backend,
            threads,
            kernels,
        }
    }
}

fn onnx(k: &Kernel) -> Result<Vec<u8>, MeasureError> {
    Ok(crate::model::export::to_onnx_bytes(&kernel_graph(k)?)?)
}

impl Load for BackendLoad<'_> {
    fn idle(&mut self, window: Duration) {
        std::thread::sleep(window);
    }

    fn run(&mut self, kind: KernelKind, window: Duration) -> Result<(), MeasureError> {
        let Some(ks) = self.kernels.get(&kind).filter(|v| !v.is_empty()) else {
            return Err(MeasureError::NoKernel);
        };
        let each = window.as_secs_f64() / ks.len() as f64;
        for bytes in ks {
            let spec = RunSpec {
                threads: self.threads,
                warmup: 1,
                warmup_seconds: 0.0,
                runs: usize::MAX / 2,
                max_seconds: each,
            };
            self.backend.time_onnx(bytes, &spec)?;
        }
        Ok(())
    }

    fn kinds(&self) -> Vec<KernelKind> {
        self.kernels.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sense::SenseError;
    use crate::sense::energy::Interval;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A board whose draw is known: idle drifting linearly in time, plus a fixed power per kind,
    /// plus a ripple; the meter integrates a 10 Hz trace of it by the trapezoid rule.
    struct Board {
        running: Rc<Cell<Option<KernelKind>>>,
        clock: f64,
        watts: BTreeMap<KernelKind, f64>,
    }

    impl Board {
        fn draw(&self, t: f64, kind: Option<KernelKind>) -> f64 {
            let idle = 3.0 + 0.01 * t;
            let ripple = 0.3 * (t * 7.0).sin();
            idle + kind
                .and_then(|k| self.watts.get(&k))
                .copied()
                .unwrap_or(0.0)
                + ripple
        }
    }

    struct FakeMeter(Rc<std::cell::RefCell<Board>>);
    struct FakeLoad {
        running: Rc<Cell<Option<KernelKind>>>,
        window: Rc<Cell<f64>>,
        kinds: Vec<KernelKind>,
    }

    impl Load for FakeLoad {
        fn idle(&mut self, window: Duration) {
            self.running.set(None);
            self.window.set(window.as_secs_f64());
        }
        fn run(&mut self, kind: KernelKind, window: Duration) -> Result<(), MeasureError> {
            if kind == KernelKind::Softmax {
                return Err(MeasureError::NoKernel);
            }
            self.running.set(Some(kind));
            self.window.set(window.as_secs_f64());
            Ok(())
        }
        fn kinds(&self) -> Vec<KernelKind> {
            self.kinds.clone()
        }
    }

    struct Fake {
        meter: FakeMeter,
        window: Rc<Cell<f64>>,
    }

    impl Meter for Fake {
        fn source(&self) -> String {
            "fake power: board".into()
        }
        fn measure(&mut self, work: &mut dyn FnMut()) -> Result<Interval, SenseError> {
            work();
            let mut b = self.meter.0.borrow_mut();
            let kind = b.running.get();
            let seconds = self.window.get();
            let steps = (seconds * 10.0).round() as usize;
            let dt = seconds / steps as f64;
            let t0 = b.clock;
            let joules: f64 = (0..steps)
                .map(|i| {
                    let (a, c) = (t0 + i as f64 * dt, t0 + (i + 1) as f64 * dt);
                    (b.draw(a, kind) + b.draw(c, kind)) / 2.0 * dt
                })
                .sum();
            b.clock += seconds;
            Ok(Interval { joules, seconds })
        }
    }

    #[test]
    fn known_per_kind_watts_are_recovered_from_a_synthetic_trace() {
        let truth: BTreeMap<KernelKind, f64> = [
            (KernelKind::Conv, 6.5),
            (KernelKind::Pointwise, 5.0),
            (KernelKind::Depthwise, 2.25),
            (KernelKind::Elementwise, 1.5),
        ]
        .into();
        let running = Rc::new(Cell::new(None));
        let window = Rc::new(Cell::new(0.0));
        let board = Rc::new(std::cell::RefCell::new(Board {
            running: running.clone(),
            clock: 0.0,
            watts: truth.clone(),
        }));
        let mut meter = Fake {
            meter: FakeMeter(board),
            window: window.clone(),
        };
        let mut kinds: Vec<KernelKind> = truth.keys().copied().collect();
        kinds.push(KernelKind::Softmax);
        let mut load = FakeLoad {
            running,
            window,
            kinds,
        };
        let windows = Windows {
            idle: Duration::from_secs(4),
            kind: Duration::from_secs(3),
        };
        let p = measure(&mut meter, &mut load, windows, &|| false);
        assert_eq!(p.unavailable, None);
        assert_eq!(p.source, "fake power: board");
        // The kind that could not run has no figure rather than a made-up one.
        assert_eq!(
            p.above_idle_watts.keys().collect::<Vec<_>>(),
            truth.keys().collect::<Vec<_>>()
        );
        for (k, w) in &truth {
            let got = p.above_idle_watts[k];
            assert!((got - w).abs() < 0.03 * w, "{k:?}: {got} W, truth {w} W");
        }
        let idle = p.idle_watts.unwrap();
        assert!((idle - 3.2).abs() < 0.2, "idle {idle}");
    }

    #[test]
    fn a_stop_before_any_kind_gives_no_figures() {
        let running = Rc::new(Cell::new(None));
        let window = Rc::new(Cell::new(0.0));
        let board = Rc::new(std::cell::RefCell::new(Board {
            running: running.clone(),
            clock: 0.0,
            watts: BTreeMap::new(),
        }));
        let mut meter = Fake {
            meter: FakeMeter(board),
            window: window.clone(),
        };
        let mut load = FakeLoad {
            running,
            window,
            kinds: vec![KernelKind::Conv],
        };
        let windows = Windows {
            idle: Duration::from_secs(1),
            kind: Duration::from_secs(1),
        };
        let p = measure(&mut meter, &mut load, windows, &|| true);
        assert!(p.above_idle_watts.is_empty());
        assert!(p.unavailable.is_some());
    }
}
