//! Hardware counters through perf events (perf-event2): cycles, instructions, cache references and
//! misses, LLC read misses, per CPU, system-wide. Where the board has no usable PMU (a VM without a
//! virtual PMU, a locked-down kernel) it says which, and the active probes stand in.
use super::error::{SenseError, Unavailable};
use super::fs::{Roots, parse_cpu_list, read_i64, read_string};
use super::sensor::{Frame, SampleCtx, Sensor};
use super::snapshot::{PerfCpu, PerfRates};
use perf_event::events::{Cache, CacheId, CacheOp, CacheResult, Hardware};
use perf_event::{Builder, Counter};
use std::io;
use std::time::Instant;

/// The CPU PMU's sysfs name differs by architecture and kernel.
fn is_cpu_pmu(name: &str) -> bool {
    name == "cpu"
        || name.starts_with("cpu_")
        || name.starts_with("armv")
        || name.starts_with("arm_cortex")
        || name.contains("pmuv3")
        || name.starts_with("riscv")
}

pub(crate) fn pmu_names(roots: &Roots) -> Vec<String> {
    let dir = roots.sys("bus/event_source/devices");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// " (this is a VM: …)" when `/proc/cpuinfo` carries the `hypervisor` flag.
pub(crate) fn vm_hint(roots: &Roots) -> &'static str {
    let virt = read_string(&roots.proc("cpuinfo")).is_ok_and(|s| {
        s.lines().any(|l| {
            l.starts_with("flags") && l.split_ascii_whitespace().any(|f| f == "hypervisor")
        })
    });
    if virt {
        " (this is a VM and the hypervisor exposes no virtual PMU)"
    } else {
        ""
    }
}

/// Turns a failed `perf_event_open` into a reason an operator can act on.
pub(crate) fn explain_open_error(err: &io::Error, event: &str, roots: &Roots) -> Unavailable {
    let paranoid = read_i64(&roots.proc("sys/kernel/perf_event_paranoid"))
        .map(|v| v.to_string())
        .unwrap_or_else(|_| "unknown".into());
    match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => Unavailable::new(
            format!(
                "perf_event_open({event}) denied ({err}): kernel.perf_event_paranoid = {paranoid} \
                 (system-wide per-CPU counters need <= 0) and augur lacks CAP_PERFMON, or a \
                 container's seccomp profile blocks perf_event_open"
            ),
            "sysctl -w kernel.perf_event_paranoid=0, or grant CAP_PERFMON \
             (AmbientCapabilities=CAP_PERFMON in the systemd unit)",
        ),
        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) | Some(libc::ENODEV) | Some(libc::EINVAL) => {
            Unavailable::new(
                format!(
                    "hardware event {event} not supported ({err}){}",
                    vm_hint(roots)
                ),
                "run on bare metal or enable the VM's virtual PMU (e.g. QEMU/KVM `-cpu host,pmu=on`); \
                 the active probes stand in meanwhile",
            )
        }
        Some(libc::EMFILE) | Some(libc::ENFILE) => Unavailable::new(
            format!("perf_event_open({event}): {err}"),
            "raise the file-descriptor limit (LimitNOFILE in the systemd unit)",
        ),
        _ => Unavailable::new(
            format!("perf_event_open({event}): {err}"),
            "check dmesg for PMU errors",
        ),
    }
}

#[derive(Clone, Copy)]
enum Ev {
    Cycles,
    Instructions,
    CacheRefs,
    CacheMisses,
    LlcMisses,
}

const EVENTS: [Ev; 5] = [
    Ev::Cycles,
    Ev::Instructions,
    Ev::CacheRefs,
    Ev::CacheMisses,
    Ev::LlcMisses,
];

impl Ev {
    fn label(self) -> &'static str {
        match self {
            Ev::Cycles => "cycles",
            Ev::Instructions => "instructions",
            Ev::CacheRefs => "cache-references",
            Ev::CacheMisses => "cache-misses",
            Ev::LlcMisses => "LLC-load-misses",
        }
    }

    fn open(self, cpu: usize) -> io::Result<Counter> {
        let mut b = match self {
            Ev::Cycles => Builder::new(Hardware::CPU_CYCLES),
            Ev::Instructions => Builder::new(Hardware::INSTRUCTIONS),
            Ev::CacheRefs => Builder::new(Hardware::CACHE_REFERENCES),
            Ev::CacheMisses => Builder::new(Hardware::CACHE_MISSES),
            Ev::LlcMisses => Builder::new(Cache {
                which: CacheId::LL,
                operation: CacheOp::READ,
                result: CacheResult::MISS,
            }),
        };
        b.one_cpu(cpu)
            .any_pid()
            .include_kernel()
            .enabled(true)
            .build()
    }
}

/// Count scaled for multiplexing: the kernel time-shares counters when there are too few.
fn read_scaled(c: &mut Counter) -> Option<u64> {
    let r = c.read_count_and_time().ok()?;
    if r.time_running == 0 {
        return None;
    }
    Some((r.count as f64 * r.time_enabled as f64 / r.time_running as f64) as u64)
}

struct CpuCounters {
    cpu: usize,
    counters: Vec<Option<Counter>>,
    last: Vec<Option<u64>>,
}

