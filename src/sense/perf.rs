//! Hardware counters through perf events (perf-event2): cycles, instructions, cache references and
//! misses, LLC read misses, per CPU, system-wide. Where the board has no usable PMU (a VM without a
//! virtual PMU, a locked-down kernel) it says which, and the active probes stand in. The counters
//! are opened through a [`CounterSource`], so a recorded trace can stand in for the kernel's.
use super::counters::{CounterHandle, CounterSource, Event, HwEvent, OpenError, PerfEvents};
use super::error::{SenseError, Unavailable};
use super::fs::{Roots, parse_cpu_list, read_i64, read_string};
use super::sensor::{Frame, SampleCtx, Sensor};
use super::snapshot::{PerfCpu, PerfRates};
use std::sync::Arc;
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

/// Turns a failed `perf_event_open`, or an event a trace lacks, into a reason an operator can act
/// on.
pub(crate) fn explain_open_error(err: &OpenError, event: &str, roots: &Roots) -> Unavailable {
    let err = match err {
        OpenError::Os(e) => e,
        OpenError::NotInTrace { .. } => {
            return Unavailable::new(
                format!("hardware event {event} not supported ({err})"),
                "record the event into the trace, or unset sense.counter_trace to open the \
                 kernel's perf events",
            );
        }
    };
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

struct CpuCounters {
    cpu: usize,
    counters: Vec<Option<Box<dyn CounterHandle>>>,
    last: Vec<Option<u64>>,
}

pub struct PerfSensor {
    roots: Roots,
    /// Where the counters come from, or why the configured trace cannot stand in for them.
    source: Result<Arc<dyn CounterSource>, Unavailable>,
    cpus: Vec<CpuCounters>,
    last_at: Option<Instant>,
}

impl PerfSensor {
    /// On the kernel's perf events.
    pub fn new(roots: Roots) -> Self {
        Self::with_source(roots, Ok(Arc::new(PerfEvents)))
    }

    /// On `source` (see [`super::counters::from_config`]).
    pub fn with_source(roots: Roots, source: Result<Arc<dyn CounterSource>, Unavailable>) -> Self {
        PerfSensor {
            roots,
            source,
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
        let source = self.source.clone()?;
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
            for ev in HwEvent::ALL {
                match source.open(Event::Hardware(ev), cpu) {
                    Ok(c) => counters.push(Some(c)),
                    // Without cycles there is nothing to normalise by: the sensor is down.
                    Err(e) if ev == HwEvent::Cycles => {
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
        let notes: Vec<String> = source
            .origin()
            .into_iter()
            .chain(
                (!missing.is_empty())
                    .then(|| format!("not supported here: {}", missing.join(", "))),
            )
            .collect();
        Ok((!notes.is_empty()).then(|| notes.join("; ")))
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
                let Some(total) = c.read().ok().and_then(|r| r.scaled()) else {
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
                match HwEvent::ALL[i] {
                    HwEvent::Cycles => (p.cycles_total, p.cycles_per_second) = (Some(total), rate),
                    HwEvent::Instructions => {
                        (p.instructions_total, p.instructions_per_second) = (Some(total), rate)
                    }
                    HwEvent::CacheReferences => p.cache_references_total = Some(total),
                    HwEvent::CacheMisses => {
                        (p.cache_misses_total, p.cache_misses_per_second) = (Some(total), rate)
                    }
                    HwEvent::LlcLoadMisses => {
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
    use std::io;
    use std::path::Path;

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
            &io::Error::from_raw_os_error(libc::EACCES).into(),
            "cycles",
            &roots,
        );
        assert!(u.reason.contains("perf_event_paranoid = 2"), "{u}");
        assert!(u.remedy.contains("CAP_PERFMON"), "{u}");
        let u = explain_open_error(
            &io::Error::from_raw_os_error(libc::ENOENT).into(),
            "cycles",
            &roots,
        );
        assert!(
            u.reason.contains("not supported") && u.reason.contains("VM"),
            "{u}"
        );
        assert!(is_cpu_pmu("armv8_pmuv3_0") && is_cpu_pmu("cpu_core") && !is_cpu_pmu("msr"));
        let u = explain_open_error(
            &OpenError::NotInTrace {
                path: "t/counters.txt".into(),
            },
            "LLC-load-misses",
            &roots,
        );
        assert!(
            u.reason.contains("LLC-load-misses not supported")
                && u.reason.contains("t/counters.txt")
                && u.remedy.contains("sense.counter_trace"),
            "{u}"
        );
    }

    #[test]
    fn counts_from_a_source_are_scaled_by_the_time_they_ran() {
        use crate::sense::counters::{CounterTrace, TraceReplay};
        let dir = tempfile::tempdir().unwrap();
        let pmu = dir
            .path()
            .join("sys/bus/event_source/devices/armv8_pmuv3_0");
        std::fs::create_dir_all(&pmu).unwrap();
        std::fs::write(pmu.join("type"), "8\n").unwrap();
        std::fs::create_dir_all(dir.path().join("sys/devices/system/cpu")).unwrap();
        std::fs::write(dir.path().join("sys/devices/system/cpu/online"), "0\n").unwrap();
        let roots = Roots::new(dir.path().join("sys"), dir.path().join("proc"));
        // As many instructions counted as cycles, but cycles ran only half their enabled time: the
        // kernel would have seen twice as many, so IPC is 0.5, not 1.
        let trace = CounterTrace::parse(
            "10 0 cycles 10000000000 10000000000 5000000000\n\
             10 0 instructions 10000000000 10000000000 10000000000\n",
            Path::new("t.txt"),
        )
        .unwrap();
        let mut s = PerfSensor::with_source(roots, Ok(Arc::new(TraceReplay::new(trace))));
        let detail = s.probe().unwrap().unwrap_or_default();
        assert!(
            detail.contains("t.txt")
                && detail.contains("cache-references (not in the counter trace"),
            "{detail}"
        );
        let mut last = None;
        for _ in 0..2 {
            let mut frame = Frame::default();
            let ctx = SampleCtx {
                now: Instant::now(),
                cpu_share: 0.01,
            };
            s.sample(&ctx, &mut frame).unwrap();
            last = frame.perf;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let p = last.unwrap();
        let ipc = p.ipc.unwrap();
        assert!((ipc - 0.5).abs() < 0.01, "{p:?}");
        assert_eq!(p.llc_misses_per_second, None);
    }
}
