//! Load benchmark of `POST /v1/plan` (not run by `cargo test`): `cargo bench --bench plan`.
//!
//! Starts the real daemon on a loopback port with two remote boards (stand-in profiles in its
//! state directory's `boards/`), imports a chain of 51 fused conv kernels (so exactly 50 cut points),
//! checks one answer (local, 50 splits and all remote for each board), then drives `POST
//! /v1/plan` open-loop at a fixed rate: each request has a scheduled send time and its latency is
//! counted from it, so a stalled server is charged for the requests queued behind the stall.
//!
//! Knobs (environment): AUGUR_PLAN_RPS (200), AUGUR_PLAN_SECONDS (30), AUGUR_PLAN_CONNECTIONS (4).
//! Target: the rate held with no errors and p99 ≤ 10 ms. Exits 1 when it is missed.
#[path = "../tests/serve/http.rs"]
mod http;

#[path = "../tests/common/mod.rs"]
mod common;

use augur::model::builder::GraphBuilder;
use http::{Conn, get, request};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kernels of the chain: one more than the cuts.
const KERNELS: usize = 51;

fn knob(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid; SIGTERM lets it shut down cleanly.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path) -> (Daemon, u16) {
    let boards = dir.join("state/boards");
    std::fs::create_dir_all(&boards).expect("boards directory");
    std::fs::write(boards.join("edge.json"), common::roofline_profile(20.0, 2)).expect("board");
    std::fs::write(
        boards.join("cloud.json"),
        common::roofline_profile(500.0, 8),
    )
    .expect("board");
    let cfg = dir.join("augur.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nprofile = \"{d}/no-profile.json\"\nstate_dir = \"{d}/state\"\n",
            d = dir.display()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_augur"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("stderr.log")).expect("log file"))
        .spawn()
        .expect("spawn augur serve");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    out.read_line(&mut line).expect("listening line");
    std::thread::spawn(move || for _ in out.lines() {});
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .expect("port");
    let d = Daemon(child);
    let t0 = Instant::now();
    while get(port, "/ready").map(|r| r.status).ok() != Some(200) {
        assert!(t0.elapsed() < Duration::from_secs(60), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    (d, port)
}

/// A chain of pointwise convolutions, each with its ReLU fused: 51 kernels, a cut between each
/// pair (as `plan::cuts`'s tests check on a short one).
fn chain() -> Vec<u8> {
    let mut b = GraphBuilder::new("chain51");
    let mut h = b.input(&[1, 16, 28, 28]);
    for _ in 0..KERNELS {
        h = b
            .conv(h, 16, [1, 1], [1, 1], [0; 4], [1, 1], 1, true)
            .expect("conv");
        h = b.relu(h).expect("relu");
    }
    let g = b.finish(&[h]).expect("graph");
    augur::model::export::to_onnx_bytes(&g).expect("export")
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let rps = knob("AUGUR_PLAN_RPS", 200.0);
    let secs = knob("AUGUR_PLAN_SECONDS", 30.0);
    let conns = knob("AUGUR_PLAN_CONNECTIONS", 4.0).max(1.0) as usize;
    let dir = common::scratch("plan-bench");
    let (daemon, port) = start(dir.path());
    let r = request(
        port,
        "POST",
        "/v1/models",
        Some("application/octet-stream"),
        &chain(),
    )
    .expect("import");
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_string();
    let body = json!({
        "model": id, "boards": ["edge", "cloud"], "link_mbps": 100, "rtt_ms": 5,
        "deadline_ms": 50
    })
    .to_string();

    // The answer is what the benchmark claims to measure: 50 cuts on each of the two boards.
    let mut c = Conn::open(port).expect("connect");
    let first = c
        .send(
            "POST",
            "/v1/plan",
            Some("application/json"),
            body.as_bytes(),
        )
        .expect("plan");
    assert_eq!(first.status, 200, "{}", first.text());
    let v = first.json();
    let options = v["options"].as_array().expect("options");
    let splits = options.iter().filter(|o| o["placement"] == "split").count();
    assert_eq!(splits, 2 * (KERNELS - 1), "splits");
    assert_eq!(options.len(), 1 + 2 * (KERNELS - 1) + 2, "options");
    for _ in 0..500 {
        let _ = c.send(
            "POST",
            "/v1/plan",
            Some("application/json"),
            body.as_bytes(),
        );
    }

    println!(
        "open-loop POST /v1/plan: {rps} req/s for {secs} s over {conns} keep-alive connections, 50 cuts, 2 boards"
    );
    let start = Instant::now() + Duration::from_millis(100);
    let per_conn = rps / conns as f64;
    let n_per_conn = (per_conn * secs) as usize;
    let workers: Vec<_> = (0..conns)
        .map(|w| {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut c = Conn::open(port).expect("connect");
                let mut lat = Vec::with_capacity(n_per_conn);
                let mut errors = 0usize;
                let period = Duration::from_secs_f64(1.0 / per_conn);
                let offset = period.mul_f64(w as f64 / conns as f64);
                for k in 0..n_per_conn {
                    let due = start + offset + period * k as u32;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    match c.send(
                        "POST",
                        "/v1/plan",
                        Some("application/json"),
                        body.as_bytes(),
                    ) {
                        Ok(r) if r.status == 200 => lat.push(due.elapsed().as_secs_f64() * 1e3),
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            if let Ok(n) = Conn::open(port) {
                                c = n;
                            }
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.join().expect("worker");
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let achieved = (lat.len() + errors) as f64 / elapsed;
    let p99 = pct(&lat, 0.99);
    println!(
        "  {} requests in {elapsed:.1} s = {achieved:.0} req/s; errors {errors}\n  latency ms: p50 {:.3}  p90 {:.3}  p99 {p99:.3}  max {:.3}",
        lat.len() + errors,
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    drop(daemon);
    let held = achieved >= rps * 0.95;
    let met = p99.is_finite() && p99 <= 10.0;
    if errors > 0 || !held || !met {
        println!("  target missed: p99 ≤ 10 ms at {rps} req/s with no errors");
        std::process::exit(1);
    }
    println!("  target met: p99 ≤ 10 ms");
}
