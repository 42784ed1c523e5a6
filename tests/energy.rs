//! Energy: the meter integrates recorded counter traces of each source (RAPL with a wrap-around,
//! hwmon energy and power inputs, INA3221 on hwmon and on the old IIO driver, a battery) to the
//! trace's known integral, picks the total rather than adding its parts, says why where there is no
//! counter; and `augur predict` answers energy from the profile's power figures or says why not.
mod common;

use augur::profile::{Power, Profile};
use augur::sense::energy::{EnergyMeter, Meter};
use augur::util::roots::Roots;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    common::repo().join("tests/fixtures/energy")
}

/// A recorded trace: `# joules J` (the integral), `# sys DIR` (what the file names are relative to,
/// under `sys/`), then one line per reading: seconds, then `file=value` for each counter.
struct Trace {
    joules: f64,
    dir: String,
    rows: Vec<(f64, Vec<(String, String)>)>,
}

fn trace(name: &str) -> Trace {
    let text = std::fs::read_to_string(fixtures().join(name).join("trace.tsv")).unwrap();
    let (mut joules, mut dir, mut rows) = (None, None, Vec::new());
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            if let Some(j) = h.strip_prefix("joules ") {
                joules = Some(j.parse().unwrap());
            } else if let Some(d) = h.strip_prefix("sys ") {
                dir = Some(d.to_string());
            }
            continue;
        }
        let mut cols = line.split('\t');
        let t: f64 = cols.next().unwrap().parse().unwrap();
        let vals = cols
            .map(|c| {
                let (k, v) = c.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        rows.push((t, vals));
    }
    Trace {
        joules: joules.unwrap(),
        dir: dir.unwrap(),
        rows,
    }
}

/// Copies a fixture tree where the test may write.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Replays `name`'s trace through the meter (the files rewritten before each reading, the
/// readings at the trace's times): the joules it integrates and the source it chose.
fn replay(name: &str) -> (f64, f64, String) {
    let tr = trace(name);
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join(name).join("sys"), &tmp.path().join("sys"));
    let roots = Roots::new(tmp.path().join("sys"), tmp.path().join("proc"));
    let base = roots.sys(&tr.dir);
    let write = |vals: &[(String, String)]| {
        for (file, v) in vals {
            std::fs::write(base.join(file), format!("{v}\n")).unwrap();
        }
    };
    let mut meter = EnergyMeter::new(&roots).unwrap_or_else(|u| panic!("{name}: {u}"));
    let t0 = Instant::now();
    let at = |t: f64| t0 + Duration::from_secs_f64(t);
    let (first, rest) = tr.rows.split_first().unwrap();
    write(&first.1);
    meter.start(at(first.0)).unwrap();
    let (last, middle) = rest.split_last().unwrap();
    for (t, vals) in middle {
        write(vals);
        meter.sample(at(*t)).unwrap();
    }
    write(&last.1);
    let got = meter.finish(at(last.0)).unwrap();
    assert!((got.seconds - last.0 + first.0).abs() < 1e-6, "{got:?}");
    (got.joules, tr.joules, meter.source())
}

fn within_1_percent(name: &str) -> String {
    let (got, want, source) = replay(name);
    assert!(
        (got - want).abs() <= 0.01 * want,
        "{name} ({source}): {got:.4} J, the trace's integral is {want:.4} J"
    );
    source
}

#[test]
fn rapl_trace_with_a_wrap_around() {
    let source = within_1_percent("rapl");
    // Both packages, not the core sub-zone inside package-0.
    assert_eq!(source, "rapl energy: package-0 + package-1");
}

#[test]
fn hwmon_energy_trace() {
    let source = within_1_percent("hwmon-energy");
    assert_eq!(source, "hwmon energy: Esocket0");
}

#[test]
fn hwmon_power_trace() {
    assert_eq!(within_1_percent("hwmon-power"), "hwmon power: SYS");
}

#[test]
fn ina3221_traces() {
    // The board's input rail alone: the others are parts of it.
    assert_eq!(within_1_percent("ina3221"), "ina3221 power: VDD_IN");
    assert_eq!(within_1_percent("ina3221x"), "ina3221 power: POM_5V_IN");
}

#[test]
fn battery_trace_and_a_charging_battery() {
    assert_eq!(within_1_percent("battery"), "battery power: BAT0");
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("battery/sys"), &tmp.path().join("sys"));
    std::fs::write(
        tmp.path().join("sys/class/power_supply/BAT0/status"),
        "Charging\n",
    )
    .unwrap();
    let u =
        EnergyMeter::new(&Roots::new(tmp.path().join("sys"), tmp.path().join("proc"))).unwrap_err();
    assert!(u.reason.contains("Charging"), "{u}");
}

