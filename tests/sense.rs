//! Live sensing: what each sensor reads from the fixture boards under `tests/fixtures/<board>/{sys,proc}`
//! (a Raspberry Pi 4, a Jetson-like board, a big.LITTLE phone SoC and this VM), a sensor that hangs,
//! and a bounded background load that utilisation and the probes must follow.
use augur::sense::cputime::CpuTimeSensor;
use augur::sense::fs::Roots;
use augur::sense::{Frame, SampleCtx, Sampler, SenseConfig, Sensor, Snapshot, read_once};
use augur::workload::load::{LoadGuard, LoadKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fixture(board: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(board)
}

/// Passive sensors only: the probes and perf would measure the machine running the test, not the fixture.
fn fixture_config(board: &str) -> SenseConfig {
    SenseConfig {
        sysfs_root: fixture(board).join("sys"),
        procfs_root: fixture(board).join("proc"),
        sample_hz: 50.0,
        disable: vec![
            "probe_compute".into(),
            "probe_memory".into(),
            "probe_reference".into(),
            "perf".into(),
            "memory_pmu".into(),
        ],
        ..Default::default()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

fn status<'a>(s: &'a Snapshot, name: &str) -> &'a augur::sense::SensorStatus {
    s.sensor(name)
        .unwrap_or_else(|| panic!("no sensor {name} in {:?}", s.sensors))
}

#[test]
fn rpi4_fixture() {
    let s = read_once(&fixture_config("rpi4"));
    assert_eq!(s.cpus.len(), 4);
    for c in &s.cpus {
        assert_eq!(c.frequency_hertz, Some(600e6), "{c:?}");
        assert_eq!((c.min_hertz, c.max_hertz), (Some(600e6), Some(1.5e9)));
        assert_eq!(c.governor.as_deref(), Some("ondemand"));
        assert_eq!(c.capacity, Some(1024));
    }
    assert_eq!(s.clusters.len(), 1);
    assert_eq!(s.clusters[0].cpus, vec![0, 1, 2, 3]);
    assert!(close(s.freq_ratio.unwrap(), 0.4));
    assert_eq!(s.thermal.len(), 1);
    assert_eq!(
        (s.thermal[0].kind.as_str(), s.thermal[0].celsius),
        ("cpu-thermal", 47.712)
    );
    assert_eq!(s.procs_running, Some(1));
    let l = s.loadavg.clone().unwrap();
    assert_eq!(
        (l.one, l.five, l.fifteen, l.threads),
        (0.08, 0.12, 0.10, Some(215))
    );
    // cpu0 line: user 1000 ticks at USER_HZ 100.
    assert_eq!(s.cpus[0].seconds.as_ref().unwrap().user, 10.0);
    assert!(status(&s, "cpufreq").available);
    let psi = status(&s, "pressure");
    assert!(
        !psi.available && psi.reason.as_deref().unwrap().contains("CONFIG_PSI"),
        "{psi:?}"
    );
    assert!(psi.remedy.is_some());
    assert_eq!(s.pressure.cpu, None);
    // hwmon0 is a temperature sensor and hwmon1 a voltage alarm: no power rail.
    let power = status(&s, "power");
    assert!(
        !power.available && power.reason.as_deref().unwrap().contains("no power sensor"),
        "{power:?}"
    );
    let probe = status(&s, "probe_compute");
    assert!(!probe.available && probe.reason.as_deref().unwrap().contains("disabled"));
}

#[test]
fn jetson_fixture() {
    let s = read_once(&fixture_config("jetson"));
    assert_eq!(s.cpus.len(), 6);
    assert_eq!(
        s.clusters
            .iter()
            .map(|c| c.cpus.clone())
            .collect::<Vec<_>>(),
        vec![vec![0, 1, 2, 3], vec![4, 5]]
    );
    assert_eq!(s.clusters[0].frequency_hertz, Some(1_510_400e3));
    assert_eq!(s.clusters[1].frequency_hertz, Some(729_600e3));
    assert!(close(
        s.freq_ratio.unwrap(),
        (4.0 + 2.0 * 729_600.0 / 1_510_400.0) / 6.0
    ));
    let rails: Vec<(&str, &str, f64)> = s
        .power
        .iter()
        .map(|r| (r.source.as_str(), r.name.as_str(), r.watts))
        .collect();
    assert_eq!(rails.len(), 3, "{rails:?}");
    assert_eq!((rails[0].0, rails[0].1), ("ina3221", "VDD_IN"));
    assert!(close(rails[0].2, 5.080 * 1.048));
    assert!(close(rails[2].2, 5.064 * 0.560));
    let kinds: Vec<&str> = s.thermal.iter().map(|z| z.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "cpu-thermal",
            "gpu-thermal",
            "cv0-thermal",
            "soc0-thermal",
            "tj-thermal"
        ]
    );
    assert_eq!(
        s.thermal[2].celsius, -256.0,
        "a parked zone reads as the driver says"
    );
    let cpu = s.pressure.cpu.clone().unwrap();
    assert_eq!(cpu.some.avg10, 12.5);
    assert!(close(cpu.some.total_seconds, 123.456789));
    let io = s.pressure.io.clone().unwrap();
    assert_eq!(io.full.unwrap().avg10, 0.10);
    assert!(status(&s, "pressure").available && status(&s, "power").available);
    assert_eq!(s.procs_blocked, Some(1));
}

