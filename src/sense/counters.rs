//! Where the hardware counters come from. The `perf` and `memory_pmu` sensors open their events
//! through a [`CounterSource`]: "event E on CPU c" gives a handle that reads (count, time enabled,
//! time running). [`PerfEvents`], the default, opens real perf events (`perf_event_open`);
//! [`TraceReplay`] replays a recorded counter trace (`sense.counter_trace`), so that those two
//! sensors can run against a fixture board the way the others run against a fixture
//! `sense.sysfs_root` (node_exporter's `--path.sysfs`).
//!
//! # Trace format
//!
//! Plain text, one record a line, whitespace-separated; `#` starts a comment:
//!
//! ```text
//! # seconds  cpu  event                 count       time_enabled_ns  time_running_ns
//! 1.0        0    cycles                1200000000  1000000000       1000000000
//! 1.0        0    arm_dsu_0/bus_access  20000000    1000000000       1000000000
//! ```
//!
//! `seconds` is the offset from when the counters were opened, at which they read 0; events are
//! named as `perf stat -e` names them (`cycles`, `instructions`, `cache-references`,
//! `cache-misses`, `LLC-load-misses`, and `pmu/event` for a PMU's sysfs event). Each (cpu, event)
//! is a series whose records must come in time order with counts and times that never fall.
//!
//! Replay goes by the time elapsed since the source was opened: linear between records (from 0 at
//! offset 0), held at the series' last record until the trace's last offset, then wrapping round
//! with the last record's values added at each wrap, so that a long-running daemon keeps reading
//! counts that only grow, as a kernel counter does.
//!
//! The replay is hand-written: no crate replays counter readings by the clock (perf's own
//! `perf.data` holds samples for `perf report`, not counts to read back).
use super::config::SenseConfig;
use super::error::Unavailable;
use perf_event::events::{Cache, CacheId, CacheOp, CacheResult, Hardware, Raw};
use perf_event::{Builder, Counter};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// A PMU event resolved from sysfs (by the `memory_pmu` sensor), ready to open. It lives with the
/// sources that open it, so that the sensors depend on the sources and never the other way round.
#[derive(Debug, Clone, PartialEq)]
pub struct PmuEvent {
    pub pmu: String,
    pub event: String,
    pub ty: u32,
    pub config: [u64; 3],
    pub cpu: usize,
    pub bytes_per_count: f64,
}

/// The generic hardware events the `perf` sensor opens on each CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwEvent {
    Cycles,
    Instructions,
    CacheReferences,
    CacheMisses,
    LlcLoadMisses,
}

impl HwEvent {
    pub const ALL: [HwEvent; 5] = [
        HwEvent::Cycles,
        HwEvent::Instructions,
        HwEvent::CacheReferences,
        HwEvent::CacheMisses,
        HwEvent::LlcLoadMisses,
    ];

    /// The name `perf stat -e` uses, and a trace too.
    pub fn label(self) -> &'static str {
        match self {
            HwEvent::Cycles => "cycles",
            HwEvent::Instructions => "instructions",
            HwEvent::CacheReferences => "cache-references",
            HwEvent::CacheMisses => "cache-misses",
            HwEvent::LlcLoadMisses => "LLC-load-misses",
        }
    }
}

/// An event to open: a generic hardware event, or one resolved from a PMU's sysfs description.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Hardware(HwEvent),
    Pmu(&'a PmuEvent),
}

impl Event<'_> {
    /// `cycles`, `arm_dsu_0/bus_access`: how operators and traces name it.
    pub fn name(&self) -> String {
        match self {
            Event::Hardware(h) => h.label().to_string(),
            Event::Pmu(p) => format!("{}/{}", p.pmu, p.event),
        }
    }
}

/// One read of a counter; times in nanoseconds, 0 where the source does not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    pub count: u64,
    pub time_enabled: u64,
    pub time_running: u64,
}

impl Reading {
    /// The count scaled for multiplexing: the kernel time-shares counters when there are too few,
    /// and a counter that ran half the time it was enabled saw half the events.
    pub fn scaled(&self) -> Option<u64> {
        if self.time_running == 0 {
            return None;
        }
        Some((self.count as f64 * self.time_enabled as f64 / self.time_running as f64) as u64)
    }
}

