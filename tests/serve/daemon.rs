//! The test daemon: the real binary on port 0 (loopback only) with a scratch configuration and
//! state directory, and the helpers the serve tests share.
use super::http::{self, get, request};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A zoo model by file name (`mobilenet_v2_224.onnx`), from the repository's zoo.
pub fn zoo(name: &str) -> PathBuf {
    crate::common::zoo_model(name)
}

/// A scratch directory for one test, removed when the test process exits.
pub fn scratch(name: &str) -> PathBuf {
    crate::common::process_scratch(name)
}

/// The configuration every test daemon starts from; `extra` is appended (later keys win in
/// sections it reopens, so it only adds keys the base does not set).
pub fn config(dir: &Path, limits: &str, extra: &str) -> PathBuf {
    let p = dir.join("augur.toml");
    let text = format!(
        r#"listen = "127.0.0.1:0"
profile = "{dir}/no-profile.json"
state_dir = "{dir}/state"
{extra}
[limits]
{limits}
[sense]
sample_hz = 20.0
"#,
        dir = dir.display()
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// A daemon that wants `token` as its bearer token (`[auth] token_file`), started and ready, in
/// a scratch directory of its own; with the token file's path, for the clients that send it.
pub fn with_token(name: &str, token: &str) -> (Daemon, PathBuf) {
    let dir = scratch(name);
    let file = dir.join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    config(
        &dir,
        "",
        &format!("[auth]\ntoken_file = \"{}\"", file.display()),
    );
    let d = Daemon::start(&dir, &[]);
    d.wait_ready();
    (d, file)
}

pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Daemon {
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_augur"));
        cmd.arg("serve")
            .arg("--config")
            .arg(dir.join("augur.toml"))
            .env("AUGUR_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("stderr.log"))
                    .unwrap(),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn augur serve");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            // Keep draining so the daemon never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no listening line; stderr: {}", read(dir, "stderr.log")));
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Daemon {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    pub fn wait_ready(&self) {
        let t0 = Instant::now();
        loop {
            if let Ok(r) = get(self.port, "/ready")
                && r.status == 200
            {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "not ready after 60 s; stderr: {}",
                read(&self.dir, "stderr.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }

    /// SIGTERM, then the exit status (within `limit`).
    pub fn terminate(mut self, limit: Duration) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                t0.elapsed() < limit,
                "still running {limit:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_default()
}

pub fn post_model(port: u16, path: &Path) -> http::Response {
    let bytes = std::fs::read(path).unwrap();
    request(
        port,
        "POST",
        "/v1/models",
        Some("application/octet-stream"),
        &bytes,
    )
    .unwrap()
}

pub fn assert_error(r: &http::Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"], code, "{v}");
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    assert_eq!(r.header("content-type"), Some("application/json"));
}

/// The (METHOD, path) operations of the OpenAPI document, read by indentation.
pub fn operations(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut in_paths, mut path) = (false, String::new());
    for line in doc.lines().filter(|l| !l.trim().is_empty()) {
        let indent = line.len() - line.trim_start().len();
        let key = line.trim().strip_suffix(':');
        match (indent, key) {
            (0, k) => in_paths = k == Some("paths"),
            (2, Some(p)) if in_paths => path = p.to_string(),
            (4, Some(m)) if in_paths && ["get", "post"].contains(&m) => {
                out.push((m.to_uppercase(), path.clone()))
            }
            _ => {}
        }
    }
    out
}

/// A tiny nn-Meter IR graph: input → 3×3 conv → ReLU.
pub const NNMETER: &str = r#"{
 "input": {"inbounds": [], "outbounds": ["conv/Conv2D"], "attr": {"name": "input", "type": "Placeholder",
   "output_shape": [[1, 16, 16, 3]], "attr": {"shape": [1, 16, 16, 3]}}},
 "conv/Conv2D": {"inbounds": ["input"], "outbounds": ["relu/Relu"], "attr": {"name": "conv/Conv2D", "type": "Conv2D",
   "input_shape": [[1, 16, 16, 3]], "output_shape": [[1, 16, 16, 8]],
   "attr": {"padding": "SAME", "strides": [1, 1], "kernel_shape": [3, 3], "weight_shape": [3, 3, 3, 8]}}},
 "relu/Relu": {"inbounds": ["conv/Conv2D"], "outbounds": [], "attr": {"name": "relu/Relu", "type": "Relu",
   "input_shape": [[1, 16, 16, 8]], "output_shape": [[1, 16, 16, 8]], "attr": {}}}
}"#;

/// An ONNX model whose only node is an operator no runtime has (protobuf written by hand:
/// ModelProto.graph(7) → GraphProto.node(1) → NodeProto.op_type(4)).
pub fn onnx_with_unknown_op() -> Vec<u8> {
    let op = b"NoSuchOperator";
    let mut node = vec![0x22, op.len() as u8];
    node.extend_from_slice(op);
    let mut graph = vec![0x0a, node.len() as u8];
    graph.extend(node);
    let mut model = vec![0x3a, graph.len() as u8];
    model.extend(graph);
    model
}

/// The value of an unlabelled metric in a scrape (0 when absent).
pub fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Every metric a dashboard query names is exported: seen in this scrape, or (for sensors a VM
/// lacks, like temperatures and power rails) one the sensing module records.
pub fn check_dashboard(scrape: &str) {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("dashboards/augur.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if (k == "expr" || k == "query" || k == "definition") && v.is_string() {
                        out.push(v.as_str().unwrap_or_default().to_string());
                    } else {
                        walk(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dash, &mut exprs);
    assert!(exprs.len() > 20);
    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let sense_src = std::fs::read_to_string(Path::new(ROOT).join("src/sense/metrics.rs")).unwrap();
    let mut missing = Vec::new();
    for e in &exprs {
        let bytes = e.as_bytes();
        let mut i = 0;
        while let Some(off) = e[i..].find("augur_") {
            let start = i + off;
            let end = start
                + e[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(e.len() - start);
            let name = &e[start..end];
            let preceded =
                start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            if !preceded && !exported.contains(name) && !sense_src.contains(&format!("\"{name}\""))
            {
                missing.push(name.to_string());
            }
            i = end;
        }
    }
    assert!(
        missing.is_empty(),
        "dashboard queries metrics that are not exported: {missing:?}"
    );
}