#[test]
fn phone_fixture_big_little() {
    let s = read_once(&fixture_config("phone"));
    assert_eq!(s.clusters.len(), 2);
    let (little, big) = (&s.clusters[0], &s.clusters[1]);
    assert_eq!(
        (little.cpus.clone(), little.capacity),
        (vec![0, 1, 2, 3], Some(325))
    );
    assert_eq!(
        (big.cpus.clone(), big.capacity),
        (vec![4, 5, 6, 7], Some(1024))
    );
    assert_eq!(
        (little.max_hertz, big.max_hertz),
        (Some(1_804_800e3), Some(2_419_200e3))
    );
    assert_eq!(s.cpus[5].cluster, Some(1));
    assert_eq!(s.cpus[2].frequency_hertz, Some(1_113_600e3));
    assert!(close(
        s.freq_ratio.unwrap(),
        (4.0 * 1_113_600.0 / 1_804_800.0 + 4.0) / 8.0
    ));
    assert_eq!(s.thermal.len(), 4);
    assert_eq!(s.pressure.memory.clone().unwrap().full.unwrap().avg10, 1.5);
    assert_eq!(s.loadavg.clone().unwrap().runnable, Some(5));
    // The DSU PMU's bus_access event is resolved from its sysfs format and events.
    let ev = augur::sense::pmu::memory_events(&Roots::new(
        fixture("phone").join("sys"),
        fixture("phone").join("proc"),
    ));
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        (ev[0].pmu.as_str(), ev[0].event.as_str()),
        ("arm_dsu_0", "bus_access")
    );
    assert_eq!(
        (ev[0].ty, ev[0].config, ev[0].cpu, ev[0].bytes_per_count),
        (10, [0x19, 0, 0], 0, 64.0)
    );
}

#[test]
fn vm_fixture_has_no_cpufreq_and_no_counters() {
    let mut cfg = fixture_config("vm");
    // No CPU PMU in this sysfs: perf fails the same way on any host, so it can run here.
    cfg.disable.retain(|d| d != "perf" && d != "memory_pmu");
    let s = read_once(&cfg);
    assert_eq!(s.cpus.len(), 2);
    for c in &s.cpus {
        assert_eq!(c.frequency_hertz, Some(2_596_138_000.0));
        assert_eq!((c.max_hertz, c.governor.clone()), (None, None));
    }
    assert_eq!(s.freq_ratio, None, "no max frequency, no ratio");
    assert_eq!(s.clusters.len(), 1);
    let cf = status(&s, "cpufreq");
    assert!(
        cf.available && cf.detail.as_deref().unwrap().contains("cpuinfo"),
        "{cf:?}"
    );
    let perf = status(&s, "perf");
    assert!(!perf.available);
    let reason = perf.reason.as_deref().unwrap();
    assert!(
        reason.contains("not supported") && reason.contains("no CPU PMU") && reason.contains("VM"),
        "{reason}"
    );
    assert!(
        perf.remedy.as_deref().unwrap().contains("probe"),
        "{perf:?}"
    );
    assert!(!status(&s, "memory_pmu").available);
    let th = status(&s, "thermal");
    assert!(
        !th.available && th.reason.as_deref().unwrap().contains("thermal_zone"),
        "{th:?}"
    );
    assert!(!status(&s, "power").available);
    assert!(status(&s, "pressure").available && status(&s, "cpu_time").available);
    assert_eq!(s.pressure.cpu.clone().unwrap().some.avg10, 3.75);
    assert!(s.perf.is_none() && s.thermal.is_empty() && s.power.is_empty());
    let total = s.cpu_seconds.clone().unwrap();
    assert!(close(total.user, (29663.0 + 29360.0) / 100.0));
}

