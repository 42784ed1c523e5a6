//! A split chosen by `augur plan`, run for real (not run by `cargo test`):
//! `AUGUR_PROFILE=P cargo bench --bench split_run`.
//!
//! The plan is asked for a model with this board's profile as the local board at 1 thread and, as
//! the remote board at 2 threads, the augur of the process standing in for the server: an `augur
//! serve` on loopback with the same profile (the profile must have its thread scaling), asked over
//! HTTP for its live prediction, since that server shares this host and its speed. Its probes get
//! AUGUR_SPLIT_PROBE_BUDGET (0.05) of a core, and the run waits for its first four speed readings;
//! AUGUR_SPLIT_REMOTE=profile asks the profile file instead (a quiet board). Over
//! a link of AUGUR_SPLIT_MBPS (100) and AUGUR_SPLIT_RTT_MS (2), for a deadline of
//! AUGUR_SPLIT_DEADLINE_MS (default 1.1 × the best split's prediction). Its best split is written by
//! `augur split`; the prefix runs here at 1 thread and the suffix in a second process standing in
//! for the server at 2 threads, reading the crossing tensor from a pipe. The transfer is the link
//! model's: the sender waits `bytes × 8 / bandwidth + rtt` before handing the tensor over (a pipe
//! itself takes microseconds). Each of AUGUR_SPLIT_TRIES (20) tries asks the plan again (the live
//! state just before it) and then times prefix → transfer → suffix end to end.
//!
//! Target: the end-to-end time within the predicted interval in ≥ 90 % of the tries. Exits 1 when
//! it is missed. The share of tries meeting the deadline is printed beside the mean `p_deadline`.
//! The model is AUGUR_SPLIT_MODEL, a zoo name (default `resnet18_224`). This board's own live state
//! is `augur plan`'s own reading; AUGUR_SPLIT_LOCAL=daemon takes it from that daemon instead
//! (`augur plan --state-from`).
#[path = "../tests/common/mod.rs"]
mod common;

use serde_json::Value;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use tract_onnx::prelude::tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::*;

fn knob(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A model loaded, optimised and planned, with its one input's shape.
struct Part {
    plan: std::sync::Arc<TypedSimplePlan>,
    input_shape: Vec<usize>,
}

fn load(path: &Path) -> TractResult<Part> {
    let model = tract_onnx::onnx().model_for_path(path)?.into_optimized()?;
    let fact = model.input_fact(0)?;
    let input_shape = fact
        .shape
        .as_concrete()
        .ok_or_else(|| TractError::msg(format!("{}: input shape not static", path.display())))?
        .to_vec();
    Ok(Part {
        plan: model.into_runnable()?,
        input_shape,
    })
}

/// The deterministic input augur's benches use: values in [-0.5, 0.5).
fn input(shape: &[usize]) -> TractResult<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 31 + 7) % 255) as f32 / 255.0 - 0.5)
        .collect();
    Tensor::from_shape(shape, &v)
}

/// The server stand-in: reads a crossing tensor (u64 length in f32 values, then the values, little
/// endian) from stdin, runs the suffix at `threads`, and answers its compute time in ms (f64).
fn serve(suffix: &Path, threads: usize) -> TractResult<()> {
    let part = load(suffix)?;
    let executor = if threads <= 1 {
        Executor::SingleThread
    } else {
        Executor::multithread_with_name(threads, "split-server")
    };
    let mut stdin = BufReader::new(std::io::stdin().lock());
    let mut stdout = std::io::stdout().lock();
    multithread_tract_scope(executor, || -> TractResult<()> {
        let mut state = TypedSimpleState::new(&part.plan)?;
        loop {
            let mut len = [0u8; 8];
            if stdin.read_exact(&mut len).is_err() {
                return Ok(());
            }
            let n = u64::from_le_bytes(len) as usize;
            let mut bytes = vec![0u8; n * 4];
            stdin.read_exact(&mut bytes)?;
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let t = Instant::now();
            let x = Tensor::from_shape(&part.input_shape, &values)?;
            state.run(tvec!(x.into()))?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            stdout.write_all(&ms.to_le_bytes())?;
            stdout.flush()?;
        }
    })
}

