//! Prometheus metrics of the live state, in base units, recorded through the `metrics` facade; the
//! daemon installs the exporter and calls [`describe`] once for the HELP texts. Call [`record`]
//! with each snapshot (or at scrape time).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `augur_sensor_up` | gauge (0/1) | `sensor` |
//! | `augur_cpu_frequency_hertz`, `augur_cpu_frequency_min_hertz`, `augur_cpu_frequency_max_hertz` | gauge | `cpu` |
//! | `augur_cpu_seconds_total` | counter (whole seconds) | `cpu`, `mode` |
//! | `augur_cpu_utilization_ratio` | gauge (window mean) | `mode` (`busy`, `user`, …) |
//! | `augur_own_cpu_ratio` | gauge (window mean) | |
//! | `augur_procs_running`, `augur_procs_blocked` | gauge | |
//! | `augur_load1`, `augur_load5`, `augur_load15` | gauge | |
//! | `augur_pressure_avg10_ratio` | gauge (0..1) | `resource`, `kind` (`some`/`full`) |
//! | `augur_pressure_stalled_seconds_total` | counter (whole seconds) | `resource`, `kind` |
//! | `augur_perf_{cycles,instructions,cache_references,cache_misses,llc_misses}_total` | counter | `cpu` |
//! | `augur_memory_bandwidth_bytes_per_second` | gauge (PMU) | |
//! | `augur_probe_compute_flop_per_second`, `augur_probe_compute_baseline_flop_per_second` | gauge | |
//! | `augur_probe_memory_bandwidth_bytes_per_second`, `augur_probe_memory_baseline_bytes_per_second` | gauge | |
//! | `augur_probe_runs_total` | counter | `probe` |
//! | `augur_probe_reference_cpu_seconds` | gauge | |
//! | `augur_thermal_zone_temperature_celsius` | gauge | `zone`, `type` |
//! | `augur_power_watts` | gauge | `source`, `rail` |
//! | `augur_sampler_cpu_ratio` | gauge (share of one core) | |
//!
//! `metrics` counters are integers, so second-valued counters are exported in whole seconds; the
//! `_ratio` gauges carry the fine-grained view.
use super::snapshot::{CpuSeconds, PsiLine, Snapshot};
use metrics::{counter, gauge};

/// HELP for every family [`record`] writes.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_gauge!(
        "augur_sensor_up",
        "1 while the sensor reads, 0 when it is unavailable on this board."
    );
    describe_gauge!(
        "augur_cpu_frequency_hertz",
        "Current frequency of each CPU."
    );
    describe_gauge!(
        "augur_cpu_frequency_min_hertz",
        "Lowest frequency each CPU may run at."
    );
    describe_gauge!(
        "augur_cpu_frequency_max_hertz",
        "Highest frequency each CPU may run at."
    );
    describe_counter!(
        "augur_cpu_seconds_total",
        Unit::Seconds,
        "CPU time per CPU and mode (whole seconds)."
    );
    describe_gauge!(
        "augur_cpu_utilization_ratio",
        "Share of all CPUs in each mode over the sampling window; busy is everything but idle."
    );
    describe_gauge!(
        "augur_own_cpu_ratio",
        "Share of all CPUs used by augur itself over the sampling window."
    );
    describe_gauge!("augur_procs_running", "Runnable tasks (/proc/stat).");
    describe_gauge!("augur_procs_blocked", "Tasks blocked on I/O (/proc/stat).");
    describe_gauge!("augur_load1", "Load average over 1 minute.");
    describe_gauge!("augur_load5", "Load average over 5 minutes.");
    describe_gauge!("augur_load15", "Load average over 15 minutes.");
    describe_gauge!(
        "augur_pressure_avg10_ratio",
        "Pressure stall information: share of the last 10 s that some or all tasks stalled."
    );
    describe_counter!(
        "augur_pressure_stalled_seconds_total",
        Unit::Seconds,
        "Pressure stall information: total stalled time (whole seconds)."
    );
    for (name, what) in [
        ("augur_perf_cycles_total", "CPU cycles"),
        ("augur_perf_instructions_total", "Instructions retired"),
        ("augur_perf_cache_references_total", "Cache references"),
        ("augur_perf_cache_misses_total", "Cache misses"),
        ("augur_perf_llc_misses_total", "Last-level cache misses"),
    ] {
        describe_counter!(name, format!("{what} per CPU, from the PMU."));
    }
    describe_gauge!(
        "augur_memory_bandwidth_bytes_per_second",
        "Memory traffic of the whole board, from the PMU."
    );
    describe_gauge!(
        "augur_probe_compute_flop_per_second",
        "Floating-point operations per second of the newest compute probe."
    );
    describe_gauge!(
        "augur_probe_compute_baseline_flop_per_second",
        "Compute probe rate on the quiet board, against which slowdown is measured."
    );
    describe_gauge!(
        "augur_probe_memory_bandwidth_bytes_per_second",
        "Memory bandwidth of the newest memory probe."
    );
    describe_gauge!(
        "augur_probe_memory_baseline_bytes_per_second",
        "Memory probe bandwidth on the quiet board."
    );
    describe_counter!("augur_probe_runs_total", "Active probe runs, by probe.");
    describe_gauge!(
        "augur_probe_reference_cpu_seconds",
        Unit::Seconds,
        "CPU time of the newest reference-workload run."
    );
    describe_gauge!(
        "augur_thermal_zone_temperature_celsius",
        "Temperature of each thermal zone."
    );
    describe_gauge!("augur_power_watts", "Power draw of each rail.");
    describe_gauge!(
        "augur_sampler_cpu_ratio",
        "Share of one core the sampler and its probes use."
    );
}