#[test]
fn a_board_without_a_counter_says_why_and_what_would_help() {
    for board in ["vm", "rpi4", "phone"] {
        let dir = common::repo().join("tests/fixtures").join(board);
        let u = EnergyMeter::new(&Roots::new(dir.join("sys"), dir.join("proc"))).unwrap_err();
        assert!(u.reason.contains("no RAPL powercap zone"), "{board}: {u}");
        assert!(u.reason.contains(&dir.join("sys").display().to_string()));
        assert!(u.remedy.contains("/sys/class/powercap"), "{board}: {u}");
    }
    // The Jetson fixture has an INA3221: a meter on its input rail.
    let dir = common::repo().join("tests/fixtures/jetson");
    let m = EnergyMeter::new(&Roots::new(dir.join("sys"), dir.join("proc"))).unwrap();
    assert_eq!(m.source(), "ina3221 power: VDD_IN");
}

#[test]
fn measure_samples_a_power_rail_while_work_runs() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("hwmon-power/sys"), &tmp.path().join("sys"));
    let roots = Roots::new(tmp.path().join("sys"), tmp.path().join("proc"));
    let file = roots.sys("class/hwmon/hwmon0/power1_input");
    std::fs::write(&file, "5000000\n").unwrap();
    let mut meter = EnergyMeter::new(&roots)
        .unwrap()
        .with_period(Duration::from_millis(5));
    let i = meter
        .measure(&mut || std::thread::sleep(Duration::from_millis(200)))
        .unwrap();
    assert!(i.seconds >= 0.2, "{i:?}");
    assert!((i.watts() - 5.0).abs() < 1e-9, "{i:?}");
}

/// A profile whose predictions come from the roofline alone, with `power` as given.
fn profile_with(dir: &Path, name: &str, power: Option<Power>) -> PathBuf {
    let mut v = serde_json::json!({
        "format_version": augur::profile::FORMAT_VERSION,
        "augur_version": "",
        "created_unix": 0,
        "device": augur::profile::DeviceInfo::detect(&Roots::default()),
        "runtime": augur::profile::tract_runtime(),
        "threads": 1,
        "budget": "quick",
        "fusion": augur::kernels::FusionRules::tract_default(),
        "roofline": augur::profile::Roofline::default(),
        "regressors": {},
        "measurements": [],
    });
    if let Some(p) = power {
        v["power"] = serde_json::to_value(p).unwrap();
    }
    // It loads as a profile (an old one without `power` too).
    let _: Profile = serde_json::from_value(v.clone()).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    path
}

fn predict(profile: &Path, json: bool) -> std::process::Output {
    let mut c = common::augur();
    c.args(["predict", "--static", "--profile"]).arg(profile);
    if json {
        c.arg("--json");
    }
    let o = c
        .arg(common::zoo_model("mobilenet_v3_small_224"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

#[test]
fn predict_answers_energy_from_the_profile_or_why_not() {
    let dir = common::scratch("energy");
    let watts = BTreeMap::from([
        (augur::kernels::KernelKind::Conv, 4.0),
        (augur::kernels::KernelKind::Pointwise, 3.0),
        (augur::kernels::KernelKind::Depthwise, 2.0),
    ]);
    let measured = profile_with(
        dir.path(),
        "measured.json",
        Some(Power {
            source: "rapl energy: package-0".into(),
            idle_watts: Some(5.0),
            above_idle_watts: watts.clone(),
            unavailable: None,
        }),
    );
    let v: serde_json::Value = serde_json::from_slice(&predict(&measured, true).stdout).unwrap();
    let mean = watts.values().sum::<f64>() / watts.len() as f64;
    let want: f64 = v["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let kind: augur::kernels::KernelKind =
                serde_json::from_value(k["kind"].clone()).unwrap();
            k["latency_ms"].as_f64().unwrap() / 1e3 * watts.get(&kind).copied().unwrap_or(mean)
        })
        .sum();
    let got = v["energy_joules"].as_f64().unwrap();
    assert!(
        want > 0.0 && (got - want).abs() <= 1e-9 * want,
        "{got} vs {want}"
    );
    assert!(v["energy_unavailable"].is_null());
    let text = String::from_utf8_lossy(&predict(&measured, false).stdout).into_owned();
    assert!(
        text.contains("energy: ") && text.contains(" J above idle"),
        "{text}"
    );

    // Calibrated where there was no counter: the profile's reason.
    let none = profile_with(
        dir.path(),
        "none.json",
        Some(Power::unavailable(
            "no energy counter at calibration: nothing under /sys",
        )),
    );
    let v: serde_json::Value = serde_json::from_slice(&predict(&none, true).stdout).unwrap();
    assert!(v["energy_joules"].is_null());
    assert_eq!(
        v["energy_unavailable"],
        "no energy counter at calibration: nothing under /sys"
    );
    let text = String::from_utf8_lossy(&predict(&none, false).stdout).into_owned();
    assert!(
        text.contains("energy: unavailable — no energy counter at calibration"),
        "{text}"
    );

    // A profile made before power was measured: what the board's meter says now.
    let old = profile_with(dir.path(), "old.json", None);
    let v: serde_json::Value = serde_json::from_slice(&predict(&old, true).stdout).unwrap();
    assert!(v["energy_joules"].is_null());
    let why = v["energy_unavailable"].as_str().unwrap();
    match EnergyMeter::new(&Roots::default()) {
        Err(u) => assert!(why.contains(&u.reason), "{why}"),
        Ok(m) => assert!(why.contains(&m.source()), "{why}"),
    }
}