#[test]
fn a_one_off_state_holds_the_whole_live_cache_curve_and_none_without_the_memory_probe() {
    let mut cfg = fixture_config("vm");
    cfg.disable.retain(|d| d != "probe_memory");
    cfg.probe_memory_buffer_bytes = Some(4 << 20);
    let s = read_once(&cfg);
    let sizes: Vec<u64> = s.probe.cache_curve.iter().map(|p| p.bytes).collect();
    let mib = 1u64 << 20;
    assert_eq!(sizes, [2, 3, 4, 6, 8].map(|x| x * mib / 2), "{:?}", s.probe);
    assert!(
        s.probe
            .cache_curve
            .iter()
            .all(|p| p.seconds_per_byte.is_finite() && p.seconds_per_byte > 0.0),
        "{:?}",
        s.probe
    );
    assert!(augur::predict::live_cache_curve(&s).is_some());
    let off = read_once(&fixture_config("vm"));
    assert!(off.probe.cache_curve.is_empty());
    assert!(augur::predict::live_cache_curve(&off).is_none());
}

#[test]
fn a_one_off_state_holds_four_reference_and_parallel_readings_and_none_without_the_probe() {
    let mut cfg = fixture_config("vm");
    cfg.disable.retain(|d| d != "probe_reference");
    let s = read_once(&cfg);
    let p = &s.probe;
    assert_eq!(p.reference_history_cpu_ms.len(), 4, "{p:?}");
    assert!(p.reference_history_cpu_ms.iter().all(|v| *v > 0.0), "{p:?}");
    assert_eq!(p.reference_runs, 4);
    // The median of the last three.
    let mut last: Vec<f64> = p.reference_history_cpu_ms[1..].to_vec();
    last.sort_by(f64::total_cmp);
    assert_eq!(p.reference_recent_cpu_ms, Some(last[1]));
    // Beside each, on a board of several cores, what all of them give against one.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores > 1 {
        assert_eq!(p.reference_parallel_threads, Some(cores), "{p:?}");
        assert_eq!(p.reference_parallel_ratios.len(), 4, "{p:?}");
        assert!(
            p.reference_parallel_ratios
                .iter()
                .all(|r| r.is_finite() && *r > 0.0),
            "{p:?}"
        );
    } else {
        assert!(p.reference_parallel_ratios.is_empty());
    }
    let off = read_once(&fixture_config("vm"));
    assert!(off.probe.reference_history_cpu_ms.is_empty());
    assert!(off.probe.reference_parallel_ratios.is_empty());
    assert_eq!(off.probe.reference_recent_cpu_ms, None);
}

/// Copies a fixture tree so a test can change files under a running sensor.
fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Adds `d[i]` ticks to column `i` of every cpu line of a /proc/stat text.
fn advance(stat: &str, d: [u64; 8]) -> String {
    let mut out = String::new();
    for line in stat.lines() {
        let mut f: Vec<String> = line.split_whitespace().map(String::from).collect();
        if f[0].starts_with("cpu") {
            let ncpu = if f[0] == "cpu" { 2 } else { 1 };
            for i in 0..8 {
                f[i + 1] = (f[i + 1].parse::<u64>().unwrap() + d[i] * ncpu).to_string();
            }
        }
        out.push_str(&f.join(" "));
        out.push('\n');
    }
    out
}