/// An open counter.
pub trait CounterHandle: Send {
    fn read(&mut self) -> io::Result<Reading>;
}

/// Why an event could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// What `perf_event_open` said.
    #[error("{0}")]
    Os(#[from] io::Error),
    /// The configured trace has no record of this event on this CPU.
    #[error("not in the counter trace {}", path.display())]
    NotInTrace { path: PathBuf },
}

/// Opens counters: "event E on CPU c, system-wide".
pub trait CounterSource: Send + Sync {
    fn open(&self, event: Event<'_>, cpu: usize) -> Result<Box<dyn CounterHandle>, OpenError>;

    /// Where the counts come from when it is not the kernel, for the sensor's detail.
    fn origin(&self) -> Option<String> {
        None
    }
}

/// The counter source a configuration asks for: the kernel's perf events, or the replay of
/// `sense.counter_trace` (or why that trace cannot be replayed, for both sensors to report).
pub fn from_config(cfg: &SenseConfig) -> Result<Arc<dyn CounterSource>, Unavailable> {
    match &cfg.counter_trace {
        None => Ok(Arc::new(PerfEvents)),
        Some(path) => match CounterTrace::load(path) {
            Ok(trace) => Ok(Arc::new(TraceReplay::new(trace))),
            Err(e) => Err(Unavailable::new(
                e.to_string(),
                "fix the trace, or unset sense.counter_trace to read the kernel's perf events",
            )),
        },
    }
}

/// Real perf events, per CPU, any process, kernel included.
pub struct PerfEvents;

struct PerfHandle(Counter);

impl CounterHandle for PerfHandle {
    fn read(&mut self) -> io::Result<Reading> {
        let data = self.0.read_full()?;
        let nanos = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_nanos() as u64);
        Ok(Reading {
            count: data.count(),
            time_enabled: nanos(data.time_enabled()),
            time_running: nanos(data.time_running()),
        })
    }
}

impl CounterSource for PerfEvents {
    fn open(&self, event: Event<'_>, cpu: usize) -> Result<Box<dyn CounterHandle>, OpenError> {
        let mut b = match event {
            Event::Hardware(HwEvent::Cycles) => Builder::new(Hardware::CPU_CYCLES),
            Event::Hardware(HwEvent::Instructions) => Builder::new(Hardware::INSTRUCTIONS),
            Event::Hardware(HwEvent::CacheReferences) => Builder::new(Hardware::CACHE_REFERENCES),
            Event::Hardware(HwEvent::CacheMisses) => Builder::new(Hardware::CACHE_MISSES),
            Event::Hardware(HwEvent::LlcLoadMisses) => Builder::new(Cache {
                which: CacheId::LL,
                operation: CacheOp::READ,
                result: CacheResult::MISS,
            }),
            Event::Pmu(ev) => {
                let raw = Raw::new(ev.config[0])
                    .config1(ev.config[1])
                    .config2(ev.config[2]);
                let mut b = Builder::new(raw);
                b.attrs_mut().type_ = ev.ty;
                b
            }
        };
        let c = b
            .one_cpu(cpu)
            .any_pid()
            .include_kernel()
            .enabled(true)
            .build()?;
        Ok(Box::new(PerfHandle(c)))
    }
}

/// A trace that cannot be replayed: the file, the line where known, and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("counter trace {}{}: {what}", path.display(), at_line(line))]
pub struct TraceError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub what: String,
}

fn at_line(line: &Option<usize>) -> String {
    line.map(|l| format!(", line {l}")).unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    t: f64,
    reading: Reading,
}

/// The records of one (cpu, event), in time order.
#[derive(Debug)]
struct Series {
    points: Vec<Point>,
}

