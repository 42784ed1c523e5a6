//! The daemon against abuse: slow and idle clients, too many connections, stalled bodies, a full
//! or unwritable state directory, damaged state files, floods of observations and absurd numbers.
use super::daemon::*;
use super::http::{Conn, get, post_json, request};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How the server ends `s` within `limit` (an answer it sends first, such as a 408, is read and
/// skipped): `Some(Ok(()))` for an orderly close (a read returns 0 at its FIN), `Some(Err(kind))`
/// for the read that failed (`ConnectionReset` at an RST), `None` while it stays open.
fn ending(s: &mut TcpStream, limit: Duration) -> Option<Result<(), std::io::ErrorKind>> {
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < limit {
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        match s.read(&mut buf) {
            Ok(0) => return Some(Ok(())),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Some(Err(e.kind())),
        }
    }
    None
}

/// Whether the server closes `s` within `limit`, in order or with a reset.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    ending(s, limit).is_some()
}

fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).unwrap()
}

/// `n` connections opened one after another, each given time to be accepted before the next: the
/// daemon's two accept loops may take connections that arrive together in either order, and
/// "oldest" is the one accepted first.
fn connect_in_order(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let s = connect(port);
            std::thread::sleep(Duration::from_millis(100));
            s
        })
        .collect()
}

#[test]
fn slow_and_idle_connections_are_closed() {
    let dir = scratch("timeouts");
    config(&dir, "header_timeout_ms = 1000\nbody_timeout_ms = 500", "");
    let d = Daemon::start(&dir, &[]);
    d.wait_ready();
    let limit = Duration::from_secs(4);
    // A connection that never sends a byte.
    let mut silent = connect(d.port);
    // Half-sent headers (slowloris).
    let mut slow = connect(d.port);
    slow.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // An idle keep-alive connection after one answer.
    let mut idle = Conn::open(d.port).unwrap();
    assert_eq!(idle.send("GET", "/live", None, b"").unwrap().status, 200);
    // Closed unserved, with a reset rather than a FIN.
    assert_eq!(
        ending(&mut silent, limit),
        Some(Err(std::io::ErrorKind::ConnectionReset)),
        "silent connection kept, or closed in order"
    );
    assert!(closed_within(&mut slow, limit), "half-sent headers kept");
    assert!(closed_within(idle.stream(), limit), "idle keep-alive kept");
    // A body that stalls is cut off by the body timeout, long before the request time limit.
    let mut c = Conn::open(d.port).unwrap();
    c.write_head("POST", "/v1/predict", Some("application/json"), 100, &[])
        .unwrap();
    c.stream().write_all(b"{\"model\":").unwrap();
    let t = Instant::now();
    let r = c.read_response().unwrap();
    assert_error(&r, 408, "body_timeout");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Still serving.
    assert_eq!(get(d.port, "/live").unwrap().status, 200);
}

/// A daemon capped at 4 connections, whose header timeout (a minute) never closes one during a
/// test: what closes them is the cap.
fn capped(name: &str) -> Daemon {
    let dir = scratch(name);
    config(&dir, "max_connections = 4\nheader_timeout_ms = 60000", "");
    let d = Daemon::start(&dir, &[]);
    d.wait_ready();
    d
}

/// A fresh client's `GET /live` at the cap answers 200 within `limit`.
fn fresh_client_gets_in(port: u16, limit: Duration) {
    let t = Instant::now();
    let r = get(port, "/live").unwrap();
    assert_eq!(r.status, 200);
    assert!(t.elapsed() < limit, "{:?}", t.elapsed());
}

#[test]
fn at_the_connection_cap_the_oldest_connection_makes_room() {
    let d = capped("conncap");
    let mut held = connect_in_order(d.port, 4);
    std::thread::sleep(Duration::from_millis(300));
    fresh_client_gets_in(d.port, Duration::from_secs(3));
    assert!(
        closed_within(&mut held[0], Duration::from_secs(3)),
        "the oldest idle connection was not asked to close"
    );
    assert!(
        !closed_within(&mut held[3], Duration::from_millis(300)),
        "the newest connection was closed instead"
    );
}

