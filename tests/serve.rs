//! End-to-end tests of `augur serve`: the real binary on port 0 (loopback only), every route and
//! every error status, restart and `kill -9` recovery of the state directory, the systemd
//! notify/watchdog protocol against a fake `NOTIFY_SOCKET`, the unit file, and the Grafana
//! dashboard against the metrics actually exported.
//!
//! These tests talk HTTP to a child process and do not link the library, so they build fast.
mod common;
#[path = "serve/http.rs"]
mod http;

use http::{Conn, get, post_json, request};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A zoo model by file name (`mobilenet_v2_224.onnx`).
fn zoo(name: &str) -> PathBuf {
    common::zoo_model(name)
}

/// The configuration every test daemon starts from; `extra` is appended (later keys win in
/// sections it reopens, so it only adds keys the base does not set).
fn config(dir: &Path, limits: &str, extra: &str) -> PathBuf {
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

struct Daemon {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, env: &[(&str, &str)]) -> Daemon {
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

    fn wait_ready(&self) {
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

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }

    /// SIGTERM, then the exit status (within `limit`).
    fn terminate(mut self, limit: Duration) -> std::process::ExitStatus {
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

    fn kill9(mut self) {
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

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_default()
}

fn post_model(port: u16, path: &Path) -> http::Response {
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

fn assert_error(r: &http::Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"], code, "{v}");
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    assert_eq!(r.header("content-type"), Some("application/json"));
}

/// The (METHOD, path) operations of the OpenAPI document, read by indentation.
fn operations(doc: &str) -> Vec<(String, String)> {
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
const NNMETER: &str = r#"{
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
fn onnx_with_unknown_op() -> Vec<u8> {
    let op = b"NoSuchOperator";
    let mut node = vec![0x22, op.len() as u8];
    node.extend_from_slice(op);
    let mut graph = vec![0x0a, node.len() as u8];
    graph.extend(node);
    let mut model = vec![0x3a, graph.len() as u8];
    model.extend(graph);
    model
}

#[test]
fn every_route_and_every_error_status() {
    let tmp = common::scratch("routes");
    let dir = tmp.path().to_path_buf();
    config(
        &dir,
        "json_body_bytes = 65536\nmodel_body_bytes = 134217728\nmax_batch = 200\nmax_graph_nodes = 300",
        "",
    );
    let d = Daemon::start(&dir, &[]);
    let port = d.port;

    // Readiness is a latch: 503 while the roofline probe runs and the sensors start, then 200.
    let first = get(port, "/ready").unwrap();
    assert_error(&first, 503, "not_ready");
    assert_eq!(get(port, "/live").unwrap().status, 200);
    d.wait_ready();
    let ready = get(port, "/ready").unwrap().json();
    assert_eq!(ready["calibrated"], false, "no profile: uncalibrated");

    // Models: import, import again (cached), read back.
    let r = post_model(port, &zoo("mobilenet_v2_224.onnx"));
    assert_eq!(r.status, 201, "{}", r.text());
    let m = r.json();
    let id = m["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);
    assert!(m["kernels"].as_u64().unwrap() > 10 && m["macs"].as_u64().unwrap() > 100_000_000);
    assert!(m["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/models/{id}").as_str())
    );
    let again = post_model(port, &zoo("mobilenet_v2_224.onnx"));
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["id"], id.as_str());
    let got = get(port, &format!("/v1/models/{id}")).unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["kernels"], m["kernels"]);
    let squeeze = post_model(port, &zoo("squeezenet1_1_224.onnx")).json()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // nn-Meter IR as JSON reaches its importer.
    let ir = request(
        port,
        "POST",
        "/v1/models",
        Some("application/json"),
        NNMETER.as_bytes(),
    )
    .unwrap();
    match ir.status {
        201 => assert!(ir.json()["kernels"].as_u64().unwrap() >= 1),
        _ => assert_error(&ir, 422, "unparsable_model"),
    }

    // Predictions.
    let p = post_json(port, "/v1/predict", &json!({"model": id})).unwrap();
    assert_eq!(p.status, 200, "{}", p.text());
    let p = p.json();
    let lat = p["latency_ms"].as_f64().unwrap();
    let [lo, hi] = [
        p["interval_ms"][0].as_f64().unwrap(),
        p["interval_ms"][1].as_f64().unwrap(),
    ];
    assert!(lat > 0.0 && lo <= lat && lat <= hi, "{p}");
    assert_eq!(p["calibrated"], false);
    assert_eq!(p["peak_memory_bytes"], m["peak_memory_bytes"]);
    assert_eq!(p["state"]["source"], "live");
    assert!(p["state"]["seq"].as_u64().unwrap() >= 1);
    assert!(p.get("kernels").is_none());
    let pk = post_json(port, "/v1/predict", &json!({"model": id, "kernels": true}))
        .unwrap()
        .json();
    assert_eq!(
        pk["kernels"].as_array().unwrap().len() as u64,
        m["kernels"].as_u64().unwrap()
    );

    // What-if: the busier the board, the slower; the state is marked as not the live one.
    let at = |state: Value, threads: u64| {
        let r = post_json(
            port,
            "/v1/predict",
            &json!({"model": id, "threads": threads, "state": state}),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let quiet = at(json!({"others_busy": 0.0}), 2);
    let busy = at(json!({"others_busy": 1.0}), 2);
    let one_core = at(json!({"extra_busy_cores": 1}), 2);
    assert_eq!(busy["state"]["source"], "what_if");
    assert!(busy["latency_ms"].as_f64().unwrap() > quiet["latency_ms"].as_f64().unwrap());
    assert!(one_core["slowdown"].as_f64().unwrap() >= 1.0);
    let deep = at(
        json!({"utilization": {"busy": {"mean": 1.0}}, "own_cpu": {"mean": 0.0}}),
        2,
    );
    assert_eq!(deep["latency_ms"], busy["latency_ms"]);

    // Batch: several models and variants; an unknown item fails alone.
    let b = post_json(
        port,
        "/v1/predict",
        &json!({"batch": [
            {"model": id}, {"model": squeeze, "threads": 2},
            {"model": id, "state": {"others_busy": 1.0}, "threads": 2},
            {"model": "0".repeat(64)}
        ]}),
    )
    .unwrap();
    assert_eq!(b.status, 200, "{}", b.text());
    let res = b.json()["results"].as_array().unwrap().clone();
    assert_eq!(res.len(), 4);
    assert_eq!(res[0]["model"], id.as_str());
    assert_eq!(res[1]["model"], squeeze.as_str());
    assert_eq!(res[2]["latency_ms"], busy["latency_ms"]);
    assert_eq!(res[3]["status"], 404);
    assert_eq!(res[3]["error"], "unknown_model");

    // Observations.
    let o = post_json(
        port,
        "/v1/observe",
        &json!({"model": id, "latency_ms": 12.5}),
    )
    .unwrap();
    assert_eq!(o.status, 200, "{}", o.text());
    assert_eq!(o.json()["seq"], 1);
    let kname = pk["kernels"][0]["name"].as_str().unwrap();
    let ok = post_json(
        port,
        "/v1/observe",
        &json!({"model": id, "latency_ms": 11.0, "threads": 1, "kernels": [{"name": kname, "latency_ms": 0.5}]}),
    )
    .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());

    // State.
    let s = get(port, "/v1/state").unwrap().json();
    assert_eq!(s["ready"], true);
    assert!(s["snapshot"]["seq"].as_u64().unwrap() >= 1);
    assert!(s["snapshot"]["sensors"].as_array().unwrap().len() >= 5);

    // Every documented operation is routed (answers something other than no_route / 405).
    let doc = get(port, "/v1/openapi.yaml").unwrap();
    assert_eq!(doc.status, 200);
    let ops = operations(&doc.text());
    assert!(ops.len() >= 9, "{ops:?}");
    for (method, path) in &ops {
        let path = path.replace("{id}", &id);
        let r = request(port, method, &path, Some("application/json"), b"{}").unwrap();
        assert!(r.status != 405, "{method} {path}: {}", r.text());
        if r.status == 404 {
            assert_ne!(
                r.json()["error"],
                "no_route",
                "{method} {path} is documented but not routed"
            );
        }
    }

    // 400: malformed JSON.
    let r = request(
        port,
        "POST",
        "/v1/predict",
        Some("application/json"),
        b"{\"model\": ",
    )
    .unwrap();
    assert_error(&r, 400, "malformed_json");
    let r = request(
        port,
        "POST",
        "/v1/observe",
        Some("application/json"),
        b"not json",
    )
    .unwrap();
    assert_error(&r, 400, "malformed_json");
    // 404: unknown model, unknown route.
    assert_error(
        &post_json(port, "/v1/predict", &json!({"model": "f".repeat(64)})).unwrap(),
        404,
        "unknown_model",
    );
    assert_error(
        &post_json(port, "/v1/predict", &json!({"model": "../../etc/passwd"})).unwrap(),
        404,
        "unknown_model",
    );
    assert_error(&get(port, "/v1/models/nope").unwrap(), 404, "unknown_model");
    assert_error(
        &post_json(
            port,
            "/v1/observe",
            &json!({"model": "a".repeat(64), "latency_ms": 3}),
        )
        .unwrap(),
        404,
        "unknown_model",
    );
    assert_error(&get(port, "/v2/anything").unwrap(), 404, "no_route");
    // 405.
    assert_error(
        &request(port, "DELETE", "/v1/predict", None, b"").unwrap(),
        405,
        "method_not_allowed",
    );
    // 413: JSON body over the limit; a model announced over the limit with Expect: 100-continue
    // is refused before a byte of it is sent; a chunked body found over the limit while read.
    let big = format!("{{\"model\": \"{}\"}}", "a".repeat(100_000));
    let r = request(
        port,
        "POST",
        "/v1/predict",
        Some("application/json"),
        big.as_bytes(),
    )
    .unwrap();
    assert_error(&r, 413, "body_too_large");
    let mut c = Conn::open(port).unwrap();
    c.write_head(
        "POST",
        "/v1/models",
        Some("application/octet-stream"),
        200 << 20,
        &[("Expect", "100-continue")],
    )
    .unwrap();
    assert_error(&c.read_response().unwrap(), 413, "body_too_large");
    let mut c = Conn::open(port).unwrap();
    let head = "POST /v1/observe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    c.stream().write_all(head.as_bytes()).unwrap();
    let mut writer = c.stream().try_clone().unwrap();
    let w = std::thread::spawn(move || {
        let chunk = vec![b' '; 16 << 10];
        for _ in 0..16 {
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(&chunk);
            frame.extend_from_slice(b"\r\n");
            if writer.write_all(&frame).is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n");
    });
    assert_error(&c.read_response().unwrap(), 413, "body_too_large");
    let _ = w.join();
    // 413: batch over limits.max_batch; graph over limits.max_graph_nodes (DenseNet-121 has ~900).
    let items: Vec<Value> = (0..201).map(|_| json!({"model": id})).collect();
    assert_error(
        &post_json(port, "/v1/predict", &json!({"batch": items})).unwrap(),
        413,
        "batch_too_large",
    );
    assert_error(
        &post_model(port, &zoo("densenet121_224.onnx")),
        413,
        "graph_too_large",
    );
    // 415: wrong or missing content type.
    assert_error(
        &request(port, "POST", "/v1/predict", Some("text/plain"), b"{}").unwrap(),
        415,
        "unsupported_media_type",
    );
    assert_error(
        &request(port, "POST", "/v1/observe", None, b"{}").unwrap(),
        415,
        "unsupported_media_type",
    );
    assert_error(
        &request(port, "POST", "/v1/models", Some("image/png"), b"x").unwrap(),
        415,
        "unsupported_media_type",
    );
    // 422: unparsable model, unsupported operator, invalid requests and observations.
    assert_error(
        &request(
            port,
            "POST",
            "/v1/models",
            Some("application/octet-stream"),
            b"\x08\x07garbage",
        )
        .unwrap(),
        422,
        "unparsable_model",
    );
    assert_error(
        &request(
            port,
            "POST",
            "/v1/models",
            Some("application/octet-stream"),
            b"",
        )
        .unwrap(),
        422,
        "unparsable_model",
    );
    assert_error(
        &request(
            port,
            "POST",
            "/v1/models",
            Some("application/json"),
            b"[1, 2]",
        )
        .unwrap(),
        422,
        "unparsable_model",
    );
    let r = request(
        port,
        "POST",
        "/v1/models",
        Some("application/octet-stream"),
        &onnx_with_unknown_op(),
    )
    .unwrap();
    assert_error(&r, 422, "unsupported_operator");
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("NoSuchOperator")
    );
    assert_error(
        &post_json(port, "/v1/predict", &json!({"modle": id})).unwrap(),
        422,
        "invalid_request",
    );
    assert_error(
        &post_json(port, "/v1/predict", &json!({})).unwrap(),
        422,
        "invalid_request",
    );
    assert_error(
        &post_json(port, "/v1/predict", &json!({"model": id, "threads": 0})).unwrap(),
        422,
        "invalid_request",
    );
    assert_error(
        &post_json(
            port,
            "/v1/predict",
            &json!({"model": id, "state": {"others_busy": 3}}),
        )
        .unwrap(),
        422,
        "invalid_request",
    );
    assert_error(
        &post_json(
            port,
            "/v1/predict",
            &json!({"model": id, "state": {"cpus": "many"}}),
        )
        .unwrap(),
        422,
        "invalid_request",
    );
    assert_error(
        &post_json(port, "/v1/predict", &json!({"batch": []})).unwrap(),
        422,
        "invalid_request",
    );
    for bad in [json!(-1.0), json!(0), json!("NaN"), json!(null)] {
        let r = post_json(
            port,
            "/v1/observe",
            &json!({"model": id, "latency_ms": bad}),
        )
        .unwrap();
        assert_eq!(r.status, 422, "{bad}: {}", r.text());
    }
    assert_error(
        &post_json(port, "/v1/observe", &json!({"model": id, "latency_ms": 3, "kernels": [{"name": "no-such-kernel", "latency_ms": 1}]})).unwrap(),
        422,
        "invalid_observation",
    );
    // A request the client never finishes is cut off, not left hanging (tested with a short limit
    // in `systemd_notify_watchdog_and_timeouts`); here, bad bytes on the wire get a 400, not a drop.
    let mut c = Conn::open(port).unwrap();
    c.stream()
        .write_all(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response().unwrap().status, 400);

    // Metrics: requests per route and status, predictions, cache, observation error, sensors,
    // learner; and every metric the Grafana dashboard queries.
    let metrics = get(port, "/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for needle in [
        r#"augur_http_requests_total{route="/v1/predict",status="200"}"#,
        r#"augur_http_requests_total{route="/v1/predict",status="413"}"#,
        r#"augur_http_request_duration_seconds_bucket{route="/v1/predict",le="0.001"}"#,
        "augur_predictions_total",
        "augur_predicted_latency_seconds_bucket",
        "augur_model_cache_hits_total",
        "augur_observation_error_ratio_bucket",
        "augur_observed_latency_seconds_count",
        r#"augur_observations_total{result="rejected"}"#,
        "augur_cpu_utilization_ratio",
        "augur_sensor_up",
        "augur_ready 1",
        "augur_calibrated 0",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}");
    }
    // Whether the learner takes an observation or refuses it as an outlier depends on the live load.
    assert_eq!(
        metric(&text, "augur_learner_observations") + metric(&text, "augur_learner_rejected"),
        2.0
    );
    check_dashboard(&text);

    // Graceful shutdown: a large import in flight when SIGTERM arrives still gets its answer.
    let big = std::fs::read(zoo("resnet50_224.onnx")).unwrap();
    let (sent_tx, sent) = std::sync::mpsc::channel();
    let inflight = std::thread::spawn(move || {
        let mut c = Conn::open(port).unwrap();
        c.write_head(
            "POST",
            "/v1/models",
            Some("application/octet-stream"),
            big.len(),
            &[],
        )
        .unwrap();
        c.stream().write_all(&big).unwrap();
        // 98 MB cannot sit in socket buffers: the server has accepted and is reading it.
        sent_tx.send(()).unwrap();
        c.read_response().unwrap()
    });
    sent.recv_timeout(Duration::from_secs(60)).unwrap();
    let status = d.terminate(Duration::from_secs(40));
    assert!(status.success(), "exit status {status:?}");
    let r = inflight.join().unwrap();
    assert_eq!(r.status, 201, "in-flight import: {}", r.text());
    let learned: Value = serde_json::from_str(&read(&dir, "state/learner.json")).unwrap();
    let l = &learned["learner"];
    assert_eq!(
        l["observations"].as_u64().unwrap() + l["rejected"].as_u64().unwrap(),
        2,
        "learned state flushed at shutdown"
    );
}

/// The value of an unlabelled metric in a scrape (0 when absent).
fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Every metric a dashboard query names is exported: seen in this scrape, or (for sensors a VM
/// lacks, like temperatures and power rails) one the sensing module records.
fn check_dashboard(scrape: &str) {
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

#[test]
fn restart_keeps_models_and_learned_state() {
    let tmp = common::scratch("restart");
    let dir = tmp.path().to_path_buf();
    config(&dir, "", "[observe]\ncheckpoint_seconds = 60.0");
    let d = Daemon::start(&dir, &[]);
    d.wait_ready();
    let id = post_model(d.port, &zoo("shufflenet_v2_x0_5_224.onnx")).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..5 {
        let r = post_json(
            d.port,
            "/v1/observe",
            &json!({"model": id, "latency_ms": 5.0 + i as f64}),
        )
        .unwrap();
        assert_eq!(r.status, 200);
    }
    assert!(d.terminate(Duration::from_secs(20)).success());

    let d = Daemon::start(&dir, &[]);
    d.wait_ready();
    // Known at once from the state directory: no re-import.
    let p = post_json(d.port, "/v1/predict", &json!({"model": id})).unwrap();
    assert_eq!(p.status, 200, "{}", p.text());
    let text = get(d.port, "/metrics").unwrap().text();
    assert!(
        text.contains(r#"augur_model_cache_requests_total{result="disk"} 1"#),
        "{text}"
    );
    assert!(!text.contains("augur_model_imports_total"));
    assert_eq!(
        metric(&text, "augur_learner_observations") + metric(&text, "augur_learner_rejected"),
        5.0
    );
    let o = post_json(
        d.port,
        "/v1/observe",
        &json!({"model": id, "latency_ms": 4.0}),
    )
    .unwrap();
    assert_eq!(o.json()["seq"], 6, "sequence numbers go on after a restart");
}

/// Streams observations from several connections, kills the daemon with SIGKILL mid-stream, three
/// times; after each restart every acknowledged observation is in the journal with its value, the
/// journal parses whole and the learned state agrees with it.
#[test]
fn kill_9_loses_no_acknowledged_observation() {
    let tmp = common::scratch("kill9");
    let dir = tmp.path().to_path_buf();
    config(&dir, "", "[observe]\ncheckpoint_seconds = 0.2");
    let acked: Arc<Mutex<Vec<(u64, f64)>>> = Arc::default();
    let mut id = String::new();
    let mut sent_total = 0usize;
    let t_all = Instant::now();
    for round in 0..3u64 {
        let d = Daemon::start(&dir, &[]);
        d.wait_ready();
        if round == 0 {
            id = post_model(d.port, &zoo("mobilenet_v2_160.onnx")).json()["id"]
                .as_str()
                .unwrap()
                .to_string();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (stop, acked, id, port) =
                    (Arc::clone(&stop), Arc::clone(&acked), id.clone(), d.port);
                std::thread::spawn(move || {
                    let Ok(mut c) = Conn::open(port) else {
                        return 0;
                    };
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        // A unique value per observation, to find each one in the journal.
                        let ms = 1.0 + (round * 1_000_000 + t * 100_000 + n) as f64 / 1000.0;
                        n += 1;
                        let body = json!({"model": id, "latency_ms": ms}).to_string();
                        let Ok(r) = c.send(
                            "POST",
                            "/v1/observe",
                            Some("application/json"),
                            body.as_bytes(),
                        ) else {
                            break;
                        };
                        if r.status == 200 {
                            let seq = r.json()["seq"].as_u64().unwrap();
                            acked.lock().unwrap().push((seq, ms));
                        }
                    }
                    n as usize
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700 + 300 * round));
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        sent_total += threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum::<usize>();
    }
    let secs = t_all.elapsed().as_secs_f64();
    // Recovery happens at start-up; a clean stop then checkpoints.
    let d = Daemon::start(&dir, &[]);
    d.wait_ready();
    assert!(d.terminate(Duration::from_secs(20)).success());

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "only {} observations acknowledged",
        acked.len()
    );
    let mut journal: BTreeMap<u64, f64> = BTreeMap::new();
    for f in ["state/observations.1.jsonl", "state/observations.jsonl"] {
        let mut last = 0;
        for line in read(&dir, f).lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{f}: torn line {line:?}: {e}"));
            let seq = v["seq"].as_u64().unwrap();
            assert!(seq > last, "{f}: sequence numbers not increasing");
            last = seq;
            journal.insert(seq, v["latency_ms"].as_f64().unwrap());
        }
    }
    for (seq, ms) in &acked {
        assert_eq!(
            journal.get(seq),
            Some(ms),
            "acknowledged observation {seq} ({ms} ms) lost"
        );
    }
    let learned: Value = serde_json::from_str(&read(&dir, "state/learner.json")).unwrap();
    let l = &learned["learner"];
    assert_eq!(
        l["observations"].as_u64().unwrap() + l["rejected"].as_u64().unwrap(),
        journal.len() as u64,
        "the learner saw every journalled observation once"
    );
    assert_eq!(learned["last_seq"].as_u64(), journal.keys().last().copied());
    eprintln!(
        "kill -9 x3: {} observations acknowledged ({} sent, {:.0}/s over 4 connections), {} in the journal, {} bytes of torn tails cut",
        acked.len(),
        sent_total,
        acked.len() as f64 / secs,
        journal.len(),
        std::fs::metadata(dir.join("state/observations.damaged"))
            .map(|m| m.len())
            .unwrap_or(0)
    );
}

#[test]
fn systemd_notify_watchdog_and_timeouts() {
    let tmp = common::scratch("notify");
    let dir = tmp.path().to_path_buf();
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
    let tmp = common::scratch("unit");
    let dir = tmp.path().to_path_buf();
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
    let tmp = common::scratch("config");
    let dir = tmp.path().to_path_buf();
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
