//! `augur state`: the live state of this board, and which sensors are live and why the others are not.
use crate::sense::{Sampler, SenseConfig, Snapshot, Stat, read_once};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Keep sampling and redraw every --interval seconds until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between redraws with --watch.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Read sysfs from this directory instead of /sys (e.g. a fixture tree).
    #[arg(long, env = "AUGUR_SYSFS_ROOT")]
    pub sysfs_root: Option<PathBuf>,
    /// Read procfs from this directory instead of /proc.
    #[arg(long, env = "AUGUR_PROCFS_ROOT")]
    pub procfs_root: Option<PathBuf>,
    /// Replay this counter trace for the perf and memory_pmu sensors instead of opening perf
    /// events (e.g. tests/fixtures/jetson/counters.txt, with that board's --sysfs-root).
    #[arg(long, env = "AUGUR_COUNTER_TRACE", value_name = "FILE")]
    pub counter_trace: Option<PathBuf>,
    /// Samples per second.
    #[arg(long)]
    pub sample_hz: Option<f64>,
    /// Do not start this sensor (repeatable), e.g. --disable perf.
    #[arg(long, value_name = "SENSOR")]
    pub disable: Vec<String>,
    /// Measure the sampler's own CPU cost over SECS seconds and print it as JSON.
    #[arg(long, hide = true, value_name = "SECS")]
    pub overhead: Option<f64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = SenseConfig::default();
    if let Some(r) = args.sysfs_root {
        cfg.sysfs_root = r;
    }
    if let Some(r) = args.procfs_root {
        cfg.procfs_root = r;
    }
    if let Some(t) = args.counter_trace {
        cfg.counter_trace = Some(t);
    }
    if let Some(hz) = args.sample_hz {
        anyhow::ensure!(
            hz > 0.0 && hz <= 1000.0,
            "--sample-hz must be in (0, 1000], not {hz}"
        );
        cfg.sample_hz = hz;
    }
    cfg.disable = args.disable;
    if let Some(secs) = args.overhead {
        anyhow::ensure!(
            secs > 0.0 && secs.is_finite(),
            "--overhead needs a positive number of seconds"
        );
        let report = crate::sense::overhead::measure(
            cfg,
            Duration::from_secs(3),
            Duration::from_secs_f64(secs),
        );
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if args.watch {
        anyhow::ensure!(
            args.interval > 0.0 && args.interval.is_finite(),
            "--interval must be positive"
        );
        let sampler = Sampler::start(cfg);
        sampler.wait_for(3, Duration::from_secs(5));
        loop {
            let snap = sampler.snapshot();
            if args.json {
                println!("{}", serde_json::to_string(&snap)?);
            } else {
                // Clear the screen and home the cursor, then redraw.
                print!("\x1b[2J\x1b[H{}", render(&snap));
            }
            std::thread::sleep(Duration::from_secs_f64(args.interval));
        }
    }
    let snap = read_once(&cfg);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
    } else {
        print!("{}", render(&snap));
    }
    Ok(())
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn si(v: Option<f64>, unit: &str) -> String {
    let Some(v) = v else { return "-".into() };
    let (d, p) = match v.abs() {
        x if x >= 1e9 => (1e9, "G"),
        x if x >= 1e6 => (1e6, "M"),
        x if x >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    format!("{:.2} {p}{unit}", v / d)
}

fn stat_pct(s: &Stat) -> String {
    format!(
        "{} (mean {}, ewma {})",
        pct(s.latest),
        pct(s.mean),
        pct(s.ewma)
    )
}

/// The human view: values first, then the sensor list with reasons and remedies.
pub fn render(s: &Snapshot) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "augur state: sample {} at {} Hz, window {} s",
        s.seq, s.sample_hz, s.window_seconds
    );
    render_cpus(&mut o, s);
    render_load(&mut o, s);
    render_probes(&mut o, s);
    render_sensors(&mut o, s);
    o
}