#[test]
fn cpu_time_deltas_by_mode_and_own_share() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture("vm"), dir.path());
    let roots = Roots::new(dir.path().join("sys"), dir.path().join("proc"));
    let mut s = CpuTimeSensor::new(roots);
    assert!(s.probe().unwrap().unwrap().contains("2 CPUs"));
    let ctx = SampleCtx {
        now: Instant::now(),
        cpu_share: 0.0,
    };
    let mut f = Frame::default();
    s.sample(&ctx, &mut f).unwrap();
    assert_eq!(
        f.cpu_time.as_ref().unwrap().modes,
        None,
        "one reading has no interval"
    );
    // Per CPU: 50 user, 10 nice, 15 system, 10 idle, 5 iowait, 4 irq, 1 softirq, 5 steal = 100 ticks.
    let stat = dir.path().join("proc/stat");
    std::fs::write(
        &stat,
        advance(
            &std::fs::read_to_string(&stat).unwrap(),
            [50, 10, 15, 10, 5, 4, 1, 5],
        ),
    )
    .unwrap();
    // augur itself used 20 of the 200 ticks.
    let self_stat = dir.path().join("proc/self/stat");
    std::fs::write(
        &self_stat,
        std::fs::read_to_string(&self_stat)
            .unwrap()
            .replace(" 120 40 ", " 130 50 "),
    )
    .unwrap();
    let mut f = Frame::default();
    s.sample(&ctx, &mut f).unwrap();
    let ct = f.cpu_time.unwrap();
    let m = ct.modes.unwrap();
    assert!(close(m.user, 0.60) && close(m.system, 0.15) && close(m.idle, 0.10));
    assert!(close(m.iowait, 0.05) && close(m.irq, 0.05) && close(m.steal, 0.05));
    assert!(close(m.busy, 0.85));
    assert!(close(ct.own_fraction.unwrap(), 0.10));
    assert_eq!(ct.per_cpu_busy.len(), 2);
    assert!(close(ct.per_cpu_busy[1].1, 0.85));
}

#[test]
fn metrics_are_exported_in_base_units() {
    let s = read_once(&fixture_config("jetson"));
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || augur::sense::metrics::record(&s));
    let text = handle.render();
    for needle in [
        "augur_sensor_up{sensor=\"power\"} 1",
        "augur_sensor_up{sensor=\"probe_compute\"} 0",
        "augur_cpu_frequency_hertz{cpu=\"4\"} 729600000",
        "augur_cpu_frequency_max_hertz{cpu=\"0\"} 1510400000",
        "augur_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 500",
        "augur_pressure_avg10_ratio{resource=\"cpu\",kind=\"some\"} 0.125",
        "augur_thermal_zone_temperature_celsius{zone=\"thermal_zone0\",type=\"cpu-thermal\"} 52.5",
        "augur_power_watts{source=\"ina3221\",rail=\"VDD_IN\"}",
        "augur_load1 1.52",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[test]
fn a_hanging_sensor_times_out_and_the_rest_go_on() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture("jetson"), dir.path());
    let cfg = SenseConfig {
        sysfs_root: dir.path().join("sys"),
        procfs_root: dir.path().join("proc"),
        sample_hz: 20.0,
        sample_timeout_ms: 200,
        ..fixture_config("jetson")
    };
    let sampler = Sampler::start(cfg);
    let first = sampler.wait_for(2, Duration::from_secs(10));
    assert!(first.sensor_up("loadavg"));
    // A FIFO without a writer blocks whoever opens it: the next loadavg read hangs.
    let fifo = dir.path().join("proc/loadavg");
    std::fs::remove_file(&fifo).unwrap();
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut snap = sampler.snapshot_arc();
    while snap.sensor_up("loadavg") && Instant::now() < deadline {
        snap = sampler.wait_for(snap.seq + 1, Duration::from_secs(1));
    }
    let st = snap.sensor("loadavg").unwrap().clone();
    assert!(
        !st.available && st.reason.as_deref().unwrap().contains("timed out"),
        "{st:?}"
    );
    let later = sampler.wait_for(snap.seq + 5, Duration::from_secs(10));
    assert!(later.seq >= snap.seq + 5, "sampling goes on");
    assert!(later.sensor_up("cpu_time") && later.sensor_up("cpufreq"));
    // Release the stuck worker: a writer lets its open() return.
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .map(|mut f| {
            use std::io::Write;
            let _ = f.write_all(b"0.1 0.1 0.1 1/1 1\n");
        });
    sampler.stop();
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Medians over one phase: per tick for utilisation, per run for the probes.
#[derive(Debug, Clone, Copy)]
struct Phase {
    busy: f64,
    own: f64,
    compute: f64,
    memory: f64,
}

