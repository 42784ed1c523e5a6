//! The measuring session every measuring phase goes through: it times kernels and networks in
//! windows between two readings of the reference workload ([`super::speed`]), measures again what a
//! window spoiled, journals what it keeps, skips what the journal already has, and stops on request.
use super::error::{CalibrateError, MeasureError};
use super::journal::{Entry, Journal, Window};
use super::options::Options;
use super::progress::{Event, Progress};
use super::speed::{self, Reader};
use super::{innet, measure, prior::config_key};
use crate::kernels::Kernel;
use crate::profile::Measurement;
use crate::runtime::Backend;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Something to measure.
#[derive(Clone, Debug)]
enum Item {
    Kernel(Box<Kernel>),
    Network(usize),
}

/// What a measurement gave, raw.
enum Taken {
    /// The configuration's key and its measurement.
    Kernel(String, Box<Measurement>),
    Network(usize, Vec<(usize, Measurement)>),
}

struct Pending {
    item: Item,
    taken: Taken,
    attempts: u32,
}

/// Failures met while measuring: counted and logged, never fatal on their own.
#[derive(Debug, Default)]
pub struct Failures {
    pub kernels: usize,
    pub networks: usize,
    pub last: Option<MeasureError>,
}

pub struct Session<'a> {
    opts: &'a Options,
    backend: &'a dyn Backend,
    journal: Journal,
    /// Times the reference workload (a script in tests).
    read: Box<dyn FnMut() -> Option<f64> + 'a>,
    /// How long a window lasts before its closing reading.
    every: Duration,
    read_once: bool,
    before: Option<f64>,
    window_start: Instant,
    pending: Vec<Pending>,
    pending_keys: HashSet<String>,
    start: Instant,
    budget: Duration,
    progress: Progress<'a>,
    repeats: usize,
    failures: Failures,
}