impl Series {
    /// The reading `elapsed` seconds after opening, for a trace that repeats every `period`.
    fn at(&self, elapsed: f64, period: f64) -> Reading {
        let Some(last) = self.points.last() else {
            return Reading::default();
        };
        let elapsed = if elapsed.is_finite() {
            elapsed.max(0.0)
        } else {
            0.0
        };
        let wraps = (elapsed / period).floor();
        let r = (elapsed - wraps * period).clamp(0.0, period);
        let wraps = wraps.min(u64::MAX as f64) as u64;
        let i = self.points.partition_point(|p| p.t <= r);
        let within = if i == self.points.len() {
            last.reading
        } else {
            let (a, b) = match i {
                0 => (
                    Point {
                        t: 0.0,
                        reading: Reading::default(),
                    },
                    self.points[0],
                ),
                _ => (self.points[i - 1], self.points[i]),
            };
            let f = ((r - a.t) / (b.t - a.t)).clamp(0.0, 1.0);
            // b ≥ a field by field (checked at parse): this stays within [a, b] and grows with r.
            let lerp = |x: u64, y: u64| x + ((y - x) as f64 * f) as u64;
            Reading {
                count: lerp(a.reading.count, b.reading.count),
                time_enabled: lerp(a.reading.time_enabled, b.reading.time_enabled),
                time_running: lerp(a.reading.time_running, b.reading.time_running),
            }
        };
        let add = |base: u64, v: u64| base.saturating_mul(wraps).saturating_add(v);
        Reading {
            count: add(last.reading.count, within.count),
            time_enabled: add(last.reading.time_enabled, within.time_enabled),
            time_running: add(last.reading.time_running, within.time_running),
        }
    }
}

/// A parsed counter trace.
#[derive(Debug)]
pub struct CounterTrace {
    path: PathBuf,
    /// The last offset in the whole trace: every series repeats with it, so CPUs stay in step.
    period: f64,
    series: HashMap<(usize, String), Arc<Series>>,
}

impl CounterTrace {
    pub fn load(path: &Path) -> Result<Self, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|e| TraceError {
            path: path.to_path_buf(),
            line: None,
            what: format!("cannot read it: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a trace; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TraceError> {
        let err = |line: usize, what: String| TraceError {
            path: path.to_path_buf(),
            line: Some(line),
            what,
        };
        let mut series: HashMap<(usize, String), Vec<Point>> = HashMap::new();
        let mut period = 0.0f64;
        for (n, raw) in text.lines().enumerate() {
            let n = n + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let [t, cpu, event, count, enabled, running] = f[..] else {
                return Err(err(
                    n,
                    format!(
                        "expected 6 fields (seconds cpu event count time_enabled_ns \
                         time_running_ns), found {}",
                        f.len()
                    ),
                ));
            };
            let t = t
                .parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .ok_or_else(|| err(n, format!("`{t}` is not a time offset in seconds")))?;
            let cpu = cpu
                .parse::<usize>()
                .map_err(|_| err(n, format!("`{cpu}` is not a CPU number")))?;
            let int = |s: &str, what: &str| {
                s.parse::<u64>()
                    .map_err(|_| err(n, format!("`{s}` is not a {what} (an unsigned integer)")))
            };
            let reading = Reading {
                count: int(count, "count")?,
                time_enabled: int(enabled, "time_enabled_ns")?,
                time_running: int(running, "time_running_ns")?,
            };
            if reading.time_running > reading.time_enabled {
                return Err(err(n, "time_running_ns exceeds time_enabled_ns".into()));
            }
            let points = series.entry((cpu, event.to_string())).or_default();
            if let Some(prev) = points.last() {
                if t <= prev.t {
                    return Err(err(
                        n,
                        format!(
                            "{event} on cpu {cpu} at {t} s does not follow its record at {} s",
                            prev.t
                        ),
                    ));
                }
                let p = prev.reading;
                if reading.count < p.count
                    || reading.time_enabled < p.time_enabled
                    || reading.time_running < p.time_running
                {
                    return Err(err(
                        n,
                        format!(
                            "{event} on cpu {cpu} falls below its record at {} s",
                            prev.t
                        ),
                    ));
                }
            }
            points.push(Point { t, reading });
            period = period.max(t);
        }
        if series.is_empty() {
            return Err(TraceError {
                path: path.to_path_buf(),
                line: None,
                what: "no records".into(),
            });
        }
        if period <= 0.0 {
            return Err(TraceError {
                path: path.to_path_buf(),
                line: None,
                what: "every record is at 0 s: the trace spans no time".into(),
            });
        }
        Ok(CounterTrace {
            path: path.to_path_buf(),
            period,
            series: series
                .into_iter()
                .map(|(k, points)| (k, Arc::new(Series { points })))
                .collect(),
        })
    }

    /// Seconds after which the trace repeats.
    pub fn period(&self) -> f64 {
        self.period
    }

    /// What `event` on `cpu` reads `elapsed` seconds after opening; None if the trace lacks it.
    pub fn reading(&self, cpu: usize, event: &str, elapsed: f64) -> Option<Reading> {
        self.series
            .get(&(cpu, event.to_string()))
            .map(|s| s.at(elapsed, self.period))
    }
}

/// Replays a [`CounterTrace`] by the wall clock, from when the source was made.
pub struct TraceReplay {
    trace: Arc<CounterTrace>,
    opened: Instant,
}

impl TraceReplay {
    pub fn new(trace: CounterTrace) -> Self {
        TraceReplay {
            trace: Arc::new(trace),
            opened: Instant::now(),
        }
    }
}

struct TraceHandle {
    series: Arc<Series>,
    period: f64,
    opened: Instant,
}

impl CounterHandle for TraceHandle {
    fn read(&mut self) -> io::Result<Reading> {
        Ok(self
            .series
            .at(self.opened.elapsed().as_secs_f64(), self.period))
    }
}

impl CounterSource for TraceReplay {
    fn open(&self, event: Event<'_>, cpu: usize) -> Result<Box<dyn CounterHandle>, OpenError> {
        match self.trace.series.get(&(cpu, event.name())) {
            Some(s) => Ok(Box::new(TraceHandle {
                series: s.clone(),
                period: self.trace.period,
                opened: self.opened,
            })),
            None => Err(OpenError::NotInTrace {
                path: self.trace.path.clone(),
            }),
        }
    }

