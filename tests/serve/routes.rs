//! Every route and every error status of `augur serve`, on one daemon, phase by phase.
use super::daemon::*;
use super::http::{Conn, get, post_json, request};
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

#[test]
fn every_route_and_every_error_status() {
    let dir = scratch("routes");
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

    let (id, m, squeeze) = models(port);
    let pk = predictions(port, &id, &m);
    batch(port, &id, &squeeze);
    observations_and_state(port, &id, &pk);
    documented_operations_are_routed(port, &id);
    errors_400_to_415(port, &id);
    errors_422(port, &id);
    metrics_and_dashboard(port);
    graceful_shutdown(d, &dir);
}

/// Models: import, import again (cached), read back; nn-Meter IR reaches its importer.
fn models(port: u16) -> (String, Value, String) {
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

    (id, m, squeeze)
}

/// Predictions, with kernels, and what-if states.
fn predictions(port: u16, id: &str, m: &Value) -> Value {
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
    assert!(p["p_deadline"].is_null() && p["deadline_ms"].is_null());
    // With a deadline: the chance of meeting it, far above the prediction near certain, far below
    // near hopeless.
    let chance = |d: f64| {
        let r = post_json(port, "/v1/predict", &json!({"model": id, "deadline_ms": d})).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["deadline_ms"].as_f64(), Some(d));
        v["p_deadline"].as_f64().unwrap()
    };
    assert!(chance(lat * 100.0) > 0.99);
    assert!(chance(lat / 100.0) < 0.01);
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
    // The same what-if said two ways predicts the same, under one live snapshot: the sampler may
    // take a new one (a new speed reading) between two requests, so the pair is asked again until
    // both answers name the same snapshot.
    let same_snapshot = (0..20).find_map(|_| {
        let deep = at(
            json!({"utilization": {"busy": {"mean": 1.0}}, "own_cpu": {"mean": 0.0}}),
            2,
        );
        let busy = at(json!({"others_busy": 1.0}), 2);
        (deep["state"]["seq"] == busy["state"]["seq"]).then_some((deep, busy))
    });
    let (deep, busy2) = same_snapshot.expect("no two answers under one snapshot in 20 tries");
    assert_eq!(deep["latency_ms"], busy2["latency_ms"]);

    pk
}

/// Batch: several models and variants; an unknown item fails alone.
fn batch(port: u16, id: &str, squeeze: &str) {
    let (id, squeeze) = (id.to_string(), squeeze.to_string());
    // A batch item predicts as the same request alone would, under one live snapshot: the pair is
    // asked again until both answers name the same one (the sampler may take a new reading between).
    let same_snapshot = (0..20).find_map(|_| {
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
        let alone = post_json(
            port,
            "/v1/predict",
            &json!({"model": id, "state": {"others_busy": 1.0}, "threads": 2}),
        )
        .unwrap()
        .json();
        (res[2]["state"]["seq"] == alone["state"]["seq"]).then_some((res, alone))
    });
    let (res, alone) = same_snapshot.expect("no batch and answer under one snapshot in 20 tries");
    assert!(alone["state"]["seq"].is_u64(), "{alone}");
    assert_eq!(res.len(), 4);
    assert_eq!(res[0]["model"], id.as_str());
    assert_eq!(res[1]["model"], squeeze.as_str());
    assert_eq!(res[2]["latency_ms"], alone["latency_ms"]);
    assert_eq!(res[3]["status"], 404);
    assert_eq!(res[3]["error"], "unknown_model");

    // Deadlines: the batch's is the items' default, an item's own replaces it.
    let b = post_json(
        port,
        "/v1/predict",
        &json!({"deadline_ms": 1e6, "batch": [
            {"model": id}, {"model": id, "deadline_ms": 1e-3}, {"model": squeeze}
        ]}),
    )
    .unwrap();
    assert_eq!(b.status, 200, "{}", b.text());
    let res = b.json()["results"].as_array().unwrap().clone();
    assert_eq!(res[0]["deadline_ms"].as_f64(), Some(1e6));
    assert!(res[0]["p_deadline"].as_f64().unwrap() > 0.99);
    assert_eq!(res[1]["deadline_ms"].as_f64(), Some(1e-3));
    assert!(res[1]["p_deadline"].as_f64().unwrap() < 0.01);
    assert_eq!(res[2]["deadline_ms"].as_f64(), Some(1e6));
}