fn observe(sampler: &Sampler, settle: Duration, span: Duration) -> Phase {
    std::thread::sleep(settle);
    let (mut busy, mut own, mut compute, mut memory) = (vec![], vec![], vec![], vec![]);
    let mut snap = sampler.snapshot_arc();
    let (mut c_runs, mut m_runs) = (snap.probe.compute_runs, snap.probe.memory_runs);
    let end = Instant::now() + span;
    // A phase lasts `span`, and longer until each probe has run once: under the load on a busy
    // host the sampler's probes can be starved past the span. The wait ends well before the
    // loads' own ten seconds, so an "on" phase stays on.
    const STARVED: Duration = Duration::from_secs(6);
    loop {
        let now = Instant::now();
        let unprobed = compute.is_empty() || memory.is_empty();
        if now >= end && (!unprobed || now >= end + STARVED) {
            break;
        }
        snap = sampler.wait_for(snap.seq + 1, Duration::from_secs(2));
        busy.extend(snap.utilization.busy.latest);
        own.extend(snap.own_cpu.latest);
        if snap.probe.compute_runs > c_runs {
            compute.extend(snap.probe.compute_flops.latest);
            c_runs = snap.probe.compute_runs;
        }
        if snap.probe.memory_runs > m_runs {
            memory.extend(snap.probe.memory_bandwidth_bytes_per_second.latest);
            m_runs = snap.probe.memory_runs;
        }
    }
    let m = |v: Vec<f64>, what: &str| {
        median(v).unwrap_or_else(|| panic!("no {what} samples in a phase"))
    };
    Phase {
        busy: m(busy, "busy"),
        own: m(own, "own"),
        compute: m(compute, "compute"),
        memory: m(memory, "memory"),
    }
}

/// Ratio of medians per cycle, then the median over cycles: robust to one disturbed cycle.
fn median_of(pairs: impl Iterator<Item = f64>) -> f64 {
    median(pairs.collect()).unwrap_or(f64::NAN)
}

/// Load off and on in alternation, `cycles` times, ending with the load off. Outside load on a
/// shared machine drifts over tens of seconds; comparing each "on" phase with the "off" phases
/// right before and after it cancels that drift.
fn alternate(sampler: &Sampler, kind: LoadKind, cycles: usize) -> (Vec<Phase>, Vec<Phase>) {
    let (settle, span) = (Duration::from_millis(500), Duration::from_millis(1500));
    let mut off = vec![observe(sampler, settle, span)];
    let mut on = Vec::new();
    for _ in 0..cycles {
        let load = LoadGuard::start(kind, Duration::from_secs(10)).unwrap();
        on.push(observe(sampler, settle, span));
        assert!(load.stop() > 0, "the load did no work");
        off.push(observe(sampler, settle, span));
    }
    (off, on)
}

fn report(what: &str, off: &[Phase], on: &[Phase]) -> String {
    let mut r = format!("{what}:\n");
    for (i, p) in on.iter().enumerate() {
        r += &format!("  off {:?}\n  ON  {p:?}\n", off[i]);
    }
    r + &format!("  off {:?}\n", off[on.len()])
}