    fn origin(&self) -> Option<String> {
        Some(format!(
            "replayed from the counter trace {}",
            self.trace.path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# seconds cpu event count enabled running
1.0 0 cycles 1000 1000000000 1000000000
2.0 0 cycles 3000 2000000000 2000000000   # a busier second
4.0 0 cycles 4000 4000000000 4000000000
2.0 1 LLC-load-misses 50 2000000000 1000000000
";

    fn good() -> CounterTrace {
        CounterTrace::parse(GOOD, Path::new("t.txt")).unwrap()
    }

    #[test]
    fn a_good_trace_parses_and_interpolates() {
        let t = good();
        assert_eq!(t.period(), 4.0);
        let at = |s: f64| t.reading(0, "cycles", s).unwrap();
        assert_eq!(at(0.0), Reading::default());
        assert_eq!(at(0.5).count, 500, "from 0 at offset 0");
        assert_eq!(at(1.5).count, 2000);
        assert_eq!(at(1.5).time_enabled, 1_500_000_000);
        assert_eq!(at(3.0).count, 3500);
        // A series that ends before the trace does holds its last record until the wrap.
        assert_eq!(t.reading(1, "LLC-load-misses", 3.0).unwrap().count, 50);
        assert_eq!(t.reading(0, "instructions", 1.0), None);
        assert_eq!(t.reading(2, "cycles", 1.0), None);
    }

    #[test]
    fn counts_keep_growing_across_wraps() {
        let t = good();
        let mut prev = Reading::default();
        for i in 0..=400 {
            let r = t.reading(0, "cycles", i as f64 * 0.05).unwrap();
            assert!(r.count >= prev.count, "{r:?} after {prev:?} at step {i}");
            assert!(r.time_enabled >= prev.time_enabled && r.time_running >= prev.time_running);
            prev = r;
        }
        // Four wraps of 4 s: each adds the last record's count.
        assert_eq!(prev.count, 5 * 4000);
        assert_eq!(t.reading(0, "cycles", 4.5).unwrap().count, 4000 + 500);
        assert_eq!(t.reading(0, "cycles", 9.0).unwrap().count, 2 * 4000 + 1000);
        // The second pass of a series that ends early: rising again, then held.
        assert_eq!(t.reading(1, "LLC-load-misses", 5.0).unwrap().count, 50 + 25);
        assert_eq!(t.reading(1, "LLC-load-misses", 7.9).unwrap().count, 50 + 50);
        assert!(t.reading(0, "cycles", 1e12).unwrap().count > 0);
        assert!(t.reading(0, "cycles", f64::NAN).is_some());
    }

    #[test]
    fn time_running_scales_the_count() {
        let t = good();
        // LLC-load-misses on cpu 1 ran half the time it was enabled: 50 seen, 100 happened.
        let r = t.reading(1, "LLC-load-misses", 2.0).unwrap();
        assert_eq!((r.count, r.scaled()), (50, Some(100)));
        let r = t.reading(0, "cycles", 2.0).unwrap();
        assert_eq!(r.scaled(), Some(3000));
        assert_eq!(Reading::default().scaled(), None, "never ran: no count");
    }

    #[test]
    fn bad_lines_are_named() {
        let bad = |text: &str, line: usize, needle: &str| {
            let e = CounterTrace::parse(text, Path::new("x/counters.txt")).unwrap_err();
            assert_eq!(e.line, Some(line), "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains("x/counters.txt") && msg.contains(&format!("line {line}")),
                "{msg}"
            );
            assert!(msg.contains(needle), "{msg}");
        };
        bad(
            "# h\n1 0 cycles 5 1 1\n1 0 cycles\n",
            3,
            "expected 6 fields",
        );
        bad("1 0 cycles -5 1 1\n", 1, "not a count");
        bad("x 0 cycles 5 1 1\n", 1, "time offset");
        bad("1 zero cycles 5 1 1\n", 1, "CPU number");
        bad("1 0 cycles 5 1 2\n", 1, "exceeds");
        bad(
            "1 0 cycles 5 1 1\n\n0.5 0 cycles 6 1 1\n",
            3,
            "does not follow",
        );
        bad("1 0 cycles 5 1 1\n2 0 cycles 4 2 2\n", 2, "falls below");
        bad("1 0 cycles 5 1 1\ninf 0 cycles 6 2 2\n", 2, "time offset");
        let e = CounterTrace::parse("# nothing\n", Path::new("e.txt")).unwrap_err();
        assert!(
            e.line.is_none() && e.to_string().contains("no records"),
            "{e}"
        );
        let e = CounterTrace::parse("0 0 cycles 0 0 0\n", Path::new("e.txt")).unwrap_err();
        assert!(e.to_string().contains("spans no time"), "{e}");
        let e = CounterTrace::load(Path::new("/nonexistent/counters.txt")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/counters.txt"), "{e}");
    }

    #[test]
    fn a_missing_event_is_an_open_error_and_a_bad_trace_is_unavailable() {
        let src = TraceReplay::new(good());
        let err = src
            .open(Event::Hardware(HwEvent::Instructions), 0)
            .err()
            .unwrap();
        assert!(matches!(err, OpenError::NotInTrace { .. }), "{err}");
        let mut h = src.open(Event::Hardware(HwEvent::Cycles), 0).unwrap();
        let a = h.read().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            h.read().unwrap().count > a.count,
            "replay follows the clock"
        );
        assert!(src.origin().unwrap().contains("t.txt"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.txt");
        std::fs::write(&path, "1 0 cycles 10 1 1\n2 0 cycles 5 2 2\n").unwrap();
        let cfg = SenseConfig {
            counter_trace: Some(path),
            ..SenseConfig::default()
        };
        let u = from_config(&cfg).err().unwrap();
        assert!(
            u.reason.contains("bad.txt, line 2") && u.remedy.contains("sense.counter_trace"),
            "{u}"
        );
        assert!(
            from_config(&SenseConfig::default())
                .unwrap()
                .origin()
                .is_none()
        );
    }
}