/// Observations, then the state.
fn observations_and_state(port: u16, id: &str, pk: &Value) {
    // Observations. The daemon predicts from the host's live state and the learner refuses a
    // measurement far from its prediction, so the one to be learned is set near what it says now
    // rather than at a fixed figure a busy host would make look absurd.
    let now = post_json(port, "/v1/predict", &json!({"model": id}))
        .unwrap()
        .json()["latency_ms"]
        .as_f64()
        .unwrap();
    let o = post_json(
        port,
        "/v1/observe",
        &json!({"model": id, "latency_ms": 0.9 * now}),
    )
    .unwrap();
    assert_eq!(o.status, 200, "{}", o.text());
    assert_eq!(o.json()["seq"], 1);
    assert_eq!(o.json()["learned"], true, "{}", o.text());
    let kname = pk["kernels"][0]["name"].as_str().unwrap();
    let ok = post_json(
        port,
        "/v1/observe",
        &json!({"model": id, "latency_ms": 0.85 * now, "threads": 1, "kernels": [{"name": kname, "latency_ms": 0.5}]}),
    )
    .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());

    // What was learned follows the model, not its file: the copy another daemon exports (other
    // bytes, so another id) is predicted with the same correction, under one live snapshot.
    let g = augur::model::import_path(&zoo("mobilenet_v2_224.onnx"), None).unwrap();
    let exported = augur::model::export::to_onnx_bytes(&g).unwrap();
    let r = request(
        port,
        "POST",
        "/v1/models",
        Some("application/octet-stream"),
        &exported,
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let copy = r.json()["id"].as_str().unwrap().to_string();
    assert_ne!(copy, id, "the export has other bytes");
    let both = (0..20).find_map(|_| {
        let a = post_json(port, "/v1/predict", &json!({"model": id}))
            .unwrap()
            .json();
        let b = post_json(port, "/v1/predict", &json!({"model": copy}))
            .unwrap()
            .json();
        (a["state"]["seq"] == b["state"]["seq"]).then_some((a, b))
    });
    let (a, b) = both.expect("no two answers under one snapshot in 20 tries");
    // The export stores a Clip's bounds as f32 where the file had f16: a few bytes of base.
    let close = |x: &Value, y: &Value| {
        let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
        (x - y).abs() <= 1e-6 * x.abs().max(y.abs())
    };
    let (fa, fb) = (&a["state"]["learned_factor"], &b["state"]["learned_factor"]);
    assert!(
        close(fa, fb),
        "learned {fa} for the model, {fb} for its copy"
    );
    assert!(close(&a["base_ms"], &b["base_ms"]), "{a}\n{b}");
    assert!(close(&a["latency_ms"], &b["latency_ms"]), "{a}\n{b}");
    for i in 0..2 {
        assert!(
            close(&a["interval_ms"][i], &b["interval_ms"][i]),
            "{a}\n{b}"
        );
    }

    // State.
    let s = get(port, "/v1/state").unwrap().json();
    assert_eq!(s["ready"], true);
    assert!(s["snapshot"]["seq"].as_u64().unwrap() >= 1);
    assert!(s["snapshot"]["sensors"].as_array().unwrap().len() >= 5);
}

/// Every documented operation is routed (answers something other than no_route / 405).
fn documented_operations_are_routed(port: u16, id: &str) {
    let doc = get(port, "/v1/openapi.yaml").unwrap();
    assert_eq!(doc.status, 200);
    let ops = operations(&doc.text());
    assert!(ops.len() >= 9, "{ops:?}");
    for (method, path) in &ops {
        let path = path.replace("{id}", id);
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
}

fn errors_400_to_415(port: u16, id: &str) {
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
    // 422: batch over limits.max_batch; 413: graph over limits.max_graph_nodes (DenseNet-121 has
    // ~900).
    let items: Vec<Value> = (0..201).map(|_| json!({"model": id})).collect();
    assert_error(
        &post_json(port, "/v1/predict", &json!({"batch": items})).unwrap(),
        422,
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
}

fn errors_422(port: u16, id: &str) {
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
    // A deadline that is not a positive number of ms, alone or anywhere in a batch.
    for bad in [json!(0), json!(-1.5), json!("soon")] {
        assert_error(
            &post_json(
                port,
                "/v1/predict",
                &json!({"model": id, "deadline_ms": bad}),
            )
            .unwrap(),
            422,
            "invalid_request",
        );
    }
    for body in [
        json!({"batch": [{"model": id}, {"model": id, "deadline_ms": 0}]}),
        json!({"batch": [{"model": id}], "deadline_ms": -3}),
    ] {
        assert_error(
            &post_json(port, "/v1/predict", &body).unwrap(),
            422,
            "invalid_request",
        );
    }
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
}

/// Metrics: requests per route and status, predictions, cache, observation error, sensors,
/// learner; and every metric the Grafana dashboard queries.
fn metrics_and_dashboard(port: u16) {
    let metrics = get(port, "/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for needle in [
        r#"augur_http_requests_total{route="/v1/predict",status="200"}"#,
        r#"augur_http_requests_total{route="/v1/predict",status="413"}"#,
        r#"augur_http_request_duration_seconds_bucket{route="/v1/predict",le="0.001"}"#,
        "augur_predictions_total",
        "augur_predicted_latency_seconds_bucket",
        r#"augur_model_cache_requests_total{result="hit"}"#,
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
        metric(&text, "augur_learner_observations_total")
            + metric(&text, "augur_learner_rejected_total"),
        2.0
    );
    check_dashboard(&text);
}

/// Graceful shutdown: a large import in flight when SIGTERM arrives still gets its answer.
fn graceful_shutdown(d: Daemon, dir: &Path) {
    let port = d.port;
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
    let learned: Value = serde_json::from_str(&read(dir, "state/learner.json")).unwrap();
    let l = &learned["learner"];
    assert_eq!(
        l["observations"].as_u64().unwrap() + l["rejected"].as_u64().unwrap(),
        2,
        "learned state flushed at shutdown"
    );
}
