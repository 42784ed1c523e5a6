//! `POST /v1/plan`: the options of one model with a remote board, several models and a deadline
//! (the choice), several boards (where each model runs fastest), and bad input refused with the
//! right status.
use super::daemon::*;
use super::http::post_json;
use serde_json::{Value, json};

/// Checks the options of a plan whose remote board is a daemon that answered `p` (its per-kernel
/// prediction of the model): the remote option is live and near `p`, and each of more than three
/// splits leaves the remote board a share of the whole that is a tail of `p`'s kernels (the live
/// state may move between the plan and `p`, shares hardly). Returns the remote option.
fn remote_parts_are_tails<'a>(options: &'a [Value], p: &Value) -> &'a Value {
    let ms: Vec<f64> = p["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["latency_ms"].as_f64().unwrap())
        .collect();
    let total: f64 = ms.iter().sum();
    let tails: Vec<f64> = (0..ms.len())
        .map(|k| ms[k..].iter().sum::<f64>() / total)
        .collect();
    let whole = options
        .iter()
        .find(|o| o["placement"] == "remote")
        .unwrap_or_else(|| panic!("no remote option: {options:?}"));
    assert_eq!(whole["remote_live"], true, "{whole}");
    let remote_total = whole["remote_ms"].as_f64().unwrap();
    let drift = remote_total / p["latency_ms"].as_f64().unwrap();
    assert!((0.5..2.0).contains(&drift), "{remote_total} vs {p}");
    let splits: Vec<&Value> = options
        .iter()
        .filter(|o| o["placement"] == "split")
        .collect();
    assert!(splits.len() > 3, "{options:?}");
    for o in &splits {
        assert_eq!(o["remote_live"], true, "{o}");
        let share = o["remote_ms"].as_f64().unwrap() / remote_total;
        let nearest = tails
            .iter()
            .map(|t| (t - share).abs())
            .fold(f64::INFINITY, f64::min);
        assert!(
            nearest < 0.005,
            "{o}: {share} is no tail of the other daemon's kernels"
        );
    }
    whole
}