#[test]
fn background_load_moves_utilisation_and_probes() {
    let cfg = SenseConfig {
        sample_hz: 20.0,
        window_seconds: 1.0,
        // Unoptimised test builds make each probe run slow; a larger budget keeps runs frequent.
        probe_budget: 0.4,
        disable: vec![
            "perf".into(),
            "memory_pmu".into(),
            "thermal".into(),
            "power".into(),
        ],
        ..Default::default()
    };
    let sampler = Sampler::start(cfg);
    sampler.wait_for(10, Duration::from_secs(10));
    // Twice as many threads as CPUs, so that the load still counts on a machine others keep busy.
    let threads = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
    let cycles = 3;

    let (off, on) = alternate(&sampler, LoadKind::Cpu { threads }, cycles);
    let text = report("CPU hog", &off, &on);
    eprintln!("{text}");
    let slowed = median_of((0..cycles).map(|i| on[i].compute / off[i].compute));
    let recovered = median_of((0..cycles).map(|i| off[i + 1].compute / on[i].compute));
    let own_up = median_of((0..cycles).map(|i| on[i].own - off[i].own));
    let own_down = median_of((0..cycles).map(|i| on[i].own - off[i + 1].own));
    let busy_off = median_of(off.iter().map(|p| p.busy));
    let busy_on = median_of(on.iter().map(|p| p.busy));
    eprintln!(
        "compute on/off {slowed:.2}, after/on {recovered:.2}; own +{own_up:.2} then -{own_down:.2}; \
         busy {busy_off:.2} -> {busy_on:.2}"
    );
    // The hogs are augur's own threads, so own use must follow them; by how much depends on how
    // many other tasks compete (+0.13 of all CPUs at a load average of 10, +0.8 when quiet).
    assert!(
        own_up >= 0.05 && own_down >= 0.05,
        "own CPU did not follow the hog\n{text}"
    );
    // Busy can only rise as far as the machine is not already saturated.
    assert!(
        busy_on >= (busy_off + 0.2).min(0.9),
        "utilisation did not rise\n{text}"
    );
    assert!(
        slowed <= 0.85,
        "the compute probe did not slow under the hog\n{text}"
    );
    assert!(
        recovered >= 1.15,
        "the compute probe did not recover after the hog\n{text}"
    );

    let (off, on) = alternate(
        &sampler,
        LoadKind::Memory {
            threads,
            bytes: 64 << 20,
        },
        cycles,
    );
    let text = report("memory streamer", &off, &on);
    eprintln!("{text}");
    let slowed = median_of((0..cycles).map(|i| on[i].memory / off[i].memory));
    let recovered = median_of((0..cycles).map(|i| off[i + 1].memory / on[i].memory));
    let own_down = median_of((0..cycles).map(|i| on[i].own - off[i + 1].own));
    eprintln!("memory on/off {slowed:.2}, after/on {recovered:.2}; own -{own_down:.2} after");
    assert!(
        slowed <= 0.85,
        "the memory probe did not slow under the streamer\n{text}"
    );
    assert!(
        recovered >= 1.15,
        "the memory probe did not recover after the streamer\n{text}"
    );
    assert!(
        own_down >= 0.05,
        "own CPU did not fall after the streamer\n{text}"
    );
}

/// The Jetson fixture with its (synthetic) counter trace standing in for perf events.
fn jetson_with_trace() -> (Roots, SenseConfig) {
    let cfg = SenseConfig {
        counter_trace: Some(fixture("jetson").join("counters.txt")),
        ..fixture_config("jetson")
    };
    (cfg.roots(), cfg)
}