pub struct PerfSensor {
    roots: Roots,
    cpus: Vec<CpuCounters>,
    last_at: Option<Instant>,
}

impl PerfSensor {
    pub fn new(roots: Roots) -> Self {
        PerfSensor {
            roots,
            cpus: Vec::new(),
            last_at: None,
        }
    }
}

impl Sensor for PerfSensor {
    fn name(&self) -> &'static str {
        "perf"
    }

    fn probe(&mut self) -> Result<Option<String>, Unavailable> {
        let pmus = pmu_names(&self.roots);
        let dir = self.roots.sys("bus/event_source/devices");
        if !pmus.iter().any(|p| is_cpu_pmu(p)) {
            return Err(Unavailable::new(
                format!(
                    "hardware counters not supported: no CPU PMU in {} (only: {}){}",
                    dir.display(),
                    if pmus.is_empty() {
                        "nothing".to_string()
                    } else {
                        pmus.join(", ")
                    },
                    vm_hint(&self.roots)
                ),
                "run on bare metal or enable the VM's virtual PMU (e.g. QEMU/KVM `-cpu host,pmu=on`); \
                 the active probes (probe_compute, probe_memory) stand in meanwhile",
            ));
        }
        let online = read_string(&self.roots.sys("devices/system/cpu/online"))
            .ok()
            .and_then(|s| parse_cpu_list(&s))
            .unwrap_or_else(|| vec![0]);
        let mut missing = Vec::new();
        for cpu in online {
            let mut counters = Vec::new();
            for ev in EVENTS {
                match ev.open(cpu) {
                    Ok(c) => counters.push(Some(c)),
                    // Without cycles there is nothing to normalise by: the sensor is down.
                    Err(e) if matches!(ev, Ev::Cycles) => {
                        self.cpus.clear();
                        return Err(explain_open_error(&e, ev.label(), &self.roots));
                    }
                    Err(e) => {
                        if cpu == 0 {
                            missing.push(format!("{} ({e})", ev.label()));
                        }
                        counters.push(None);
                    }
                }
            }
            self.cpus.push(CpuCounters {
                cpu,
                last: vec![None; counters.len()],
                counters,
            });
        }
        Ok((!missing.is_empty()).then(|| format!("not supported here: {}", missing.join(", "))))
    }

    fn sample(&mut self, ctx: &SampleCtx, frame: &mut Frame) -> Result<(), SenseError> {
        let dt = self
            .last_at
            .map(|t| ctx.now.duration_since(t).as_secs_f64())
            .filter(|d| *d > 0.0);
        self.last_at = Some(ctx.now);
        let mut out = PerfRates::default();
        let mut sums = [0.0f64; 5];
        let mut have = [false; 5];
        for cc in &mut self.cpus {
            let mut p = PerfCpu {
                cpu: cc.cpu,
                ..Default::default()
            };
            for (i, slot) in cc.counters.iter_mut().enumerate() {
                let Some(c) = slot else { continue };
                let Some(total) = read_scaled(c) else {
                    continue;
                };
                let rate = match (dt, cc.last[i]) {
                    (Some(dt), Some(prev)) => Some(total.saturating_sub(prev) as f64 / dt),
                    _ => None,
                };
                cc.last[i] = Some(total);
                if let Some(r) = rate {
                    sums[i] += r;
                    have[i] = true;
                }
                match EVENTS[i] {
                    Ev::Cycles => (p.cycles_total, p.cycles_per_second) = (Some(total), rate),
                    Ev::Instructions => {
                        (p.instructions_total, p.instructions_per_second) = (Some(total), rate)
                    }
                    Ev::CacheRefs => p.cache_references_total = Some(total),
                    Ev::CacheMisses => {
                        (p.cache_misses_total, p.cache_misses_per_second) = (Some(total), rate)
                    }
                    Ev::LlcMisses => {
                        (p.llc_misses_total, p.llc_misses_per_second) = (Some(total), rate)
                    }
                }
            }
            out.cpus.push(p);
        }
        let ratio =
            |a: usize, b: usize| (have[a] && have[b] && sums[b] > 0.0).then(|| sums[a] / sums[b]);
        out.ipc = ratio(1, 0);
        out.cache_miss_ratio = ratio(3, 2);
        out.llc_misses_per_second = have[4].then_some(sums[4]);
        frame.perf = Some(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_name_their_remedy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(
            dir.path().join("proc/sys/kernel/perf_event_paranoid"),
            "2\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("proc/cpuinfo"),
            "flags\t\t: fpu hypervisor\n",
        )
        .unwrap();
        let roots = Roots::new(dir.path().join("sys"), dir.path().join("proc"));
        let u = explain_open_error(
            &io::Error::from_raw_os_error(libc::EACCES),
            "cycles",
            &roots,
        );
        assert!(u.reason.contains("perf_event_paranoid = 2"), "{u}");
        assert!(u.remedy.contains("CAP_PERFMON"), "{u}");
        let u = explain_open_error(
            &io::Error::from_raw_os_error(libc::ENOENT),
            "cycles",
            &roots,
        );
        assert!(
            u.reason.contains("not supported") && u.reason.contains("VM"),
            "{u}"
        );
        assert!(is_cpu_pmu("armv8_pmuv3_0") && is_cpu_pmu("cpu_core") && !is_cpu_pmu("msr"));
    }
}