struct Server {
    child: Child,
    to: ChildStdin,
    from: ChildStdout,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(suffix: &Path, threads: usize) -> Server {
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new(exe)
            .arg("--serve")
            .arg(suffix)
            .arg(threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("server process");
        let to = child.stdin.take().expect("stdin");
        let from = child.stdout.take().expect("stdout");
        Server { child, to, from }
    }

    /// Sends a tensor and waits for the suffix to have run on it; its compute time, ms.
    fn call(&mut self, values: &[f32]) -> f64 {
        let mut bytes = Vec::with_capacity(8 + values.len() * 4);
        bytes.extend((values.len() as u64).to_le_bytes());
        for v in values {
            bytes.extend(v.to_le_bytes());
        }
        self.to.write_all(&bytes).expect("send to the server");
        self.to.flush().expect("send to the server");
        let mut ms = [0u8; 8];
        self.from.read_exact(&mut ms).expect("the server's answer");
        f64::from_le_bytes(ms)
    }
}

/// The server's augur: a daemon on loopback with the profile, ready and holding four speed
/// readings (dropped with the run).
struct Daemon {
    child: Child,
    url: String,
    _state: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(profile: &Path) -> Daemon {
        let state = common::scratch("split-run-daemon");
        let budget = knob("AUGUR_SPLIT_PROBE_BUDGET", 0.05);
        let (child, port) = common::spawn_serve(
            common::augur()
                .arg("serve")
                .arg("--profile")
                .arg(profile)
                .args(["--listen", "127.0.0.1:0"])
                .arg("--state-dir")
                .arg(state.path())
                .args(["--probe-budget", &budget.to_string()])
                .stderr(Stdio::null()),
        );
        let d = Daemon {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _state: state,
        };
        let until = Instant::now() + Duration::from_secs(600);
        loop {
            let readings = ureq::get(&format!("{}/v1/state", d.url))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .map(|v| {
                    let p = &v["snapshot"]["probe"];
                    let n = |k: &str| p[k].as_array().map_or(0, Vec::len);
                    n("reference_history_cpu_ms").min(n("reference_parallel_ratios"))
                })
                .unwrap_or(0);
            if readings >= 4 {
                return d;
            }
            assert!(
                Instant::now() < until,
                "the server's augur holds no speed readings"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// `augur plan` as a scheduler would call it; the options, best first.
fn plan(
    model: &Path,
    profile: &Path,
    remote: &str,
    mbps: f64,
    rtt: f64,
    deadline: Option<f64>,
    state_from: Option<&str>,
) -> Vec<Value> {
    let mut cmd = common::augur();
    cmd.arg("plan")
        .arg(model)
        .arg("--profile")
        .arg(profile)
        .arg("--remote")
        .arg(remote)
        .args(["--remote-threads", "2", "--threads", "1"])
        .args([
            "--link-mbps",
            &mbps.to_string(),
            "--rtt-ms",
            &rtt.to_string(),
        ])
        .arg("--json");
    if let Some(d) = deadline {
        cmd.args(["--deadline-ms", &d.to_string()]);
    }
    if let Some(url) = state_from {
        cmd.args(["--state-from", url]);
    }
    let out = cmd.output().expect("augur plan");
    assert!(
        out.status.success(),
        "augur plan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    v["options"].as_array().cloned().unwrap_or_default()
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(2);
        if let Err(e) = serve(Path::new(&args[2]), threads) {
            eprintln!("server: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let Ok(profile) = std::env::var("AUGUR_PROFILE").map(PathBuf::from) else {
        eprintln!(
            "split_run: set AUGUR_PROFILE to a profile with thread scaling (augur calibrate)"
        );
        std::process::exit(2);
    };
    let name = std::env::var("AUGUR_SPLIT_MODEL").unwrap_or_else(|_| "resnet18_224".into());
    let model = common::zoo_model(&name);
    let mbps = knob("AUGUR_SPLIT_MBPS", 100.0);
    let rtt = knob("AUGUR_SPLIT_RTT_MS", 2.0);
    let tries = knob("AUGUR_SPLIT_TRIES", 20.0).max(1.0) as usize;

    let daemon = (std::env::var("AUGUR_SPLIT_REMOTE").as_deref() != Ok("profile"))
        .then(|| Daemon::start(&profile));
    let remote = daemon
        .as_ref()
        .map_or_else(|| profile.display().to_string(), |d| d.url.clone());
    // This board's state: the command's own reading of the second it runs in; with
    // AUGUR_SPLIT_LOCAL=daemon, the server stand-in's daemon's (`--state-from`; both boards are
    // this host), whose readings come about once a minute on its probe budget.
    let state_from = daemon
        .as_ref()
        .filter(|_| std::env::var("AUGUR_SPLIT_LOCAL").as_deref() == Ok("daemon"))
        .map(|d| d.url.clone());
    let state_from = state_from.as_deref();
    let options = plan(&model, &profile, &remote, mbps, rtt, None, state_from);
    let Some(best) = options.iter().find(|o| o["placement"] == "split") else {
        eprintln!("split_run: the plan offers no split for {name}");
        std::process::exit(1);
    };
    let deadline = std::env::var("AUGUR_SPLIT_DEADLINE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.1 * num(best, "latency_ms"));
    // The split the plan ranks first for the deadline.
    let options = plan(
        &model,
        &profile,
        &remote,
        mbps,
        rtt,
        Some(deadline),
        state_from,
    );
    let chosen = options
        .iter()
        .find(|o| o["placement"] == "split")
        .cloned()
        .expect("a split");
    let cut = chosen["cut"].as_str().unwrap_or_default().to_string();
    let dir = common::scratch("split-run");
    let out = common::augur()
        .arg("split")
        .arg(&model)
        .args(["--cut", &cut, "--out"])
        .arg(dir.path())
        .arg("--profile")
        .arg(&profile)
        .output()
        .expect("augur split");
    assert!(
        out.status.success(),
        "augur split failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{name}: cut {cut}; {} bytes cross; link {mbps} Mb/s, rtt {rtt} ms; deadline {deadline:.2} ms; prefix 1 thread here, suffix 2 threads in a second process; remote figures from {remote}; local state from {}",
        chosen["transfer_bytes"],
        state_from.unwrap_or("a one-off reading")
    );

    let prefix = load(&dir.path().join("prefix.onnx")).expect("prefix loads");
    let mut server = Server::start(&dir.path().join("suffix.onnx"), 2);
    let x = input(&prefix.input_shape).expect("input");
    let mut state = TypedSimpleState::new(&prefix.plan).expect("prefix state");
    let mut once = |link: Duration| -> (f64, f64, f64) {
        let t = Instant::now();
        let y = state.run(tvec!(x.clone().into())).expect("prefix runs");
        let prefix_ms = t.elapsed().as_secs_f64() * 1e3;
        let values: Vec<f32> = y[0]
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>().map(<[f32]>::to_vec))
            .expect("f32 crossing tensor");
        std::thread::sleep(link);
        let suffix_ms = server.call(&values);
        (t.elapsed().as_secs_f64() * 1e3, prefix_ms, suffix_ms)
    };
    for _ in 0..3 {
        once(Duration::ZERO);
    }
    println!(
        "{:>3} {:>9} {:>21} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "try", "pred ms", "interval ms", "e2e ms", "prefix", "p.pred", "suffix", "s.pred"
    );
    let (mut inside, mut met, mut p_sum) = (0, 0, 0.0);
    for i in 0..tries {
        let now = plan(
            &model,
            &profile,
            &remote,
            mbps,
            rtt,
            Some(deadline),
            state_from,
        );
        let Some(o) = now.iter().find(|o| o["cut"].as_str() == Some(&cut)) else {
            eprintln!("split_run: the cut {cut} is no longer offered");
            std::process::exit(1);
        };
        let transfer = num(o, "latency_ms") - num(o, "local_ms") - num(o, "remote_ms");
        let (e2e, p_ms, s_ms) = once(Duration::from_secs_f64(transfer.max(0.0) / 1e3));
        let iv = [o["interval_ms"][0].as_f64(), o["interval_ms"][1].as_f64()];
        let (lo, hi) = (iv[0].unwrap_or(f64::NAN), iv[1].unwrap_or(f64::NAN));
        inside += usize::from(lo <= e2e && e2e <= hi);
        met += usize::from(e2e <= deadline);
        p_sum += num(o, "p_deadline");
        println!(
            "{:>3} {:>9.2} {:>9.2} – {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            i + 1,
            num(o, "latency_ms"),
            lo,
            hi,
            e2e,
            p_ms,
            num(o, "local_ms"),
            s_ms,
            num(o, "remote_ms")
        );
    }
    let share = inside as f64 / tries as f64;
    println!(
        "within the predicted interval: {inside} of {tries} ({:.0} %); deadline met {met} of {tries}, mean p_deadline {:.2}",
        share * 100.0,
        p_sum / tries as f64
    );
    if share < 0.9 {
        println!("FAILED: under 90 % of the tries within the interval");
        std::process::exit(1);
    }
}