#[test]
fn perf_and_memory_pmu_sensors_replay_the_jetson_counter_trace() {
    let (roots, cfg) = jetson_with_trace();
    let source = augur::sense::counters::from_config(&cfg);
    let mut perf = augur::sense::perf::PerfSensor::with_source(roots.clone(), source.clone());
    let mut pmu = augur::sense::pmu::MemoryPmuSensor::with_source(roots, source);
    let detail = perf.probe().expect("perf probes Ok on the trace");
    assert!(
        detail.as_deref().unwrap().contains("counters.txt"),
        "{detail:?}"
    );
    let detail = pmu.probe().expect("memory_pmu probes Ok on the trace");
    assert!(
        detail.as_deref().unwrap().contains("arm_dsu_0/bus_access"),
        "{detail:?}"
    );
    let mut frames = Vec::new();
    for _ in 0..2 {
        let ctx = SampleCtx {
            now: Instant::now(),
            cpu_share: 0.01,
        };
        let mut frame = Frame::default();
        perf.sample(&ctx, &mut frame).unwrap();
        // The first sample has no interval: no rate yet.
        let _ = pmu.sample(&ctx, &mut frame);
        frames.push(frame);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(frames[0].memory_pmu_bytes_per_second.is_none());
    let p = frames[1].perf.clone().unwrap();
    assert_eq!(p.cpus.len(), 6, "one per online CPU of the fixture");
    let ipc = p.ipc.unwrap();
    // The trace's IPC is 0.8-1.5 in every segment, so any mix of them is too.
    assert!(ipc.is_finite() && (0.75..=1.55).contains(&ipc), "{p:?}");
    let llc = p.llc_misses_per_second.unwrap();
    assert!(llc.is_finite() && llc > 0.0, "{p:?}");
    let ratio = p.cache_miss_ratio.unwrap();
    assert!((0.015..=0.065).contains(&ratio), "{p:?}");
    for c in &p.cpus {
        let cycles = c.cycles_per_second.unwrap();
        // Never more than the cluster's frequency, 1.51 GHz (a little slack for timing jitter).
        assert!(cycles > 0.0 && cycles < 1.6e9, "{c:?}");
    }
    let bw = frames[1].memory_pmu_bytes_per_second.unwrap();
    assert!(bw.is_finite() && (0.45e9..=3.3e9).contains(&bw), "{bw}");
}

#[test]
fn the_sampler_replays_the_trace_and_exports_the_counter_metrics() {
    let (_, mut cfg) = jetson_with_trace();
    cfg.disable.retain(|d| d != "perf" && d != "memory_pmu");
    let s = read_once(&cfg);
    assert!(
        status(&s, "perf").available && status(&s, "memory_pmu").available,
        "{:?}",
        s.sensors
    );
    let p = s.perf.clone().unwrap();
    assert!(p.ipc.is_some_and(|v| v > 0.0), "{p:?}");
    assert!(
        p.memory_bandwidth_bytes_per_second.is_some_and(|v| v > 0.0),
        "{p:?}"
    );
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || augur::sense::metrics::record(&s));
    let text = handle.render();
    for needle in [
        "augur_sensor_up{sensor=\"perf\"} 1",
        "augur_sensor_up{sensor=\"memory_pmu\"} 1",
        "augur_perf_llc_misses_total{cpu=\"5\"}",
        "augur_memory_bandwidth_bytes_per_second ",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[test]
fn a_bad_or_partial_trace_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut cfg) = jetson_with_trace();
    cfg.disable.retain(|d| d != "perf" && d != "memory_pmu");
    // A bad line: both counter sensors say which file and line, the rest run.
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "# ok\n1 0 cycles 100 1 1\n2 0 cycles many 2 2\n").unwrap();
    cfg.counter_trace = Some(bad);
    let s = read_once(&cfg);
    for name in ["perf", "memory_pmu"] {
        let st = status(&s, name);
        let reason = st.reason.as_deref().unwrap_or("");
        assert!(
            !st.available && reason.contains("bad.txt, line 3") && reason.contains("many"),
            "{st:?}"
        );
    }
    assert!(status(&s, "cpu_time").available && status(&s, "power").available);
    // Cycles only: perf is up without the other events and says why; memory_pmu finds no
    // arm_dsu_0/bus_access and reports it not supported.
    let partial = dir.path().join("cycles.txt");
    let text: String = std::fs::read_to_string(fixture("jetson").join("counters.txt"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('#') || l.contains(" cycles "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&partial, text).unwrap();
    cfg.counter_trace = Some(partial);
    let s = read_once(&cfg);
    let perf = status(&s, "perf");
    let detail = perf.detail.as_deref().unwrap_or("");
    assert!(
        perf.available
            && detail.contains("not supported here")
            && detail.contains("LLC-load-misses (not in the counter trace"),
        "{perf:?}"
    );
    let p = s.perf.clone().unwrap();
    assert!(p.cpus[0].cycles_total.is_some() && p.ipc.is_none(), "{p:?}");
    let pmu = status(&s, "memory_pmu");
    let reason = pmu.reason.as_deref().unwrap_or("");
    assert!(
        !pmu.available
            && reason.contains("arm_dsu_0/bus_access not supported")
            && pmu
                .remedy
                .as_deref()
                .unwrap_or("")
                .contains("sense.counter_trace"),
        "{pmu:?}"
    );
}
