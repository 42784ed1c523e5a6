//! `augur plan` and `augur split` end to end: the JSON contract of the options on a zoo model with a
//! stand-in remote board, the table, the halves of a cut importing again with their MACs adding up
//! to the model's and, run one after the other, computing the model's output; bad input refused
//! with one clear line.
mod common;

use common::{augur, roofline_profile, scratch, zoo_model};
use serde_json::Value;
use std::path::Path;

const KEYS: [&str; 10] = [
    "cut",
    "interval_ms",
    "latency_ms",
    "local_ms",
    "local_peak_memory_bytes",
    "p_deadline",
    "placement",
    "remote_ms",
    "threads",
    "transfer_bytes",
];

fn boards(dir: &Path) -> (String, String) {
    let here = dir.join("here.json");
    let there = dir.join("there.json");
    std::fs::write(&here, roofline_profile(2.0, 1)).unwrap();
    std::fs::write(&there, roofline_profile(40.0, 2)).unwrap();
    (here.display().to_string(), there.display().to_string())
}

fn plan(args: &[&str]) -> std::process::Output {
    augur().arg("plan").args(args).output().unwrap()
}

#[test]
fn the_options_keep_the_contract_and_are_ranked() {
    let dir = scratch("plan");
    let (here, there) = boards(dir.path());
    let model = zoo_model("resnet18_224");
    let m = model.to_str().unwrap();
    let out = plan(&[
        m,
        "--profile",
        &here,
        "--remote",
        &there,
        "--link-mbps",
        "200",
        "--rtt-ms",
        "2",
        "--deadline-ms",
        "5000",
        "--static",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let options = v["options"].as_array().unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1, "only `options`");
    // Local, remote, and a split at each block boundary of resnet18 at least.
    assert!(options.len() >= 2 + 8, "{}", options.len());
    let mut last = 0.0;
    for o in options {
        let mut keys: Vec<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, KEYS);
        let ms = o["latency_ms"].as_f64().unwrap();
        assert!(ms >= last, "not best first");
        last = ms;
        let i = o["interval_ms"].as_array().unwrap();
        assert!(i[0].as_f64().unwrap() <= ms && ms <= i[1].as_f64().unwrap());
        let p = o["p_deadline"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
        match o["placement"].as_str().unwrap() {
            "local" => assert!(o["cut"].is_null() && o["threads"] == 1),
            "remote" => assert!(o["cut"].is_null() && o["threads"] == 2),
            "split" => assert!(o["cut"].as_str().is_some_and(|c| !c.is_empty())),
            other => panic!("placement {other}"),
        }
    }
    // Twenty times the speed over a fast link: running here is not the best option.
    assert_ne!(options[0]["placement"], "local");

    // Without a deadline p_deadline is null; ranked by memory the smallest footprint comes first.
    let out = plan(&[
        m,
        "--profile",
        &here,
        "--remote",
        &there,
        "--link-mbps",
        "200",
        "--static",
        "--json",
        "--by",
        "memory",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let options = v["options"].as_array().unwrap();
    assert!(options.iter().all(|o| o["p_deadline"].is_null()));
    let mem: Vec<u64> = options
        .iter()
        .map(|o| o["local_peak_memory_bytes"].as_u64().unwrap())
        .collect();
    assert!(mem.windows(2).all(|w| w[0] <= w[1]), "{mem:?}");
    assert_eq!(options[0]["placement"], "remote");

    // The table names every option.
    let out = plan(&[m, "--profile", &here, "--static"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("placement") && text.contains("local"),
        "{text}"
    );
}

#[test]
fn the_halves_of_a_cut_import_again_and_add_up() {
    let dir = scratch("split");
    let (here, there) = boards(dir.path());
    let model = zoo_model("mobilenet_v2_224");
    let m = model.to_str().unwrap();
    let out = plan(&[
        m,
        "--profile",
        &here,
        "--remote",
        &there,
        "--link-mbps",
        "100",
        "--static",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cuts: Vec<String> = v["options"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["cut"].as_str().map(str::to_string))
        .collect();
    assert!(cuts.len() >= 10, "{cuts:?}");
    let g = augur::model::import_path(&model, None).unwrap();
    let rules = augur::kernels::FusionRules::tract_default();
    let whole = augur::kernels::decompose(&g, &rules).unwrap();
    // The first, a middle and the last cut.
    for cut in [&cuts[0], &cuts[cuts.len() / 2], &cuts[cuts.len() - 1]] {
        let out_dir = dir.path().join(cut.replace(['/', '+'], "_"));
        let out = augur()
            .args(["split", m, "--cut", cut, "--out"])
            .arg(&out_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let half = |f: &str| {
            let g = augur::model::import_path(&out_dir.join(f), None)
                .unwrap_or_else(|e| panic!("{cut}: {f} does not import: {e}"));
            augur::kernels::decompose(&g, &rules).unwrap()
        };
        let (p, s) = (half("prefix.onnx"), half("suffix.onnx"));
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("placeholder"),
            "{cut}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(p.macs + s.macs, whole.macs, "{cut}");
        assert!(p.macs > 0 && s.macs > 0, "{cut}");
        assert_eq!(
            p.kernels.len() + s.kernels.len(),
            whole.kernels.len(),
            "{cut}"
        );
        // The halves carry the model's weights: the suffix fed the prefix's outputs computes the
        // model's output.
        let input = || {
            let n = 3 * 224 * 224;
            let v: Vec<f32> = (0..n).map(|i| (i % 17) as f32 / 17.0 - 0.5).collect();
            tract_onnx::prelude::Tensor::from_shape(&[1, 3, 224, 224], &v).unwrap()
        };
        let expected = run(&model, vec![input()]);
        let middle = run(&out_dir.join("prefix.onnx"), vec![input()]);
        let got = run(&out_dir.join("suffix.onnx"), middle);
        let floats = |t: &tract_onnx::prelude::Tensor| -> Vec<f32> {
            let plain = t.try_as_plain_ram().unwrap();
            plain.as_slice::<f32>().unwrap().to_vec()
        };
        let (e, g) = (floats(&expected[0]), floats(&got[0]));
        assert_eq!(e.len(), g.len(), "{cut}");
        let scale = e.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
        let worst = e
            .iter()
            .zip(&g)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            scale > 1e-4 && worst <= 1e-4 * scale,
            "{cut}: {worst} of {scale}"
        );
    }
}

/// Runs an ONNX file in tract on `inputs`: its outputs, in order.
fn run(path: &Path, inputs: Vec<tract_onnx::prelude::Tensor>) -> Vec<tract_onnx::prelude::Tensor> {
    use tract_onnx::prelude::*;
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let inputs: TVec<TValue> = inputs.into_iter().map(|t| t.into_tvalue()).collect();
    model
        .run(inputs)
        .unwrap()
        .into_iter()
        .map(|v| v.into_tensor())
        .collect()
}

#[test]
fn bad_input_is_one_clear_line() {
    let dir = scratch("plan-bad");
    let (here, there) = boards(dir.path());
    let model = zoo_model("squeezenet1_1_224");
    let m = model.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![m, "--profile", &here, "--remote", &there],
            "--link-mbps",
        ),
        (
            vec![
                m,
                "--profile",
                &here,
                "--remote",
                &there,
                "--link-mbps",
                "0",
            ],
            "bandwidth",
        ),
        (
            vec![
                m,
                "--profile",
                &here,
                "--remote",
                &there,
                "--link-mbps",
                "NaN",
            ],
            "bandwidth",
        ),
        (
            vec![
                m,
                "--profile",
                &here,
                "--remote",
                &there,
                "--link-mbps",
                "10",
                "--rtt-ms=-1",
            ],
            "round-trip",
        ),
        (
            vec![m, "--profile", &here, "--deadline-ms", "0"],
            "deadline",
        ),
        (
            vec![m, "--profile", &here, "--deadline-ms", "inf"],
            "deadline",
        ),
        (vec![m, "--profile", &here, "--by", "speed"], "cannot rank"),
        (
            vec![
                m,
                "--profile",
                &here,
                "--remote",
                "https://board:9747",
                "--link-mbps",
                "10",
            ],
            "https is not supported",
        ),
        (
            vec![m, "--profile", &here, "--max-crossing", "3"],
            "max-crossing",
        ),
        (
            vec![
                m,
                "--profile",
                &here,
                "--remote",
                "/no/such/profile.json",
                "--link-mbps",
                "10",
            ],
            "profile",
        ),
    ];
    for (args, says) in cases {
        let mut a = args.clone();
        a.push("--static");
        let out = plan(&a);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // Energy is refused once the profile is read (its stand-in board draws a warning first): the
    // error is the last line and says why.
    let out = plan(&[m, "--profile", &here, "--by", "energy", "--static"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("cannot rank by energy") && last.contains("power"),
        "{err}"
    );
    let out = augur()
        .args(["split", m, "--cut", "no-such-tensor", "--out"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cut"));
}

#[test]
fn thread_counts_are_chosen_for_each_board() {
    let dir = scratch("plan-threads");
    let (here, there) = boards(dir.path());
    let model = zoo_model("squeezenet1_1_224");
    let m = model.to_str().unwrap();
    let options = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec![
            m,
            "--profile",
            &here,
            "--remote",
            &there,
            "--link-mbps",
            "200",
            "--static",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = plan(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["options"].as_array().unwrap().clone()
    };
    // The remote board (2 cores) asked for 1 thread answers for 1; a list offers each count once.
    let o = options(&["--remote-threads", "1", "--threads", "1,1"]);
    let remote: Vec<&Value> = o.iter().filter(|o| o["placement"] == "remote").collect();
    assert_eq!(remote.len(), 1);
    assert_eq!(remote[0]["threads"], 1);
    assert_eq!(o.iter().filter(|o| o["placement"] == "local").count(), 1);
    // `all` offers at least the profile's own count here.
    let o = options(&["--threads", "all"]);
    assert!(
        o.iter()
            .any(|o| o["placement"] == "local" && o["threads"] == 1)
    );

    for (args, says) in [
        (vec!["--threads", "two"], "--threads"),
        (vec!["--remote-threads", "3"], "--remote-threads"),
    ] {
        let mut a = vec![
            m,
            "--profile",
            &here,
            "--remote",
            &there,
            "--link-mbps",
            "200",
        ];
        a.extend(args);
        let out = plan(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{err}");
    }
    let out = plan(&[m, "--profile", &here, "--remote-threads", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("needs --remote"),
        "{err}"
    );
}
