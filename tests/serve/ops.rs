//! Operations: the systemd notify/watchdog protocol against a fake `NOTIFY_SOCKET`, the unit
//! file, and the configuration layers.
use super::daemon::*;
use super::http::{Conn, get};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn systemd_notify_watchdog_and_timeouts() {
    let dir = scratch("notify");
    config(&dir, "request_timeout_ms = 1000", "");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let d = Daemon::start(
        &dir,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let recv = |limit: Duration| -> Vec<(Instant, String)> {
        let t0 = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while t0.elapsed() < limit {
            if let Ok(n) = sock.recv(&mut buf) {
                got.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
        got
    };
    // READY=1 once serving predictions, and not before /ready says so.
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    let ready = loop {
        assert!(t0.elapsed() < Duration::from_secs(30), "no READY=1");
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.lines().any(|l| l == "READY=1") {
                break m;
            }
        }
    };
    assert!(ready.contains("STATUS="), "{ready}");
    assert_eq!(get(d.port, "/ready").unwrap().status, 200);
    // Watchdog pings from the sampling loop, no more often than half of WATCHDOG_USEC.
    let msgs = recv(Duration::from_secs(2));
    let pings: Vec<Instant> = msgs
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    assert!(pings.len() >= 4, "{} pings in 2 s: {msgs:?}", pings.len());
    // Rate limit: at most one ping per 200 ms (counted, since receive times bunch up under load).
    assert!(pings.len() <= 11, "{} pings in 2 s", pings.len());
    // A client that never finishes its body is answered 503 at the time limit.
    let mut c = Conn::open(d.port).unwrap();
    c.write_head("POST", "/v1/predict", Some("application/json"), 100, &[])
        .unwrap();
    c.stream().write_all(b"{\"model\":").unwrap();
    let t = Instant::now();
    let r = c.read_response().unwrap();
    assert_error(&r, 503, "timeout");
    assert!(t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5));
    // STOPPING=1 at SIGTERM.
    d.signal(libc::SIGTERM);
    let msgs = recv(Duration::from_secs(3));
    assert!(
        msgs.iter()
            .any(|(_, m)| m.lines().any(|l| l == "STOPPING=1")),
        "{msgs:?}"
    );
    assert!(d.terminate(Duration::from_secs(10)).success());
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let unit = std::fs::read_to_string(Path::new(ROOT).join("systemd/augur.service")).unwrap();
    for directive in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=augur",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "AmbientCapabilities=CAP_PERFMON",
        "ExecStart=/usr/local/bin/augur serve",
        "LimitNOFILE=65536",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(directive)),
            "unit lacks {directive}"
        );
    }
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: verification skipped");
        return;
    };
    assert!(out.status.success());
    let dir = scratch("unit");
    let path = dir.join("augur.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/augur", env!("CARGO_BIN_EXE_augur")),
    )
    .unwrap();
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(v.status.success(), "{msg}");
    assert!(
        !msg.contains("augur.service"),
        "systemd-analyze verify: {msg}"
    );
}

#[test]
fn configuration_layers_file_env_flags() {
    let dir = scratch("config");
    let cfg = config(&dir, "max_batch = 5", "");
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_augur"));
        c.args(["serve", "--print-config", "--config"])
            .arg(&cfg)
            .args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = run(&[], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("max_batch = 5") && text.contains("listen = \"127.0.0.1:0\""),
        "{text}"
    );
    let out = run(
        &[
            ("AUGUR_LIMITS_MAX_BATCH", "6"),
            ("AUGUR_LISTEN", "127.0.0.1:9999"),
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("max_batch = 6") && text.contains("127.0.0.1:9999"),
        "{text}"
    );
    let out = run(
        &[("AUGUR_LIMITS_MAX_BATCH", "6")],
        &["--set", "limits.max_batch=7", "--listen", "127.0.0.1:1"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("max_batch = 7") && text.contains("127.0.0.1:1\""),
        "{text}"
    );
    let out = run(&[], &["--set", "limits.max_btach=7"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.max_btach"));
    let out = run(&[("AUGUR_SENSE_SAMPLE_HZ", "fast")], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AUGUR_SENSE_SAMPLE_HZ"));
}
