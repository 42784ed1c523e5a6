//! Energy over an interval: [`EnergyMeter`] picks the board's best energy source under the fixture
//! roots and integrates it between a start and an end — a cumulative counter by difference (with
//! wrap-around, read often enough that it wraps at most once between readings), a power rail by the
//! trapezoid rule over its samples — or says why it cannot ([`Unavailable`]). [`Meter`] is the
//! interface calibration measures through, so a fake one can stand in for a board.
use super::error::{SenseError, Unavailable};
use super::fs::Roots;
use super::power::{Rail, Reading, counter_delta, discover};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Energy the board used over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub joules: f64,
    pub seconds: f64,
}

impl Interval {
    /// Mean power over the interval (0 for an empty one).
    pub fn watts(&self) -> f64 {
        if self.seconds > 0.0 {
            self.joules / self.seconds
        } else {
            0.0
        }
    }
}

/// Something that measures the energy the board uses while work runs.
pub trait Meter {
    /// What it reads, e.g. `rapl: package-0`.
    fn source(&self) -> String;
    /// Runs `work` on this thread and answers the energy the board used meanwhile.
    fn measure(&mut self, work: &mut dyn FnMut()) -> Result<Interval, SenseError>;
}

/// Sources in order of preference: counters integrate exactly; of the power rails, a dedicated
/// monitor before a generic hwmon rail before the battery (whose current is a coarse fuel-gauge
/// figure).
const PREFERENCE: [(&str, bool); 5] = [
    ("rapl", true),
    ("hwmon", true),
    ("ina3221", false),
    ("hwmon", false),
    ("battery", false),
];

/// The last reading of one rail inside an interval.
#[derive(Debug, Clone, Copy)]
enum Last {
    Counter(u64),
    Watts(f64),
}

/// The board's energy source, integrated over intervals.
#[derive(Debug)]
pub struct EnergyMeter {
    rails: Vec<Rail>,
    counter: bool,
    /// How often [`Meter::measure`] samples while the work runs.
    period: Duration,
    last: Vec<Last>,
    at: Option<Instant>,
    started: Option<Instant>,
    joules: f64,
}

impl EnergyMeter {
    /// The energy source under `roots`, or why there is none.
    pub fn new(roots: &Roots) -> Result<EnergyMeter, Unavailable> {
        let found = discover(roots);
        for (source, counter) in PREFERENCE {
            let group: Vec<Rail> = found
                .rails
                .iter()
                .filter(|r| r.source == source && r.is_counter() == counter)
                .cloned()
                .collect();
            if group.is_empty() {
                continue;
            }
            if source == "battery" {
                check_discharging(roots, &group)?;
            }
            let rails = whole(group);
            return Ok(EnergyMeter {
                last: Vec::with_capacity(rails.len()),
                rails,
                counter,
                period: Duration::from_millis(50),
                at: None,
                started: None,
                joules: 0.0,
            });
        }
        if let Some(u) = found.unreadable("energy counters") {
            return Err(u);
        }
        Err(Unavailable::new(
            format!(
                "no RAPL powercap zone, hwmon power/energy input, INA3221 or battery under {}",
                roots.sys.display()
            ),
            "run on a board that exposes one, or grant read access to /sys/class/powercap (RAPL \
             energy_uj is root-only since 5.10)",
        ))
    }

    /// How often [`Meter::measure`] samples (power rails need it; counters are read to catch wraps).
    pub fn with_period(mut self, period: Duration) -> EnergyMeter {
        self.period = period.max(Duration::from_millis(1));
        self
    }

    /// Starts an interval at `now`.
    pub fn start(&mut self, now: Instant) -> Result<(), SenseError> {
        self.last = self.read_all()?;
        self.at = Some(now);
        self.started = Some(now);
        self.joules = 0.0;
        Ok(())
    }

    /// Adds what the source says happened since the last reading.
    pub fn sample(&mut self, now: Instant) -> Result<(), SenseError> {
        let (Some(at), Some(_)) = (self.at, self.started) else {
            return self.start(now);
        };
        let readings = self.read_all()?;
        let dt = now.saturating_duration_since(at).as_secs_f64();
        for ((rail, prev), cur) in self.rails.iter().zip(&self.last).zip(&readings) {
            self.joules += match (*prev, *cur) {
                (Last::Counter(a), Last::Counter(b)) => {
                    counter_delta(a, b, rail.range()) as f64 / 1e6
                }
                (Last::Watts(a), Last::Watts(b)) => (a + b) / 2.0 * dt,
                _ => 0.0,
            };
        }
        self.last = readings;
        self.at = Some(now);
        Ok(())
    }