/// Writes one snapshot into the metrics registry.
pub fn record(s: &Snapshot) {
    for st in &s.sensors {
        gauge!("augur_sensor_up", "sensor" => st.name.clone()).set(if st.available {
            1.0
        } else {
            0.0
        });
    }
    record_cpus(s);
    let u = &s.utilization;
    for (mode, st) in [
        ("busy", &u.busy),
        ("user", &u.user),
        ("system", &u.system),
        ("iowait", &u.iowait),
        ("irq", &u.irq),
        ("steal", &u.steal),
        ("idle", &u.idle),
    ] {
        if let Some(v) = st.mean {
            gauge!("augur_cpu_utilization_ratio", "mode" => mode).set(v);
        }
    }
    if let Some(v) = s.own_cpu.mean {
        gauge!("augur_own_cpu_ratio").set(v);
    }
    if let Some(v) = s.procs_running {
        gauge!("augur_procs_running").set(v as f64);
    }
    if let Some(v) = s.procs_blocked {
        gauge!("augur_procs_blocked").set(v as f64);
    }
    if let Some(l) = &s.loadavg {
        gauge!("augur_load1").set(l.one);
        gauge!("augur_load5").set(l.five);
        gauge!("augur_load15").set(l.fifteen);
    }
    for (res, psi) in [
        ("cpu", &s.pressure.cpu),
        ("memory", &s.pressure.memory),
        ("io", &s.pressure.io),
    ] {
        let Some(psi) = psi else { continue };
        pressure(res, "some", &psi.some);
        if let Some(full) = &psi.full {
            pressure(res, "full", full);
        }
    }
    record_perf(s);
    record_probe(s);
    for z in &s.thermal {
        gauge!("augur_thermal_zone_temperature_celsius", "zone" => z.zone.clone(), "type" => z.kind.clone())
            .set(z.celsius);
    }
    for r in &s.power {
        gauge!("augur_power_watts", "source" => r.source.clone(), "rail" => r.name.clone())
            .set(r.watts);
    }
    if let Some(v) = s.sampler.cpu_share {
        gauge!("augur_sampler_cpu_ratio").set(v);
    }
}

/// Per-CPU frequency and time.
fn record_cpus(s: &Snapshot) {
    for c in &s.cpus {
        let cpu = c.cpu.to_string();
        if let Some(v) = c.frequency_hertz {
            gauge!("augur_cpu_frequency_hertz", "cpu" => cpu.clone()).set(v);
        }
        if let Some(v) = c.min_hertz {
            gauge!("augur_cpu_frequency_min_hertz", "cpu" => cpu.clone()).set(v);
        }
        if let Some(v) = c.max_hertz {
            gauge!("augur_cpu_frequency_max_hertz", "cpu" => cpu.clone()).set(v);
        }
        if let Some(secs) = &c.seconds {
            for (mode, v) in modes(secs) {
                counter!("augur_cpu_seconds_total", "cpu" => cpu.clone(), "mode" => mode)
                    .absolute(v as u64);
            }
        }
    }
}

/// Hardware counters, where perf events are available.
fn record_perf(s: &Snapshot) {
    if let Some(p) = &s.perf {
        for c in &p.cpus {
            let cpu = c.cpu.to_string();
            for (name, v) in [
                ("augur_perf_cycles_total", c.cycles_total),
                ("augur_perf_instructions_total", c.instructions_total),
                (
                    "augur_perf_cache_references_total",
                    c.cache_references_total,
                ),
                ("augur_perf_cache_misses_total", c.cache_misses_total),
                ("augur_perf_llc_misses_total", c.llc_misses_total),
            ] {
                if let Some(v) = v {
                    counter!(name, "cpu" => cpu.clone()).absolute(v);
                }
            }
        }
        if let Some(v) = p.memory_bandwidth_bytes_per_second {
            gauge!("augur_memory_bandwidth_bytes_per_second").set(v);
        }
    }
}

/// The active probes' latest readings and run counts.
fn record_probe(s: &Snapshot) {
    let pr = &s.probe;
    for (name, v) in [
        (
            "augur_probe_compute_flop_per_second",
            pr.compute_flops.latest,
        ),
        (
            "augur_probe_compute_baseline_flop_per_second",
            pr.compute_baseline_flops,
        ),
        (
            "augur_probe_memory_bandwidth_bytes_per_second",
            pr.memory_bandwidth_bytes_per_second.latest,
        ),
        (
            "augur_probe_memory_baseline_bytes_per_second",
            pr.memory_baseline_bytes_per_second,
        ),
    ] {
        if let Some(v) = v {
            gauge!(name).set(v);
        }
    }
    counter!("augur_probe_runs_total", "probe" => "compute").absolute(pr.compute_runs);
    counter!("augur_probe_runs_total", "probe" => "memory").absolute(pr.memory_runs);
    counter!("augur_probe_runs_total", "probe" => "reference").absolute(pr.reference_runs);
    if let Some(ms) = pr.reference_cpu_ms.latest {
        gauge!("augur_probe_reference_cpu_seconds").set(ms / 1e3);
    }
}

fn modes(s: &CpuSeconds) -> [(&'static str, f64); 8] {
    [
        ("user", s.user),
        ("nice", s.nice),
        ("system", s.system),
        ("idle", s.idle),
        ("iowait", s.iowait),
        ("irq", s.irq),
        ("softirq", s.softirq),
        ("steal", s.steal),
    ]
}

fn pressure(resource: &'static str, kind: &'static str, l: &PsiLine) {
    gauge!("augur_pressure_avg10_ratio", "resource" => resource, "kind" => kind)
        .set(l.avg10 / 100.0);
    counter!("augur_pressure_stalled_seconds_total", "resource" => resource, "kind" => kind)
        .absolute(l.total_seconds as u64);
}