#[test]
fn at_the_cap_slow_clients_make_room_at_once() {
    // Every slot held by a client trickling a request's head: each is closed when a fresh client
    // needs its slot, not at the header timeout (a minute here), which is what they held out for
    // before.
    let d = capped("conncap-slow");
    let mut held = connect_in_order(d.port, 4);
    for s in &mut held {
        s.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n").unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    fresh_client_gets_in(d.port, Duration::from_secs(10));
    assert!(
        closed_within(&mut held[0], Duration::from_secs(3)),
        "the oldest slow connection was not closed"
    );
    // Still serving.
    assert_eq!(get(d.port, "/live").unwrap().status, 200);
}

#[test]
fn at_the_cap_silent_connections_make_room_before_served_ones() {
    // Clients that were served keep their connections for the next request; connections that
    // never sent a byte are what a flood is made of, and they make room first.
    let d = capped("conncap-silent");
    let mut served: Vec<Conn> = (0..2)
        .map(|_| {
            let mut c = Conn::open(d.port).unwrap();
            assert_eq!(c.send("GET", "/live", None, b"").unwrap().status, 200);
            c
        })
        .collect();
    let mut silent: Vec<TcpStream> = (0..2).map(|_| connect(d.port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    fresh_client_gets_in(d.port, Duration::from_secs(3));
    assert!(
        closed_within(&mut silent[0], Duration::from_secs(3)),
        "the oldest silent connection was not closed"
    );
    for (i, c) in served.iter_mut().enumerate() {
        assert!(
            !closed_within(c.stream(), Duration::from_millis(300)),
            "served connection {i} was closed instead"
        );
    }
    // The served connections still answer, and a silent one that speaks at last is served.
    for c in &mut served {
        c.stream()
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(c.send("GET", "/live", None, b"").unwrap().status, 200);
    }
    let late = &mut silent[1];
    late.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    late.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut answer = Vec::new();
    late.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn silent_connections_closed_unserved_are_reset_served_ones_close_in_order() {
    // A connection the daemon closes without ever serving it is reset (SO_LINGER zero): its socket
    // is freed at once, with no FIN_WAIT or TIME_WAIT state under a flood of idle reconnects. A
    // served keep-alive connection made to close still gets its FIN.
    let d = capped("conncap-reset");
    let mut first = Conn::open(d.port).unwrap();
    assert_eq!(first.send("GET", "/live", None, b"").unwrap().status, 200);
    let mut silent = connect(d.port);
    let mut others: Vec<Conn> = (0..2)
        .map(|_| {
            let mut c = Conn::open(d.port).unwrap();
            assert_eq!(c.send("GET", "/live", None, b"").unwrap().status, 200);
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // At the cap, the silent connection makes room first.
    fresh_client_gets_in(d.port, Duration::from_secs(3));
    assert_eq!(
        ending(&mut silent, Duration::from_secs(3)),
        Some(Err(std::io::ErrorKind::ConnectionReset)),
        "the evicted silent connection was not reset"
    );
    // With the room empty and the cap full of served connections, the oldest served one makes
    // room, in order.
    std::thread::sleep(Duration::from_millis(300));
    let mut last = Conn::open(d.port).unwrap();
    assert_eq!(last.send("GET", "/live", None, b"").unwrap().status, 200);
    others.push(last);
    fresh_client_gets_in(d.port, Duration::from_secs(3));
    assert_eq!(
        ending(first.stream(), Duration::from_secs(3)),
        Some(Ok(())),
        "the evicted served connection was not closed in order"
    );
}

#[test]
fn a_never_ending_upload_does_not_hold_the_import_slot() {
    let dir = scratch("slot");
    config(
        &dir,
        "concurrent_imports = 1\nrequest_timeout_ms = 20000\nbody_timeout_ms = 20000",
        "",
    );
    let d = Daemon::start(&dir, &[]);
    d.wait_ready();
    let mut endless = Conn::open(d.port).unwrap();
    let head = "POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    endless.stream().write_all(head.as_bytes()).unwrap();
    endless
        .stream()
        .write_all(b"4\r\n\x08\x07\x12\x00\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let r = post_model(d.port, &zoo("squeezenet1_1_224.onnx"));
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn uploads_are_answered_only_once_on_disk() {
    let dir = scratch("durable");
    config(&dir, "", "");
    let d = Daemon::start(&dir, &[]);
    d.wait_ready();
    let (models, aside) = (dir.join("state/models"), dir.join("state/models-aside"));
    // An unwritable store: 503, nothing cached, no path in the answer.
    std::fs::rename(&models, &aside).unwrap();
    std::fs::write(&models, b"not a directory").unwrap();
    let r = post_model(d.port, &zoo("squeezenet1_1_224.onnx"));
    assert_error(&r, 503, "store_unavailable");
    assert!(!r.text().contains(dir.to_str().unwrap()), "{}", r.text());
    std::fs::remove_file(&models).unwrap();
    std::fs::rename(&aside, &models).unwrap();
    // A read-only store (where a bind mount may be made): reads work, the write fails.
    if remount_read_only(&models) {
        let r = post_model(d.port, &zoo("squeezenet1_1_224.onnx"));
        let _ = Command::new("umount").arg(&models).status();
        assert_error(&r, 503, "store_unavailable");
    }
    let r = post_model(d.port, &zoo("squeezenet1_1_224.onnx"));
    assert_eq!(r.status, 201, "nothing was cached: {}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();

    // A full disk: 507, and no temporary file left behind.
    if mount_tmpfs(&models, "4k") {
        let r = post_model(d.port, &zoo("mobilenet_v2_224.onnx"));
        // Names only: an entry would hold the directory open, and the unmount would fail.
        let left: Vec<String> = std::fs::read_dir(&models)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let _ = Command::new("umount").arg(&models).status();
        assert_error(&r, 507, "insufficient_storage");
        assert!(left.is_empty(), "left on the full disk: {left:?}");
        let id = r.json()["id"].as_str().map(str::to_string);
        assert!(id.is_none());
    } else {
        eprintln!("cannot mount a tmpfs (needs root): the full-disk case is left to the unit test");
    }

    // Private files.
    let o = post_json(
        d.port,
        "/v1/observe",
        &json!({"model": id, "latency_ms": 5.0}),
    )
    .unwrap();
    assert_eq!(o.status, 200, "{}", o.text());
    assert!(d.terminate(Duration::from_secs(20)).success());
    assert_eq!(mode(&dir.join("state")), 0o700);
    assert_eq!(mode(&models), 0o700);
    for f in [
        format!("state/models/{id}.json"),
        "state/observations.jsonl".into(),
        "state/learner.json".into(),
    ] {
        assert_eq!(mode(&dir.join(&f)), 0o600, "{f}");
    }
}

/// Bind-mounts `dir` on itself read-only, if this process may.
fn remount_read_only(dir: &Path) -> bool {
    let ok = |args: &[&str]| {
        Command::new("mount")
            .args(args)
            .arg(dir)
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(&["--bind"]) {
        return false;
    }
    let ro = Command::new("mount")
        .args(["-o", "remount,ro,bind"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ro {
        let _ = Command::new("umount").arg(dir).status();
    }
    ro
}

/// Mounts a tmpfs of `size` on `dir`, if this process may.
fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn damaged_and_older_model_files_are_replaced_by_a_re_post() {
    let dir = scratch("damaged");
    config(&dir, "", "");
    let d = Daemon::start(&dir, &[]);
    d.wait_ready();
    let model = zoo("squeezenet1_1_224.onnx");
    let id = post_model(d.port, &model).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(d.terminate(Duration::from_secs(20)).success());
    let file = dir.join(format!("state/models/{id}.json"));
    let whole = std::fs::read(&file).unwrap();
    for (what, bytes) in [
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("older", br#"{"format_version": 0, "graph": {}}"#.to_vec()),
    ] {
        std::fs::write(&file, &bytes).unwrap();
        let d = Daemon::start(&dir, &[]);
        d.wait_ready();
        let p = post_json(d.port, "/v1/predict", &json!({"model": id})).unwrap();
        assert_error(&p, 404, "unknown_model");
        let r = post_model(d.port, &model);
        assert_eq!(r.status, 201, "{what}: {}", r.text());
        let p = post_json(d.port, "/v1/predict", &json!({"model": id})).unwrap();
        assert_eq!(p.status, 200, "{what}: {}", p.text());
        assert!(d.terminate(Duration::from_secs(20)).success());
        let parsed = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
        assert_eq!(
            parsed(&std::fs::read(&file).unwrap()),
            parsed(&whole),
            "{what}: replaced"
        );
    }
    assert!(
        dir.join(format!("state/models/{id}.json.damaged"))
            .is_file()
    );
    let log = read(&dir, "stderr.log");
    assert!(log.contains("damaged stored model"), "{log}");
}

#[test]
fn observations_are_bounded_in_size_and_rate() {
    let dir = scratch("observe-limits");
    config(
        &dir,
        "observe_body_bytes = 4096\nobservations_per_second = 5.0",
        "",
    );
    let d = Daemon::start(&dir, &[]);
    d.wait_ready();
    let id = post_model(d.port, &zoo("squeezenet1_1_224.onnx")).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let big = json!({"model": id, "latency_ms": 5.0, "kernels": (0..200)
        .map(|i| json!({"name": format!("kernel-{i}"), "latency_ms": 0.1}))
        .collect::<Vec<_>>()});
    assert_error(
        &post_json(d.port, "/v1/observe", &big).unwrap(),
        413,
        "body_too_large",
    );
    let t0 = Instant::now();
    let answers: Vec<_> = (0..20)
        .map(|_| {
            post_json(
                d.port,
                "/v1/observe",
                &json!({"model": id, "latency_ms": 5.0}),
            )
            .unwrap()
        })
        .collect();
    // A burst of 5, then 5 per second.
    let most = 5 + (t0.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    let accepted = answers.iter().filter(|r| r.status == 200).count();
    assert!(
        (5..=most).contains(&accepted),
        "{accepted} accepted, at most {most}"
    );
    let refused = answers
        .iter()
        .find(|r| r.status != 200)
        .expect("some refused");
    assert_error(refused, 429, "rate_limited");
    assert_eq!(refused.header("retry-after"), Some("1"));
}

#[test]
fn every_number_is_validated() {
    let dir = scratch("numbers");
    config(&dir, "", "");
    let d = Daemon::start(&dir, &[]);
    d.wait_ready();
    let port = d.port;
    let id = post_model(port, &zoo("squeezenet1_1_224.onnx")).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for state in [
        json!({"utilization": {"busy": {"mean": 1e308}}}),
        json!({"utilization": {"busy": {"mean": -0.5}}}),
        json!({"cpus": [{"cpu": 0, "frequency_hertz": -1e9}]}),
        json!({"probe": {"memory_bandwidth_bytes_per_second": {"ewma": 1e300}}}),
        json!({"extra_busy_cores": -2}),
    ] {
        let r = post_json(port, "/v1/predict", &json!({"model": id, "state": state})).unwrap();
        assert_error(&r, 422, "invalid_request");
    }
    for ms in [5e-324, 1e-12, 1e12] {
        let r = post_json(port, "/v1/observe", &json!({"model": id, "latency_ms": ms})).unwrap();
        assert_error(&r, 422, "invalid_observation");
    }
    let r = request(
        port,
        "POST",
        "/v1/models?input_shape=1,3,100000,100000",
        Some("application/octet-stream"),
        b"\x08\x07",
    )
    .unwrap();
    assert_error(&r, 422, "invalid_request");
    let ok = post_json(
        port,
        "/v1/observe",
        &json!({"model": id, "latency_ms": 1e-5}),
    )
    .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    let text = get(port, "/metrics").unwrap().text();
    let sum = text
        .lines()
        .find_map(|l| l.strip_prefix("augur_observation_error_ratio_sum "))
        .unwrap_or_else(|| panic!("no error-ratio sum in {text}"));
    assert!(sum.trim().parse::<f64>().unwrap().is_finite(), "sum {sum}");
}

#[test]
fn json_model_bodies_have_their_own_limit() {
    let dir = scratch("ir-limit");
    config(&dir, "ir_body_bytes = 1024", "");
    let d = Daemon::start(&dir, &[]);
    d.wait_ready();
    let ir = format!("{{\"padding\": \"{}\"}}", " ".repeat(2048));
    let r = request(
        d.port,
        "POST",
        "/v1/models",
        Some("application/json"),
        ir.as_bytes(),
    )
    .unwrap();
    assert_error(&r, 413, "body_too_large");
    // An ONNX body of that size is still read (and refused for what it is).
    let r = request(
        d.port,
        "POST",
        "/v1/models",
        Some("application/octet-stream"),
        ir.as_bytes(),
    )
    .unwrap();
    assert_error(&r, 422, "unparsable_model");
}
