//! DRAM bandwidth from uncore/DSU/DDR PMUs where the board exposes one: the PMU's sysfs `format/`
//! and `events/` are parsed (under the configurable root) into a perf event, opened system-wide on
//! the CPU the PMU's `cpumask` names (through a [`CounterSource`]: the kernel's perf events, or a
//! recorded trace), and its count is turned into bytes.
pub use super::counters::PmuEvent;
use super::counters::{CounterHandle, CounterSource, Event, PerfEvents};
use super::error::{SenseError, Unavailable};
use super::fs::{Roots, parse_cpu_list, read_string, read_trimmed, read_u64};
use super::perf::{explain_open_error, pmu_names, vm_hint};
use super::sensor::{Frame, SampleCtx, Sensor};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// PMUs known to count DRAM traffic: name prefix, events, bytes per count when sysfs gives no scale.
const MEMORY_PMUS: &[(&str, &[&str], f64)] = &[
    // Intel integrated memory controller: one CAS = one 64-byte line (sysfs also gives .scale/.unit).
    ("uncore_imc", &["cas_count_read", "cas_count_write"], 64.0),
    // Arm DynamIQ Shared Unit: bus accesses, counted as one cache line each (an approximation).
    ("arm_dsu", &["bus_access"], 64.0),
];

/// Places `value` into the bits a format file names: `config:0-7`, `config1:8`, `config:0-7,32-35`.
fn place(format: &str, value: u64, config: &mut [u64; 3], path: &Path) -> Result<(), SenseError> {
    let bad = || SenseError::parse(path, "a PMU format", format);
    let (dest, ranges) = format.trim().split_once(':').ok_or_else(bad)?;
    let slot = match dest {
        "config" => 0,
        "config1" => 1,
        "config2" => 2,
        _ => return Err(bad()),
    };
    let mut bit = 0u32;
    for r in ranges.split(',') {
        let (lo, hi) = match r.split_once('-') {
            Some((a, b)) => (
                a.parse::<u32>().map_err(|_| bad())?,
                b.parse::<u32>().map_err(|_| bad())?,
            ),
            None => {
                let a = r.parse::<u32>().map_err(|_| bad())?;
                (a, a)
            }
        };
        if hi < lo || hi > 63 {
            return Err(bad());
        }
        for b in lo..=hi {
            if bit < 64 && value >> bit & 1 == 1 {
                config[slot] |= 1 << b;
            }
            bit += 1;
        }
    }
    Ok(())
}

fn parse_value(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Resolves `pmu/event` from `{sys}/bus/event_source/devices`.
pub fn resolve(
    roots: &Roots,
    pmu: &str,
    event: &str,
    default_bytes: f64,
) -> Result<PmuEvent, SenseError> {
    let dir = roots.sys(&format!("bus/event_source/devices/{pmu}"));
    let ty = read_u64(&dir.join("type"))? as u32;
    let ev_path = dir.join("events").join(event);
    let spec = read_trimmed(&ev_path)?;
    let mut config = [0u64; 3];
    for term in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        // A bare term (`edge`) is a one-bit flag.
        let (name, value) = match term.split_once('=') {
            Some((n, v)) => (
                n,
                parse_value(v).ok_or_else(|| SenseError::parse(&ev_path, "a value", term))?,
            ),
            None => (term, 1),
        };
        let fmt_path = dir.join("format").join(name);
        place(&read_string(&fmt_path)?, value, &mut config, &fmt_path)?;
    }
    let cpu = read_string(&dir.join("cpumask"))
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .and_then(|v| v.first().copied())
        .unwrap_or(0);
    let scale = read_trimmed(&dir.join("events").join(format!("{event}.scale")))
        .ok()
        .and_then(|s| s.parse::<f64>().ok());
    let unit = read_trimmed(&dir.join("events").join(format!("{event}.unit"))).ok();
    let unit_bytes = match unit.as_deref() {
        Some("MiB") => Some(1048576.0),
        Some("KiB") => Some(1024.0),
        Some("B") | Some("Bytes") | Some("bytes") => Some(1.0),
        _ => None,
    };
    let bytes_per_count = match (scale, unit_bytes) {
        (Some(s), Some(u)) => s * u,
        _ => default_bytes,
    };
    Ok(PmuEvent {
        pmu: pmu.into(),
        event: event.into(),
        ty,
        config,
        cpu,
        bytes_per_count,
    })
}