    /// Ends the interval at `now`: the energy since [`EnergyMeter::start`].
    pub fn finish(&mut self, now: Instant) -> Result<Interval, SenseError> {
        self.sample(now)?;
        let seconds = self
            .started
            .map(|s| now.saturating_duration_since(s).as_secs_f64())
            .unwrap_or(0.0);
        self.started = None;
        self.at = None;
        Ok(Interval {
            joules: self.joules,
            seconds,
        })
    }

    fn read_all(&self) -> Result<Vec<Last>, SenseError> {
        self.rails
            .iter()
            .map(|r| {
                Ok(match r.raw()? {
                    Reading::Watts(w) => Last::Watts(w),
                    Reading::Microjoules(uj) => Last::Counter(uj),
                })
            })
            .collect()
    }
}

impl Meter for EnergyMeter {
    fn source(&self) -> String {
        let names: Vec<&str> = self.rails.iter().map(|r| r.name.as_str()).collect();
        let source = self.rails.first().map_or("", |r| r.source);
        let what = if self.counter { "energy" } else { "power" };
        format!("{source} {what}: {}", names.join(" + "))
    }

    /// Samples from a second thread while `work` runs here, so a power rail's trapezoid follows the
    /// work's draw; the first failed reading ends the interval with that error.
    fn measure(&mut self, work: &mut dyn FnMut()) -> Result<Interval, SenseError> {
        self.start(Instant::now())?;
        let done = AtomicBool::new(false);
        let period = self.period;
        let sampled = std::thread::scope(|scope| {
            let meter = &mut *self;
            let done = &done;
            let sampler = scope.spawn(move || {
                while !done.load(Ordering::Acquire) {
                    std::thread::sleep(period);
                    meter.sample(Instant::now())?;
                }
                Ok::<(), SenseError>(())
            });
            work();
            done.store(true, Ordering::Release);
            sampler.join().unwrap_or(Err(SenseError::WorkerGone))
        });
        sampled?;
        self.finish(Instant::now())
    }
}

/// The rails whose sum is the board's (or the packages') total: RAPL `psys` alone where it exists
/// (it covers the packages), else the packages without their sub-zones; INA3221's input rail alone
/// where one is named so (`VDD_IN`, `POM_5V_IN`: the others are parts of it); AMD's per-socket
/// energy without its per-core counters; one battery; else every rail.
fn whole(group: Vec<Rail>) -> Vec<Rail> {
    let one_of = |pred: &dyn Fn(&Rail) -> bool| -> Option<Vec<Rail>> {
        let v: Vec<Rail> = group.iter().filter(|r| pred(r)).cloned().collect();
        (!v.is_empty()).then_some(v)
    };
    let source = group.first().map_or("", |r| r.source);
    let picked = match source {
        "rapl" => one_of(&|r| r.name == "psys").or_else(|| one_of(&|r| !r.part)),
        "ina3221" => one_of(&|r| {
            let n = r.name.to_ascii_uppercase();
            n.ends_with("_IN") || n.starts_with("VIN")
        })
        .map(|mut v| {
            v.truncate(1);
            v
        }),
        "hwmon" => one_of(&|r| r.name.to_ascii_lowercase().starts_with("esocket")),
        "battery" => one_of(&|_| true).map(|mut v| {
            v.truncate(1);
            v
        }),
        _ => None,
    };
    picked.unwrap_or(group)
}

/// A battery measures the board only while it feeds it: charging, its current is the charger's.
fn check_discharging(roots: &Roots, group: &[Rail]) -> Result<(), Unavailable> {
    let Some(b) = group.first() else {
        return Ok(());
    };
    let path = roots.sys(&format!("class/power_supply/{}/status", b.name));
    match super::fs::read_trimmed(&path) {
        Ok(s) if s != "Discharging" => Err(Unavailable::new(
            format!(
                "the only power source is battery {} and it is {s}: its current is then not the \
                 board's draw",
                b.name
            ),
            "unplug the charger while calibrating and predicting energy",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_wrap_once() {
        assert_eq!(counter_delta(10, 25, 100), 15);
        assert_eq!(counter_delta(90, 5, 100), 15);
        assert_eq!(counter_delta(u64::MAX - 1, 3, u64::MAX), 4);
    }

    #[test]
    fn empty_roots_are_unavailable_with_a_remedy() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots::new(dir.path().join("sys"), dir.path().join("proc"));
        let e = EnergyMeter::new(&roots).unwrap_err();
        assert!(e.reason.contains("no RAPL powercap zone"), "{e}");
        assert!(e.remedy.contains("/sys/class/powercap"), "{e}");
    }
}
