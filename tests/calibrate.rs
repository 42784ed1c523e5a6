//! Calibration, profile, predict and eval, end to end through the real binary.
mod common;

use common::{augur, zoo_model as zoo};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One small calibration shared by the tests (a few seconds of measuring, no load fit).
fn profile() -> &'static Path {
    &calibration().0
}

/// The shared calibration's profile and what the command printed.
fn calibration() -> &'static (PathBuf, String) {
    static P: OnceLock<(PathBuf, String)> = OnceLock::new();
    P.get_or_init(|| {
        let dir = common::process_scratch("calibrate");
        let out = dir.join("profile.json");
        let o = augur()
            .args([
                "calibrate",
                "--budget",
                "quick",
                "--budget-seconds",
                "10",
                "--no-load-fit",
                "--quiet",
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "calibrate failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        (out, String::from_utf8_lossy(&o.stderr).into_owned())
    })
}

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn profile_is_small_self_describing_and_round_trips() {
    let p = profile();
    let size = std::fs::metadata(p).unwrap().len();
    assert!(size < 10_000_000, "profile is {size} bytes");
    let (prof, warnings) =
        augur::profile::Profile::load(p, &augur::profile::tract_runtime()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(prof.format_version, augur::profile::FORMAT_VERSION);
    assert!(prof.runtime.starts_with("tract "));
    assert!(!prof.measurements.is_empty());
    assert!(!prof.regressors.is_empty());
    assert!(
        prof.fusion
            .pairs
            .contains(&("pointwise".to_string(), "relu".to_string()))
    );
    // Save and load again: identical predictions.
    let copy = p.with_file_name("copy.json");
    prof.save(&copy).unwrap();
    let (again, _) =
        augur::profile::Profile::load(&copy, &augur::profile::tract_runtime()).unwrap();
    for m in prof.measurements.iter().take(50) {
        assert_eq!(prof.kernel_ms(&m.kernel), again.kernel_ms(&m.kernel));
    }
}

#[test]
fn version_and_device_checks() {
    let p = profile();
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    let dir = p.parent().unwrap();
    v["format_version"] = 999.into();
    let bad = dir.join("future.json");
    std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = augur::profile::Profile::load(&bad, &augur::profile::tract_runtime())
        .unwrap_err()
        .to_string();
    assert!(e.contains("format 999"), "{e}");
    v["format_version"] = augur::profile::FORMAT_VERSION.into();
    v["device"]["cpu_model"] = "Some Other SoC".into();
    v["runtime"] = "tract 0.0.1".into();
    let other = dir.join("other.json");
    std::fs::write(&other, serde_json::to_vec(&v).unwrap()).unwrap();
    let (_, warnings) =
        augur::profile::Profile::load(&other, &augur::profile::tract_runtime()).unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    // The CLI prints them and still predicts.
    let o = augur()
        .args(["predict", "--static", "--profile"])
        .arg(&other)
        .arg(zoo("mobilenet_v3_small_224"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("another board") && err.contains("tract 0.0.1"),
        "{err}"
    );
    // A profile whose reference readings were taken bare (made before the calibration took them
    // as the live probe does) says so: its live speed term predicts low.
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    v["reference"]["workload_cpu_ms"] = 20.0.into();
    v["reference"]["workload_warm"] = true.into();
    let fresh = dir.join("warm.json");
    std::fs::write(&fresh, serde_json::to_vec(&v).unwrap()).unwrap();
    let (_, warnings) =
        augur::profile::Profile::load(&fresh, &augur::profile::tract_runtime()).unwrap();
    assert!(
        !warnings.iter().any(|w| w.contains("warm-up")),
        "{warnings:?}"
    );
    v["reference"]
        .as_object_mut()
        .unwrap()
        .remove("workload_warm");
    let bare = dir.join("bare.json");
    std::fs::write(&bare, serde_json::to_vec(&v).unwrap()).unwrap();
    let (_, warnings) =
        augur::profile::Profile::load(&bare, &augur::profile::tract_runtime()).unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("warm-up") && w.contains("calibrate")),
        "{warnings:?}"
    );
    std::fs::write(dir.join("torn.json"), b"{\"format_version\": 1, \"dev").unwrap();
    let o = augur()
        .args(["predict", "--profile"])
        .arg(dir.join("torn.json"))
        .arg(zoo("mobilenet_v3_small_224"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
}

#[test]
fn predict_json_and_fallback_flag() {
    let p = profile();
    let o = augur()
        .args(["predict", "--static", "--json", "--profile"])
        .arg(p)
        .arg(zoo("resnet18_128"))
        .output()
        .unwrap();
    let v = json(&o);
    let lat = v["latency_ms"].as_f64().unwrap();
    assert!(lat > 0.0);
    let iv = v["interval_ms"].as_array().unwrap();
    assert!(iv[0].as_f64().unwrap() <= lat && lat <= iv[1].as_f64().unwrap());
    assert!(v["peak_memory_bytes"].as_u64().unwrap() > 46_000_000);
    let ks = v["kernels"].as_array().unwrap();
    assert!(
        ks.iter()
            .all(|k| k["latency_ms"].as_f64().unwrap() > 0.0 && k["kind"].is_string())
    );
    let sum: f64 = ks.iter().map(|k| k["latency_ms"].as_f64().unwrap()).sum();
    assert!((sum - lat).abs() / lat < 1e-6);

    // Drop the conv regressor: those kernels fall back to the roofline, flagged, and never 0 ms.
    let mut prof: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    prof["regressors"].as_object_mut().unwrap().remove("conv");
    let q = p.with_file_name("noconv.json");
    std::fs::write(&q, serde_json::to_vec(&prof).unwrap()).unwrap();
    let v = json(
        &augur()
            .args(["predict", "--static", "--json", "--profile"])
            .arg(&q)
            .arg(zoo("resnet18_128"))
            .output()
            .unwrap(),
    );
    let convs: Vec<&serde_json::Value> = v["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kind"] == "conv")
        .collect();
    assert!(!convs.is_empty());
    assert!(
        convs
            .iter()
            .all(|k| k["fallback"] == true && k["latency_ms"].as_f64().unwrap() > 0.0)
    );
    assert!(v["fallback_kernels"].as_u64().unwrap() as usize >= convs.len());
}

#[test]
fn predict_answers_the_chance_of_meeting_a_deadline() {
    let p = profile();
    let predict = |extra: &[&str]| {
        augur()
            .args(["predict", "--static", "--profile"])
            .arg(p)
            .args(extra)
            .arg(zoo("mobilenet_v3_small_224"))
            .output()
            .unwrap()
    };
    let plain = json(&predict(&["--json"]));
    assert!(plain["p_deadline"].is_null() && plain["deadline_ms"].is_null());
    let lat = plain["latency_ms"].as_f64().unwrap();
    // At the prediction a coin toss; far above it near certain; far below it near hopeless.
    let at = |d: f64| {
        let v = json(&predict(&["--json", "--deadline-ms", &d.to_string()]));
        assert_eq!(v["deadline_ms"].as_f64(), Some(d));
        v["p_deadline"].as_f64().unwrap()
    };
    assert!((at(lat) - 0.5).abs() < 1e-6);
    assert!(at(lat * 10.0) > 0.99);
    assert!(at(lat / 10.0) < 0.01);
    let text = predict(&["--deadline-ms", "1000"]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("within 1000 ms"));
    // A deadline that is no positive number is one clear line.
    for bad in ["0", "-5", "NaN", "inf"] {
        let o = predict(&["--deadline-ms", bad]);
        assert!(!o.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{bad}: {err}");
        assert!(err.contains("--deadline-ms"), "{err}");
    }
}

#[test]
fn eval_reports_errors_and_the_flops_baseline() {
    let p = profile();
    let o = augur()
        .args([
            "eval",
            "--json",
            "--runs",
            "3",
            "--passes",
            "2",
            "--window-s",
            "0.2",
            "--profile",
        ])
        .arg(p)
        .arg(zoo("mobilenet_v3_small_224"))
        .arg(zoo("squeezenet1_1_224"))
        .output()
        .unwrap();
    let v = json(&o);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    for m in models {
        let (p, me, e) = (
            m["predicted_ms"].as_f64().unwrap(),
            m["measured_ms"].as_f64().unwrap(),
            m["error_pct"].as_f64().unwrap(),
        );
        assert!(p > 0.0 && me > 0.0);
        assert!((e - (p - me) / me * 100.0).abs() < 1e-6);
    }
    for key in ["summary", "baseline_flops"] {
        let s = &v[key];
        let w10 = s["within_10_pct"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&w10));
        assert!(s["within_5_pct"].as_f64().unwrap() <= w10);
        assert!(s["mape_pct"].as_f64().unwrap() >= 0.0 && s["rmse_ms"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn interrupted_calibration_resumes_without_remeasuring() {
    let dir = common::scratch("resume");
    let out = dir.path().join("profile.json");
    let journal = dir.path().join("profile.json.measurements.jsonl");
    let args = [
        "calibrate",
        "--budget",
        "quick",
        "--budget-seconds",
        "60",
        "--no-load-fit",
        "--quiet",
        "--out",
    ];
    // Kill -9 in the middle of measuring: as soon as a few measurements are journalled, not after
    // a fixed sleep — what comes before the first kernel (the cache sweeps) takes longer on a
    // loaded two-core runner than on a quiet one.
    let mut child = augur().args(args).arg(&out).spawn().unwrap();
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(60) {
        let journalled = std::fs::read_to_string(&journal)
            .map(|t| t.lines().skip(1).filter(|l| l.ends_with('}')).count())
            .unwrap_or(0);
        if journalled >= 3 || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // What each journal line measured: a kernel configuration, a kernel of a network, a reading.
    let keys = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .skip(1)
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| match v["entry"].as_str().unwrap() {
                "kernel" => format!("kernel/{}", v["config"]),
                "in_network" => format!("innet/{}/{}", v["network"], v["index"]),
                "reference" => format!("reference/{}", v["n"]),
                other => panic!("unknown journal entry {other}"),
            })
            .collect()
    };
    let before = keys(&journal);
    assert!(!before.is_empty(), "nothing was journalled before the kill");
    assert!(!out.exists());
    // Resume with a short budget: the journalled measurements are reused, none taken again.
    let o = augur()
        .args([
            "calibrate",
            "--budget",
            "quick",
            "--budget-seconds",
            "3",
            "--no-load-fit",
            "--quiet",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after = keys(&journal);
    let mut uniq = after.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(
        uniq.len(),
        after.len(),
        "a configuration was measured twice"
    );
    assert!(after.len() >= before.len());
    assert_eq!(&after[..before.len()], &before[..]);
    // Reference-workload timings are journalled beside the kernels (numbered on from the resumed
    // ones, so never overwritten) and end up in the profile's reference, not its measurements.
    let references = after.iter().filter(|k| k.starts_with("reference/")).count();
    assert!(references >= 2, "{references} reference timings");
    let (prof, _) = augur::profile::Profile::load(&out, &augur::profile::tract_runtime()).unwrap();
    assert_eq!(prof.measurements.len(), after.len() - references);
    assert!(prof.reference.workload_cpu_ms > 0.0);
}

#[test]
fn the_quality_report_is_stored_and_printed() {
    let (p, stderr) = calibration();
    let (prof, _) = augur::profile::Profile::load(p, &augur::profile::tract_runtime()).unwrap();
    let q = prof
        .quality
        .expect("a calibrated profile carries its quality report");
    // The reference workload was read between the measurements, and every measurement says the
    // board's speed it was taken at.
    assert!(q.noise.reference_readings >= 2, "{:?}", q.noise);
    assert!(q.noise.reference_median_ms > 0.0);
    assert_eq!(q.noise.reference_median_ms, prof.reference.workload_cpu_ms);
    assert!(prof.measurements.iter().all(|m| m.speed > 0.0));
    for (kind, e) in &q.held_out_error {
        assert_eq!(prof.regressors[kind].holdout_error, Some(*e));
    }
    assert!(stderr.contains("noise: reference workload"), "{stderr}");
    assert_eq!(
        q.is_poor(),
        stderr.contains("WARNING: this calibration is POOR")
    );
}

#[test]
fn a_malformed_slowdown_is_an_error_that_names_the_field() {
    let p = profile();
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    let mut s = serde_json::to_value(augur::profile::Slowdown::default()).unwrap();
    s["cpu_weight"] = "heavy".into();
    v["slowdown"] = s;
    let bad = p.with_file_name("bad-slowdown.json");
    std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = augur::profile::Profile::load(&bad, &augur::profile::tract_runtime())
        .unwrap_err()
        .to_string();
    assert!(e.contains("slowdown.cpu_weight"), "{e}");
    // A well-formed one is read back as it was written.
    v["slowdown"] = serde_json::to_value(augur::profile::Slowdown {
        cpu_weight: 1.7,
        ..Default::default()
    })
    .unwrap();
    std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
    let (prof, _) = augur::profile::Profile::load(&bad, &augur::profile::tract_runtime()).unwrap();
    assert_eq!(prof.slowdown.map(|s| s.cpu_weight), Some(1.7));
}

#[test]
fn regressors_refit_from_the_journal_alone_come_out_as_calibration_fitted_them() {
    let dir = common::scratch("refit");
    let out = dir.path().join("profile.json");
    std::fs::copy(profile(), &out).unwrap();
    // Without the journal there is nothing to refit from: one line, naming it.
    let o = augur()
        .args(["calibrate", "--only-regressors", "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("no journal") && err.contains("measurements.jsonl"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let mut journal = profile().as_os_str().to_owned();
    journal.push(".measurements.jsonl");
    std::fs::copy(&journal, dir.path().join("profile.json.measurements.jsonl")).unwrap();
    let o = augur()
        .args(["calibrate", "--only-regressors", "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let value = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let (before, after) = (value(profile()), value(&out));
    // The same timings and the same seed give the same trees and factors; what was measured
    // apart from the kernels is kept.
    assert_eq!(before["regressors"], after["regressors"]);
    assert_eq!(before["composition"], after["composition"]);
    assert_eq!(before["reference"], after["reference"]);
    assert_eq!(before["slowdown"], after["slowdown"]);
}