fn id_of(port: u16, model: &str) -> String {
    let r = post_model(port, &zoo(model));
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

#[test]
fn plans_choices_and_refusals() {
    let dir = scratch("plan-route");
    config(&dir, "json_body_bytes = 65536", "");
    let boards = dir.join("state/boards");
    std::fs::create_dir_all(&boards).unwrap();
    std::fs::write(
        boards.join("fast.json"),
        crate::common::roofline_profile(5000.0, 4),
    )
    .unwrap();
    std::fs::write(
        boards.join("slow.json"),
        crate::common::roofline_profile(0.5, 1),
    )
    .unwrap();
    std::fs::write(boards.join("broken.json"), "{\"format_version\": 1}").unwrap();
    let d = Daemon::start(&dir, &[]);
    let port = d.port;
    d.wait_ready();
    let small = id_of(port, "squeezenet1_1_224.onnx");
    let large = id_of(port, "resnet18_224.onnx");

    // One model, one remote board: the CLI's contract.
    let r = post_json(
        port,
        "/v1/plan",
        &json!({"model": large, "remote": "fast", "link_mbps": 1000, "rtt_ms": 1}),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    let options = v["options"].as_array().unwrap();
    assert!(options.len() > 5);
    assert!(
        options
            .windows(2)
            .all(|w| w[0]["latency_ms"].as_f64() <= w[1]["latency_ms"].as_f64())
    );
    for o in options {
        assert_eq!(o.as_object().unwrap().len(), 10, "{o}");
        assert!(o["p_deadline"].is_null());
    }
    assert!(options.iter().any(|o| o["placement"] == "split"));
    assert!(options.iter().any(|o| o["placement"] == "local"));

    // Local only, by memory, with a deadline.
    let r = post_json(
        port,
        "/v1/plan",
        &json!({"model": small, "deadline_ms": 1e5, "by": "memory"}),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let o = &r.json()["options"];
    assert_eq!(o.as_array().unwrap().len(), 1);
    assert!(o[0]["p_deadline"].as_f64().unwrap() > 0.9);

    // Several models and a deadline between their times: the larger one that meets it.
    let solo = |id: &str| {
        post_json(port, "/v1/plan", &json!({"model": id}))
            .unwrap()
            .json()["options"][0]["latency_ms"]
            .as_f64()
            .unwrap()
    };
    let (ts, tl) = (solo(&small), solo(&large));
    assert!(ts < tl);
    let pick = |deadline: f64| -> Value {
        let r = post_json(
            port,
            "/v1/plan",
            &json!({"models": [small, large], "deadline_ms": deadline}),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let v = pick(tl * 3.0);
    assert_eq!(v["models"].as_array().unwrap().len(), 2);
    assert_eq!(v["choice"]["model"], large.as_str());
    let v = pick((ts * tl).sqrt());
    // Met nine times in ten needs about 1.7× the prediction with an uncalibrated interval.
    if (ts * tl).sqrt() > ts * 2.0 {
        assert_eq!(v["choice"]["model"], small.as_str(), "{v}");
    }
    let v = pick(ts / 10.0);
    assert!(v["choice"].is_null(), "{v}");

    // Several boards: each option names its board, and the fastest board of each model is named.
    let r = post_json(
        port,
        "/v1/plan",
        &json!({"models": [small, large], "boards": ["fast", "slow"], "link_mbps": 1000}),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let fastest = v["fastest"].as_array().unwrap();
    assert_eq!(fastest.len(), 2);
    for f in fastest {
        // 5 TFLOP/s beside this board's roofline: the fast board wins, and it is a profile.
        assert_eq!(f["board"], "fast", "{f}");
        assert_eq!(f["live"], false);
    }
    for m in v["models"].as_array().unwrap() {
        for o in m["options"].as_array().unwrap() {
            match o["placement"].as_str().unwrap() {
                "local" => assert!(o.get("board").is_none()),
                _ => assert!(o["board"] == "fast" || o["board"] == "slow", "{o}"),
            }
        }
    }

    // Refusals.
    let bad: Vec<(Value, u16, &str)> = vec![
        (json!({}), 422, "invalid_request"),
        (
            json!({"model": small, "models": [small]}),
            422,
            "invalid_request",
        ),
        (json!({"models": []}), 422, "invalid_request"),
        (
            json!({"model": small, "remote": "fast"}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": small, "remote": "fast", "link_mbps": 0}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": small, "remote": "fast", "link_mbps": -3}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": small, "remote": "fast", "link_mbps": 10, "rtt_ms": -1}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": small, "deadline_ms": 0}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": small, "deadline_ms": 1e300}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": small, "deadline_ms": "soon"}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": small, "by": "speed"}),
            422,
            "invalid_request",
        ),
        (json!({"model": small, "by": "energy"}), 409, "unavailable"),
        (
            json!({"model": small, "threads": 0}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": small, "max_crossing": 3}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": small, "frobnicate": 1}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": small, "remote": "../../etc/passwd", "link_mbps": 10}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": small, "remote": "broken", "link_mbps": 10}),
            422,
            "invalid_request",
        ),
        (
            json!({"model": small, "remote": "nowhere", "link_mbps": 10}),
            404,
            "unknown_board",
        ),
        (
            json!({"model": small, "remote": "http://10.0.0.2:9747", "link_mbps": 10}),
            422,
            "invalid_request",
        ),
        (json!({"model": "0".repeat(64)}), 404, "unknown_model"),
        (
            json!({"model": small, "remote": "fast", "boards": ["slow"], "link_mbps": 1}),
            422,
            "invalid_request",
        ),
    ];
    for (body, status, code) in bad {
        let r = post_json(port, "/v1/plan", &body).unwrap();
        assert_error(&r, status, code);
    }
    let r = super::http::request(
        port,
        "POST",
        "/v1/plan",
        Some("application/json"),
        b"{\"model\": ",
    )
    .unwrap();
    assert_error(&r, 400, "malformed_json");
}

/// `augur plan --remote http://…` asks another daemon for its live per-kernel prediction: each
/// split's remote part is the daemon's kernels after the cut, and an unreachable daemon is one
/// error line.
#[test]
fn the_command_line_asks_a_remote_daemon_for_its_part() {
    let dir = scratch("plan-remote-daemon");
    config(&dir, "", "");
    let d = Daemon::start(&dir, &[]);
    let port = d.port;
    d.wait_ready();
    let here = dir.join("here.json");
    std::fs::write(&here, crate::common::roofline_profile(2.0, 1)).unwrap();
    let model = zoo("squeezenet1_1_224.onnx");
    let plan = |remote: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_augur"))
            .arg("plan")
            .arg(&model)
            .arg("--profile")
            .arg(&here)
            .args(["--remote", remote, "--link-mbps", "100", "--rtt-ms", "5"])
            .args(["--static", "--json"])
            .output()
            .unwrap()
    };
    let out = plan(&format!("http://127.0.0.1:{port}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let options = v["options"].as_array().unwrap();

    // The daemon's own figures, asked directly (the upload above made the model known to it).
    let id = id_of(port, "squeezenet1_1_224.onnx");
    let r = post_json(port, "/v1/predict", &json!({"model": id, "kernels": true})).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json();
    let kernels = p["kernels"].as_array().unwrap();
    for k in kernels {
        let n = k["nodes"].as_array().unwrap();
        assert!(n.len() == 2 && n[0].as_u64() <= n[1].as_u64(), "{k}");
    }
    let whole = remote_parts_are_tails(options, &p);
    assert_eq!(whole["threads"], p["threads"]);
    for o in options.iter().filter(|o| o["placement"] == "local") {
        assert!(o.get("remote_live").is_none(), "{o}");
    }

    // Nothing listens on a port just released: one line, and no panic.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = plan(&format!("http://127.0.0.1:{free}"));
    let (said, err) = one_remote_line(&out);
    assert!(
        said.contains(&format!("127.0.0.1:{free}")) && said.contains("/v1/state"),
        "{err}"
    );
    assert!(!err.contains("panick"), "{err}");
}

/// A remote daemon that wants a bearer token: refused without `--remote-token-file` (one line, the
/// daemon's 401 and its detail), planned with it.
#[test]
fn a_remote_daemon_with_a_token_is_asked_with_it() {
    let (d, token) = with_token("plan-remote-token", "plan-remote-token-0123456789abcdef");
    let dir = d.dir.clone();
    let here = dir.join("here.json");
    std::fs::write(&here, crate::common::roofline_profile(2.0, 1)).unwrap();
    let url = format!("http://127.0.0.1:{}", d.port);
    let plan = |extra: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_augur"))
            .arg("plan")
            .arg(zoo("squeezenet1_1_224.onnx"))
            .arg("--profile")
            .arg(&here)
            .args(["--remote", &url, "--link-mbps", "100", "--static", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = plan(&[]);
    let (said, err) = one_remote_line(&out);
    assert!(said.contains("401"), "{err}");
    let out = plan(&["--remote-token-file".as_ref(), token.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["options"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["placement"] == "split" && o["remote_live"] == true),
        "{v}"
    );
}

/// `--state-from`: `augur predict` and `augur plan` take the live state from this board's daemon
/// (the snapshot its sampler made, not a one-off reading of their own), with its token where it
/// wants one; an unreachable daemon or a missing token is one line naming the flag.
#[test]
fn the_command_line_takes_the_state_from_the_boards_daemon() {
    const TOKEN: &str = "state-from-token-0123456789abcdef";
    let (d, token) = with_token("state-from", TOKEN);
    let dir = d.dir.clone();
    let url = format!("http://127.0.0.1:{}", d.port);
    let here = dir.join("here.json");
    std::fs::write(&here, crate::common::roofline_profile(2.0, 1)).unwrap();
    let cmd = |sub: &str, extra: &[&std::ffi::OsStr]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_augur"));
        c.arg(sub)
            .arg(zoo("squeezenet1_1_224.onnx"))
            .arg("--profile")
            .arg(&here);
        if sub == "plan" {
            c.args(["--threads", "1"]);
        }
        c.args(["--state-from", &url, "--json"]).args(extra);
        c.output().unwrap()
    };
    for sub in ["predict", "plan"] {
        let out = cmd(sub, &[]);
        let (said, err) = one_error_line(&out);
        assert!(
            said.contains("--state-from") && said.contains("401"),
            "{sub}: {err}"
        );
    }
    // The daemon's sampler has run for a while: its snapshot's sequence number is past the few
    // samples a one-off reading takes before it answers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let daemon_seq = |d: &Daemon| -> u64 {
        let mut c = super::http::Conn::open(d.port).unwrap();
        let auth = format!("Bearer {TOKEN}");
        c.write_head("GET", "/v1/state", None, 0, &[("Authorization", &auth)])
            .unwrap();
        c.read_response().unwrap().json()["snapshot"]["seq"]
            .as_u64()
            .unwrap_or(0)
    };
    while daemon_seq(&d) < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon's sampler is not sampling"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let before = daemon_seq(&d);
    let out = cmd(
        "predict",
        &["--state-token-file".as_ref(), token.as_os_str()],
    );
    let after = daemon_seq(&d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let used = v["state"]["seq"].as_u64().unwrap();
    assert!(
        (before..=after).contains(&used),
        "{before} ≤ {used} ≤ {after}: {v}"
    );
    let out = cmd("plan", &["--state-token-file".as_ref(), token.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["options"].as_array().is_some_and(|o| !o.is_empty()),
        "{v}"
    );

    // Nothing listening there: one line, naming the flag and the address.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_augur"))
        .arg("predict")
        .arg(zoo("squeezenet1_1_224.onnx"))
        .arg("--profile")
        .arg(&here)
        .args(["--state-from", &format!("http://127.0.0.1:{free}")])
        .output()
        .unwrap();
    let (said, err) = one_error_line(&out);
    assert!(
        said.contains("--state-from") && said.contains(&free.to_string()),
        "{err}"
    );
    // A quiet board and a daemon's state are two different asks.
    let out = cmd("predict", &["--static".as_ref()]);
    assert!(
        !out.status.success(),
        "--static with --state-from was taken"
    );
}

/// A board the operator names by its daemon's address (`boards/NAME.url`): the daemon asks that
/// daemon for its live per-kernel prediction of the model it exports from its stored graph, and
/// the split options cut where the other daemon's kernels of the original model begin (the export
/// and the other side's import keep the node order). A bad address file is 422, an unreachable
/// daemon 502, a request naming an address itself 422.
#[test]
fn a_daemon_board_is_asked_over_http() {
    let there_dir = scratch("plan-daemon-board-there");
    config(&there_dir, "", "");
    let there = Daemon::start(&there_dir, &[]);
    there.wait_ready();

    let dir = scratch("plan-daemon-board-here");
    config(&dir, "", "");
    let boards = dir.join("state/boards");
    std::fs::create_dir_all(&boards).unwrap();
    std::fs::write(
        boards.join("far.url"),
        format!("# the other board\nhttp://127.0.0.1:{}\n", there.port),
    )
    .unwrap();
    std::fs::write(boards.join("odd.url"), "ftp://nowhere\n").unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        boards.join("gone.url"),
        format!("http://127.0.0.1:{free}\n"),
    )
    .unwrap();
    let d = Daemon::start(&dir, &[]);
    d.wait_ready();
    let id = id_of(d.port, "squeezenet1_1_224.onnx");

    let r = post_json(
        d.port,
        "/v1/plan",
        &json!({"model": id, "boards": ["far"], "link_mbps": 100, "rtt_ms": 5}),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let options = v["models"]
        .as_array()
        .and_then(|m| m.first())
        .map_or(&v["options"], |m| &m["options"])
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .clone();

    // The other daemon's own prediction of the original model, kernel by kernel.
    let theirs = id_of(there.port, "squeezenet1_1_224.onnx");
    let r = post_json(
        there.port,
        "/v1/predict",
        &json!({"model": theirs, "kernels": true}),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json();
    let whole = remote_parts_are_tails(&options, &p);
    assert_eq!(whole["board"], "far", "{whole}");

    let ask = |board: &str| {
        post_json(
            d.port,
            "/v1/plan",
            &json!({"model": id, "boards": [board], "link_mbps": 100}),
        )
        .unwrap()
    };
    assert_error(&ask("odd"), 422, "invalid_request");
    let r = ask("gone");
    assert_error(&r, 502, "remote_board");
    assert!(r.text().contains("/v1/state"), "{}", r.text());
}

/// A failed `augur plan --remote` run: its one line about the remote daemon, and all it printed
/// on stderr.
/// The one error line of a failed command (the profile's warnings about another board aside).
fn one_error_line(out: &std::process::Output) -> (String, String) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let said: Vec<&str> = err.lines().filter(|l| !l.contains("warning:")).collect();
    assert_eq!(said.len(), 1, "{err}");
    (said[0].to_string(), err)
}

fn one_remote_line(out: &std::process::Output) -> (String, String) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("remote daemon"))
        .collect();
    assert_eq!(said.len(), 1, "{err}");
    let line = said[0].to_string();
    (line, err)
}

/// The daemon's plan answers its local options as its predictions are answered: corrected by what
/// the learner learned of the model, so a plan and a prediction of one model agree.
#[test]
fn the_daemons_plan_follows_what_its_learner_learned() {
    let dir = scratch("plan-learned");
    config(&dir, "", "");
    let d = Daemon::start(&dir, &[]);
    let port = d.port;
    d.wait_ready();
    let id = id_of(port, "squeezenet1_1_224.onnx");
    let predicted = |port: u16| {
        let r = post_json(port, "/v1/predict", &json!({"model": id})).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["latency_ms"].as_f64().unwrap()
    };
    let planned = |port: u16| {
        let r = post_json(port, "/v1/plan", &json!({"model": id})).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["options"][0]["local_ms"].as_f64().unwrap()
    };
    let before = predicted(port);
    // The model runs 1.6 times slower than predicted, over and over.
    for _ in 0..30 {
        let ms = 1.6 * before;
        let r = post_json(port, "/v1/observe", &json!({"model": id, "latency_ms": ms})).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let (after, plan) = (predicted(port), planned(port));
    assert!(
        after > 1.2 * before,
        "the learner learned nothing: {before} → {after} ms"
    );
    // The live state moves a little between two calls; the learned factor (≥ 1.2) would not.
    let ratio = plan / after;
    assert!(
        (0.92..1.08).contains(&ratio),
        "plan {plan} ms against prediction {after} ms"
    );
}