/// The memory-traffic events this board's sysfs offers.
pub fn memory_events(roots: &Roots) -> Vec<PmuEvent> {
    let mut out = Vec::new();
    for pmu in pmu_names(roots) {
        for (prefix, events, bytes) in MEMORY_PMUS {
            if pmu.starts_with(prefix) {
                out.extend(
                    events
                        .iter()
                        .filter_map(|e| resolve(roots, &pmu, e, *bytes).ok()),
                );
            }
        }
    }
    out
}

pub struct MemoryPmuSensor {
    roots: Roots,
    /// Where the counters come from, or why the configured trace cannot stand in for them.
    source: Result<Arc<dyn CounterSource>, Unavailable>,
    counters: Vec<(PmuEvent, Box<dyn CounterHandle>, Option<u64>)>,
    last_at: Option<Instant>,
}

impl MemoryPmuSensor {
    /// On the kernel's perf events.
    pub fn new(roots: Roots) -> Self {
        Self::with_source(roots, Ok(Arc::new(PerfEvents)))
    }

    /// On `source` (see [`super::counters::from_config`]).
    pub fn with_source(roots: Roots, source: Result<Arc<dyn CounterSource>, Unavailable>) -> Self {
        MemoryPmuSensor {
            roots,
            source,
            counters: Vec::new(),
            last_at: None,
        }
    }
}

impl Sensor for MemoryPmuSensor {
    fn name(&self) -> &'static str {
        "memory_pmu"
    }

    fn probe(&mut self) -> Result<Option<String>, Unavailable> {
        let source = self.source.clone()?;
        let events = memory_events(&self.roots);
        if events.is_empty() {
            return Err(Unavailable::new(
                format!(
                    "no uncore/DSU memory PMU (uncore_imc*, arm_dsu*) in {}{}",
                    self.roots.sys("bus/event_source/devices").display(),
                    vm_hint(&self.roots)
                ),
                "most edge SoCs expose none; probe_memory measures bandwidth instead",
            ));
        }
        for ev in events {
            match source.open(Event::Pmu(&ev), ev.cpu) {
                Ok(c) => self.counters.push((ev, c, None)),
                Err(e) => {
                    self.counters.clear();
                    return Err(explain_open_error(
                        &e,
                        &format!("{}/{}", ev.pmu, ev.event),
                        &self.roots,
                    ));
                }
            }
        }
        let names: Vec<String> = self
            .counters
            .iter()
            .map(|(e, _, _)| Event::Pmu(e).name())
            .collect();
        Ok(Some(match source.origin() {
            Some(o) => format!("{} ({o})", names.join(", ")),
            None => names.join(", "),
        }))
    }

    fn sample(&mut self, ctx: &SampleCtx, frame: &mut Frame) -> Result<(), SenseError> {
        let dt = self
            .last_at
            .map(|t| ctx.now.duration_since(t).as_secs_f64())
            .filter(|d| *d > 0.0);
        self.last_at = Some(ctx.now);
        let mut bytes = 0.0;
        let mut complete = dt.is_some();
        for (ev, c, last) in &mut self.counters {
            let now = c
                .read()
                .map_err(|e| SenseError::Perf {
                    event: ev.event.clone(),
                    source: e,
                })?
                .count;
            match last {
                Some(prev) => bytes += now.saturating_sub(*prev) as f64 * ev.bytes_per_count,
                None => complete = false,
            }
            *last = Some(now);
        }
        match dt {
            Some(dt) if complete => {
                frame.memory_pmu_bytes_per_second = Some(bytes / dt);
                Ok(())
            }
            _ => Err(SenseError::NoData),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_format_ranges() {
        let mut c = [0; 3];
        place("config:0-3,8-11", 0xab, &mut c, Path::new("x")).unwrap();
        assert_eq!(c[0], 0xa0b);
        place("config1:4", 1, &mut c, Path::new("x")).unwrap();
        assert_eq!(c[1], 0x10);
        assert!(place("bogus:1", 1, &mut c, Path::new("x")).is_err());
    }
}