impl<'a> Session<'a> {
    pub fn new(
        opts: &'a Options,
        backend: &'a dyn Backend,
        journal: Journal,
        progress: Progress<'a>,
    ) -> Session<'a> {
        let reader = Reader::new();
        Session {
            opts,
            backend,
            journal,
            read: Box::new(move || reader.read()),
            every: speed::EVERY,
            read_once: false,
            before: None,
            window_start: Instant::now(),
            pending: Vec::new(),
            pending_keys: HashSet::new(),
            start: Instant::now(),
            budget: opts.budget_duration(),
            progress,
            repeats: 0,
            failures: Failures::default(),
        }
    }

    /// Time spent measuring in this run.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Runs `f` off the measuring budget: its time is not counted in [`Session::elapsed`]. For
    /// work between phases (a sweep of the cache curve) that a short budget would otherwise spend
    /// before a single kernel is timed.
    pub fn aside<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.start += t.elapsed();
        out
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Times a kernel configuration alone, unless the journal (or the open window) has it.
    pub fn kernel(&mut self, cfg: &Kernel) -> Result<(), CalibrateError> {
        self.check_stop()?;
        let key = config_key(cfg);
        if self.journal.has_kernel(&key) || self.pending_keys.contains(&key) {
            return Ok(());
        }
        self.first_reading()?;
        self.take(Item::Kernel(Box::new(cfg.clone())), 1);
        self.after_item()
    }

    /// Times synthetic network `i` per node, unless the journal has it; false when the backend
    /// cannot time per node.
    pub fn network(&mut self, i: usize) -> Result<bool, CalibrateError> {
        self.check_stop()?;
        if self.journal.has_network(i) {
            return Ok(true);
        }
        self.first_reading()?;
        if !self.take(Item::Network(i), 1) {
            return Ok(false);
        }
        self.after_item()?;
        Ok(true)
    }

    /// Closes the open window (without repeats) and hands the journal back, with what failed.
    pub fn finish(mut self) -> Result<(Journal, Failures), CalibrateError> {
        self.close_window(false)?;
        Ok((self.journal, self.failures))
    }

    fn check_stop(&mut self) -> Result<(), CalibrateError> {
        if !self.opts.stopped() {
            return Ok(());
        }
        // What the open window holds is kept, unrepeated, before stopping.
        self.close_window(false)?;
        Err(CalibrateError::Interrupted {
            measured: self.journal.len(),
        })
    }

    fn first_reading(&mut self) -> Result<(), CalibrateError> {
        if !self.read_once {
            self.read_once = true;
            self.before = self.reading()?;
            self.window_start = Instant::now();
        }
        Ok(())
    }

    /// Times the reference workload and journals the reading.
    fn reading(&mut self) -> Result<Option<f64>, CalibrateError> {
        let r = (self.read)();
        if let Some(cpu_ms) = r {
            let n = self.journal.references() + 1;
            self.journal.append(Entry::Reference { n, cpu_ms })?;
        }
        Ok(r)
    }

    /// Measures `item` into the open window; false when the backend cannot time a network per node.
    fn take(&mut self, item: Item, attempts: u32) -> bool {
        let threads = self.opts.threads;
        let taken = match &item {
            Item::Kernel(cfg) => match measure::kernel(self.backend, cfg, threads) {
                Ok(m) => Taken::Kernel(config_key(cfg), Box::new(m)),
                Err(e) => {
                    self.failures.kernels += 1;
                    self.failures.last = Some(e);
                    return true;
                }
            },
            Item::Network(i) => {
                match innet::measure_network(self.backend, self.opts.seed, *i, threads) {
                    Ok(Some(ms)) if ms.is_empty() => return true,
                    Ok(Some(ms)) => Taken::Network(*i, ms),
                    Ok(None) => return false,
                    Err(e) => {
                        self.failures.networks += 1;
                        self.failures.last = Some(e);
                        return true;
                    }
                }
            }
        };
        if let Taken::Kernel(key, _) = &taken {
            self.pending_keys.insert(key.clone());
        }
        self.pending.push(Pending {
            item,
            taken,
            attempts,
        });
        true
    }

    fn after_item(&mut self) -> Result<(), CalibrateError> {
        (self.progress)(&Event::Measuring {
            elapsed: self.elapsed(),
            budget: self.budget,
            measurements: self.journal.len() + self.pending.len(),
            networks: self.journal.networks(),
            repeats: self.repeats,
        });
        if self.window_start.elapsed() >= self.every {
            self.close_window(true)?;
        }
        Ok(())
    }

    /// Reads the reference workload again and journals the window's measurements with their speed;
    /// with `repeat`, those a speed switch or a wide spread spoiled are measured again (in the next
    /// window) until their attempts run out.
    fn close_window(&mut self, repeat: bool) -> Result<(), CalibrateError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let after = self.reading()?;
        let switched = speed::switched(self.before, after);
        let reference_ms = speed::window_ms(self.before, after);
        self.before = after;
        self.window_start = Instant::now();
        self.pending_keys.clear();
        let mut again = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            let spoiled = switched || matches!(&p.taken, Taken::Kernel(_, m) if speed::wide(m));
            if spoiled && repeat && p.attempts < speed::ATTEMPTS {
                again.push((p.item, p.attempts + 1));
                continue;
            }
            let window = Window {
                reference_ms,
                spoiled,
                attempts: p.attempts,
            };
            match p.taken {
                Taken::Kernel(config, measurement) => self.journal.append(Entry::Kernel {
                    config,
                    measurement: *measurement,
                    window,
                })?,
                Taken::Network(network, ms) => {
                    for (index, measurement) in ms {
                        self.journal.append(Entry::InNetwork {
                            network,
                            index,
                            measurement,
                            window,
                        })?;
                    }
                }
            }
        }
        if !again.is_empty() {
            tracing::debug!(
                measurements = again.len(),
                switched,
                "window spoiled; measuring again"
            );
        }
        self.repeats += again.len();
        for (item, attempts) in again {
            self.take(item, attempts);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::journal::Header;
    use crate::calibrate::prior::Prior;
    use crate::kernels::KernelKind;
    use crate::runtime::{RuntimeError, Timing};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// A backend that answers each timing with the next runs of a script.
    struct Scripted(Mutex<VecDeque<Vec<f64>>>);

    impl Backend for Scripted {
        fn name(&self) -> String {
            "scripted".into()
        }
        fn version(&self) -> String {
            "scripted 1".into()
        }
        fn time_onnx(&self, _: &[u8], _: &crate::runtime::RunSpec) -> Result<Timing, RuntimeError> {
            let runs = self.0.lock().unwrap().pop_front().unwrap_or(vec![1.0; 7]);
            Ok(Timing::from_samples(runs).unwrap())
        }
    }

    #[test]
    fn a_window_spoiled_by_a_switch_or_a_wide_spread_is_measured_again() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::new(dir.path().join("p.json"));
        let header = Header {
            journal: crate::calibrate::journal::FORMAT,
            runtime: "scripted 1".into(),
            threads: 1,
            cpu_model: String::new(),
        };
        let journal = Journal::open(&dir.path().join("j.jsonl"), &header).unwrap();
        let steady = vec![1.0; 7];
        let spread = vec![1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0];
        // Kernel timings in the order taken.
        let backend = Scripted(Mutex::new(VecDeque::from(vec![
            steady.clone(), // a
            steady.clone(), // b: its window ends in a switch
            steady.clone(), // b, again
            steady.clone(), // c
            spread,         // d: its runs spread wide
            steady.clone(), // d, again
        ])));
        // Readings: before a, after a, after b (the speed switched), after b's repeat and c, after
        // d, after d's repeat (when the session finishes).
        let mut readings = VecDeque::from(vec![20.0, 20.0, 30.0, 30.0, 30.0, 30.0]);
        let mut s = Session::new(&opts, &backend, journal, &|_| {});
        s.read = Box::new(move || readings.pop_front());
        s.every = Duration::ZERO;
        let kernels: Vec<Kernel> = Prior::shipped()
            .kernels
            .into_iter()
            .filter(|k| k.kind == KernelKind::Pointwise)
            .take(4)
            .collect();
        for k in &kernels {
            s.kernel(k).unwrap();
        }
        // A configuration already journalled is not taken again.
        s.kernel(&kernels[0]).unwrap();
        let (journal, failures) = s.finish().unwrap();
        assert_eq!(failures.kernels, 0);
        let windows: Vec<Window> = journal
            .entries()
            .iter()
            .filter_map(|e| match e {
                Entry::Kernel { window, .. } => Some(*window),
                _ => None,
            })
            .collect();
        assert_eq!(windows.len(), 4, "{:?}", journal.entries());
        let w = |reference_ms: f64, attempts: u32| Window {
            reference_ms: Some(reference_ms),
            spoiled: false,
            attempts,
        };
        // b was journalled after its repeat, in the window of 30 ms readings, and so was d.
        assert_eq!(
            windows,
            vec![w(20.0, 1), w(30.0, 2), w(30.0, 1), w(30.0, 2)]
        );
        assert_eq!(journal.references(), 6);
    }
}
