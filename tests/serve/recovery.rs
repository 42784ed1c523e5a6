//! Restarts and `kill -9`: what the state directory keeps.
use super::daemon::*;
use super::http::{Conn, get, post_json};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn restart_keeps_models_and_learned_state() {
    let dir = scratch("restart");
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
        metric(&text, "augur_learner_observations_total")
            + metric(&text, "augur_learner_rejected_total"),
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
    let dir = scratch("kill9");
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