/// Per CPU: frequency, busy share, cluster and governor.
fn render_cpus(o: &mut String, s: &Snapshot) {
    let _ = writeln!(
        o,
        "\n{:<6} {:>12} {:>12} {:>8} {:>9}  governor",
        "cpu", "frequency", "max", "busy", "cluster"
    );
    for c in &s.cpus {
        let _ = writeln!(
            o,
            "{:<6} {:>12} {:>12} {:>8} {:>9}  {}",
            format!("cpu{}", c.cpu),
            si(c.frequency_hertz, "Hz"),
            si(c.max_hertz, "Hz"),
            pct(c.busy),
            c.cluster.map_or("-".into(), |v| v.to_string()),
            c.governor.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(
        o,
        "frequency ratio  {}",
        s.freq_ratio.map_or("-".into(), |r| format!("{r:.2}"))
    );
}

/// Utilisation by mode, augur's own share, the run queue and pressure.
fn render_load(o: &mut String, s: &Snapshot) {
    let u = &s.utilization;
    let _ = writeln!(o, "\nutilisation      busy {}", stat_pct(&u.busy));
    let _ = writeln!(
        o,
        "  by mode (mean) user {} system {} iowait {} irq {} steal {} idle {}",
        pct(u.user.mean),
        pct(u.system.mean),
        pct(u.iowait.mean),
        pct(u.irq.mean),
        pct(u.steal.mean),
        pct(u.idle.mean)
    );
    let _ = writeln!(
        o,
        "augur itself     {}   others {}",
        stat_pct(&s.own_cpu),
        pct(s.others_busy())
    );
    let load = s.loadavg.as_ref().map_or("-".into(), |l| {
        format!("{:.2} {:.2} {:.2}", l.one, l.five, l.fifteen)
    });
    let _ = writeln!(
        o,
        "run queue        {} running, {} blocked; load {load}",
        s.procs_running.map_or("-".into(), |v| v.to_string()),
        s.procs_blocked.map_or("-".into(), |v| v.to_string())
    );
    for (name, p) in [
        ("cpu", &s.pressure.cpu),
        ("memory", &s.pressure.memory),
        ("io", &s.pressure.io),
    ] {
        if let Some(p) = p {
            let full = p
                .full
                .as_ref()
                .map_or("-".into(), |f| format!("{:.2}%", f.avg10));
            let _ = writeln!(
                o,
                "pressure {name:<7} some {:.2}%  full {full}  (avg10)",
                p.some.avg10
            );
        }
    }
}

/// The probes, the counters, thermal and power readings, the sampler's cost.
fn render_probes(o: &mut String, s: &Snapshot) {
    let pr = &s.probe;
    let ratio = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}"));
    let _ = writeln!(
        o,
        "\nprobe compute    {} (ewma {}, baseline {}, ratio {}, {} runs)",
        si(pr.compute_flops.latest, "FLOP/s"),
        si(pr.compute_flops.ewma, "FLOP/s"),
        si(pr.compute_baseline_flops, "FLOP/s"),
        ratio(pr.compute_ratio),
        pr.compute_runs
    );
    let m = &pr.memory_bandwidth_bytes_per_second;
    let _ = writeln!(
        o,
        "probe memory     {} (ewma {}, baseline {}, ratio {}, {} runs)",
        si(m.latest, "B/s"),
        si(m.ewma, "B/s"),
        si(pr.memory_baseline_bytes_per_second, "B/s"),
        ratio(pr.memory_ratio),
        pr.memory_runs
    );
    if let Some(p) = &s.perf {
        let _ = writeln!(
            o,
            "counters         IPC {}  cache-miss ratio {}  LLC misses {}  DRAM {}",
            p.ipc.map_or("-".into(), |v| format!("{v:.2}")),
            pct(p.cache_miss_ratio),
            si(p.llc_misses_per_second, "/s"),
            si(p.memory_bandwidth_bytes_per_second, "B/s")
        );
    }
    for z in &s.thermal {
        let _ = writeln!(
            o,
            "thermal          {} ({}) {:.1} °C",
            z.zone, z.kind, z.celsius
        );
    }
    for r in &s.power {
        let _ = writeln!(
            o,
            "power            {}:{} {:.2} W",
            r.source, r.name, r.watts
        );
    }
    let _ = writeln!(
        o,
        "sampler cost     {} of one core",
        pct(s.sampler.cpu_share)
    );
}

/// Every sensor, live or off, with its reason and remedy.
fn render_sensors(o: &mut String, s: &Snapshot) {
    let _ = writeln!(o, "\nsensors");
    for st in &s.sensors {
        let mark = if st.available { "live" } else { "off " };
        let note = if st.available {
            st.detail.clone()
        } else {
            st.reason.clone()
        };
        let _ = writeln!(o, "  {mark} {:<14} {}", st.name, note.unwrap_or_default());
        if let Some(r) = &st.remedy {
            let _ = writeln!(o, "       {:<14} remedy: {r}", "");
        }
    }
}
