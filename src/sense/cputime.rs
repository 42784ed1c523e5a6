//! CPU time per core and mode from `/proc/stat` deltas between samples, the run queue
//! (`procs_running`), and augur's own CPU use from `/proc/self/stat`.
//!
//! Read directly rather than through sysinfo, which ignores refreshes sooner than 200 ms apart.
use super::error::{SenseError, Unavailable};
use super::fs::{Roots, read_string};
use super::sensor::{CpuTimeFrame, Frame, ModeFractions, SampleCtx, Sensor};
use super::snapshot::CpuSeconds;
use std::collections::BTreeMap;
use std::path::Path;

/// Cumulative ticks of one `cpu` line: user nice system idle iowait irq softirq steal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticks(pub [u64; 8]);

impl Ticks {
    fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    fn delta(&self, before: &Ticks) -> Ticks {
        let mut d = [0; 8];
        for (i, v) in d.iter_mut().enumerate() {
            // Counters can step back when a CPU goes offline and comes back; treat that as no time.
            *v = self.0[i].saturating_sub(before.0[i]);
        }
        Ticks(d)
    }

    fn seconds(&self, hz: f64) -> CpuSeconds {
        let s = |i: usize| self.0[i] as f64 / hz;
        CpuSeconds {
            user: s(0),
            nice: s(1),
            system: s(2),
            idle: s(3),
            iowait: s(4),
            irq: s(5),
            softirq: s(6),
            steal: s(7),
        }
    }

    fn fractions(&self) -> Option<ModeFractions> {
        let total = self.total() as f64;
        if total <= 0.0 {
            return None;
        }
        let f = |v: u64| v as f64 / total;
        let idle = f(self.0[3]);
        let iowait = f(self.0[4]);
        Some(ModeFractions {
            busy: (1.0 - idle - iowait).max(0.0),
            user: f(self.0[0] + self.0[1]),
            system: f(self.0[2]),
            iowait,
            irq: f(self.0[5] + self.0[6]),
            steal: f(self.0[7]),
            idle,
        })
    }
}

/// The parts of `/proc/stat` augur uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcStat {
    pub all: Ticks,
    pub per_cpu: BTreeMap<usize, Ticks>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,
}

pub(crate) fn parse_proc_stat(text: &str, path: &Path) -> Result<ProcStat, SenseError> {
    let mut out = ProcStat::default();
    let mut saw_all = false;
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let Some(key) = it.next() else { continue };
        if let Some(rest) = key.strip_prefix("cpu") {
            let mut t = [0u64; 8];
            for v in t.iter_mut() {
                // Old kernels have fewer columns; missing ones are zero.
                *v = match it.next() {
                    Some(s) => s
                        .parse()
                        .map_err(|_| SenseError::parse(path, "cpu ticks", line))?,
                    None => 0,
                };
            }
            if rest.is_empty() {
                out.all = Ticks(t);
                saw_all = true;
            } else if let Ok(n) = rest.parse::<usize>() {
                out.per_cpu.insert(n, Ticks(t));
            }
        } else if key == "procs_running" {
            out.procs_running = it.next().and_then(|v| v.parse().ok());
        } else if key == "procs_blocked" {
            out.procs_blocked = it.next().and_then(|v| v.parse().ok());
        }
    }
    if !saw_all {
        return Err(SenseError::parse(path, "the aggregate `cpu` line", text));
    }
    Ok(out)
}

/// utime + stime of `/proc/<pid>/stat`, in ticks. The command name may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_self_stat(text: &str, path: &Path) -> Result<u64, SenseError> {
    let after = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_ascii_whitespace().collect();
    // After the comm come state(3) ppid(4) … utime(14) stime(15): indices 11 and 12 here.
    let get = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (get(11), get(12)) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => Err(SenseError::parse(path, "utime/stime", text)),
    }
}

pub struct CpuTimeSensor {
    roots: Roots,
    clk_tck: f64,
    last: Option<(ProcStat, Option<u64>)>,
}

impl CpuTimeSensor {
    pub fn new(roots: Roots) -> Self {
        CpuTimeSensor {
            roots,
            clk_tck: clk_tck(),
            last: None,
        }
    }

    fn own_ticks(&self) -> Option<u64> {
        let path = self.roots.proc("self/stat");
        let text = read_string(&path).ok()?;
        parse_self_stat(&text, &path).ok()
    }
}

/// USER_HZ, the unit of `/proc/stat`; 100 on every Linux ABI in use, the fallback if sysconf fails.
fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as f64 } else { 100.0 }
}

impl Sensor for CpuTimeSensor {
    fn name(&self) -> &'static str {
        "cpu_time"
    }

    fn probe(&mut self) -> Result<Option<String>, Unavailable> {
        let path = self.roots.proc("stat");
        let text = read_string(&path).map_err(|e| {
            Unavailable::new(e.to_string(), "mount procfs (mount -t proc proc /proc)")
        })?;
        let stat = parse_proc_stat(&text, &path)
            .map_err(|e| Unavailable::new(e.to_string(), "report this /proc/stat format"))?;
        let own = self.own_ticks();
        let detail = format!(
            "{} CPUs from {}{}",
            stat.per_cpu.len(),
            path.display(),
            if own.is_none() {
                "; own-process CPU unknown (no self/stat)"
            } else {
                ""
            }
        );
        Ok(Some(detail))
    }

    fn sample(&mut self, _: &SampleCtx, frame: &mut Frame) -> Result<(), SenseError> {
        let path = self.roots.proc("stat");
        let now = parse_proc_stat(&read_string(&path)?, &path)?;
        let own = self.own_ticks();
        let mut out = CpuTimeFrame {
            total_seconds: Some(now.all.seconds(self.clk_tck)),
            per_cpu_seconds: now
                .per_cpu
                .iter()
                .map(|(c, t)| (*c, t.seconds(self.clk_tck)))
                .collect(),
            procs_running: now.procs_running,
            procs_blocked: now.procs_blocked,
            ..Default::default()
        };
        if let Some((before, own_before)) = &self.last {
            let d = now.all.delta(&before.all);
            out.modes = d.fractions();
            for (cpu, t) in &now.per_cpu {
                if let Some(b) = before.per_cpu.get(cpu)
                    && let Some(f) = t.delta(b).fractions()
                {
                    out.per_cpu_busy.push((*cpu, f.busy));
                }
            }
            if let (Some(o), Some(ob)) = (own, own_before) {
                let total = d.total();
                if total > 0 {
                    out.own_fraction = Some((o.saturating_sub(*ob) as f64 / total as f64).min(1.0));
                }
            }
        }
        self.last = Some((now, own));
        frame.cpu_time = Some(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_stat_with_a_hostile_comm() {
        let line = "42 (a) b) c) R 1 42 42 0 -1 4194304 99 0 0 0 7 5 0 0 20 0 1 0 40221";
        assert_eq!(parse_self_stat(line, Path::new("x")).unwrap(), 12);
        assert!(parse_self_stat("42 (x) R 1", Path::new("x")).is_err());
    }

    #[test]
    fn fractions_sum_to_one() {
        let f = Ticks([60, 10, 10, 10, 5, 3, 2, 0]).fractions().unwrap();
        let sum = f.user + f.system + f.iowait + f.irq + f.steal + f.idle;
        assert!((sum - 1.0).abs() < 1e-9);
        assert!((f.busy - 0.85).abs() < 1e-9);
        assert_eq!(Ticks([0; 8]).fractions(), None);
    }
}
