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
    Kernel(Kernel),
    Network(usize),
}

/// What a measurement gave, raw.
enum Taken {
    Kernel(Measurement),
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
    reader: Reader,
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
        Session {
            opts,
            backend,
            journal,
            reader: Reader::new(),
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
        self.take(Item::Kernel(cfg.clone()), 1);
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
        let r = self.reader.read();
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
                Ok(m) => Taken::Kernel(m),
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
        if let Item::Kernel(cfg) = &item {
            self.pending_keys.insert(config_key(cfg));
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
        if self.window_start.elapsed() >= speed::EVERY {
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
            let spoiled = switched || matches!(&p.taken, Taken::Kernel(m) if speed::wide(m));
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
                Taken::Kernel(measurement) => self.journal.append(Entry::Kernel {
                    measurement,
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
