//! `/metrics` of a running `augur serve` follows Prometheus's naming rules, checked here without
//! Prometheus (scripts/prometheus-check.sh runs the real promtool and server): every family has
//! HELP and TYPE, counters and only counters end in `_total`, no family repeats another's figure,
//! and rates are in base units. Where promtool is installed, `promtool check metrics` must also
//! report nothing.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_augur"))
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--profile")
        .arg(dir.path().join("no-profile.json"))
        .env("AUGUR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let d = Daemon {
        child,
        addr,
        _dir: dir,
    };
    let t0 = Instant::now();
    while request(&d.addr, "GET", "/ready", None).0 != 200 {
        assert!(t0.elapsed() < Duration::from_secs(90), "not ready in 90 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    d
}

/// One HTTP/1.1 request on its own connection: (status, body).
fn request(addr: &str, method: &str, path: &str, json: Option<&[u8]>) -> (u16, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, Vec::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = json.unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if json.is_some() {
        head += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    head += "\r\n";
    if s.write_all(head.as_bytes()).is_err() || s.write_all(body).is_err() {
        return (0, Vec::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, Vec::new());
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// The daemon after some of everything: an import, predictions, observations, a bad request.
fn exercised() -> (Daemon, String) {
    let d = start();
    let model = std::fs::read("tests/fixtures/nnmeter/conv_bn_relu.json").unwrap();
    let (status, body) = request(&d.addr, "POST", "/v1/models", Some(&model));
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    for ms in [0.5, 1.0, 50.0] {
        let p = format!(r#"{{"model":"{id}"}}"#);
        assert_eq!(
            request(&d.addr, "POST", "/v1/predict", Some(p.as_bytes())).0,
            200
        );
        let o = format!(r#"{{"model":"{id}","latency_ms":{ms}}}"#);
        assert_eq!(
            request(&d.addr, "POST", "/v1/observe", Some(o.as_bytes())).0,
            200
        );
    }
    assert_eq!(request(&d.addr, "POST", "/v1/predict", Some(b"{")).0, 400);
    assert_eq!(
        request(&d.addr, "GET", &format!("/v1/models/{id}"), None).0,
        200
    );
    let (status, body) = request(&d.addr, "GET", "/metrics", None);
    assert_eq!(status, 200);
    (d, String::from_utf8(body).unwrap())
}

#[derive(Debug, Default)]
struct Family {
    help: bool,
    kind: Option<String>,
}

fn entry<'a>(out: &'a mut Vec<(String, Family)>, name: &str) -> &'a mut Family {
    let i = match out.iter().position(|(n, _)| n == name) {
        Some(i) => i,
        None => {
            out.push((name.to_string(), Family::default()));
            out.len() - 1
        }
    };
    &mut out[i].1
}

fn families(text: &str) -> Vec<(String, Family)> {
    let mut out: Vec<(String, Family)> = Vec::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next(), w.next()) {
            (Some("#"), Some("HELP"), Some(name), Some(_)) => entry(&mut out, name).help = true,
            (Some("#"), Some("TYPE"), Some(name), Some(kind)) => {
                entry(&mut out, name).kind = Some(kind.to_string())
            }
            _ => {}
        }
    }
    out
}

#[test]
fn metrics_follow_prometheus_naming_and_promtool_finds_nothing() {
    let (_d, text) = exercised();
    let fams = families(&text);
    assert!(fams.len() >= 30, "{} families:\n{text}", fams.len());
    let mut problems = Vec::new();
    for (name, f) in &fams {
        let kind = f.kind.as_deref().unwrap_or("untyped");
        if !f.help {
            problems.push(format!("{name}: no HELP"));
        }
        if f.kind.is_none() {
            problems.push(format!("{name}: no TYPE"));
        }
        if !name.starts_with("augur_") {
            problems.push(format!("{name}: not prefixed augur_"));
        }
        match (kind, name.ends_with("_total")) {
            ("counter", false) => problems.push(format!("{name}: a counter without _total")),
            ("gauge" | "histogram" | "summary", true) => {
                problems.push(format!("{name}: a {kind} named _total"))
            }
            _ => {}
        }
        // Base units: seconds, bytes, hertz, ratios; FLOP/s spelled out, never `flops`.
        for bad in [
            "_flops",
            "_milliseconds",
            "_ms",
            "_kilobytes",
            "_megabytes",
            "_percent",
        ] {
            if name.ends_with(bad) || name.contains(&format!("{bad}_")) {
                problems.push(format!("{name}: not in base units ({bad})"));
            }
        }
    }
    for (dup, of) in [(
        "augur_model_cache_hits_total",
        "augur_model_cache_requests_total{result=\"hit\"}",
    )] {
        if fams.iter().any(|(n, _)| n == dup) {
            problems.push(format!("{dup} repeats {of}"));
        }
    }
    for grows in [
        "augur_learner_observations_total",
        "augur_learner_rejected_total",
    ] {
        let kind = fams
            .iter()
            .find(|(n, _)| n == grows)
            .and_then(|(_, f)| f.kind.clone());
        if kind.as_deref() != Some("counter") {
            problems.push(format!(
                "{grows}: only grows, must be a counter (is {kind:?})"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // The real linter, where installed (CI installs it: scripts/prometheus-check.sh).
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut p) => {
            p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = p.wait_with_output().unwrap();
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && said.trim().is_empty(),
                "promtool check metrics:\n{said}"
            );
        }
        Err(e) => eprintln!("promtool not installed ({e}); scripts/prometheus-check.sh runs it"),
    }
}
