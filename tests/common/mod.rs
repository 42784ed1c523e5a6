//! Setup shared by the integration tests and the benches: the repository root, the development zoo
//! (unpacked from `data/zoo/` by `scripts/unpack-zoo.sh`, once per process, safely beside other test
//! binaries doing the same), and scratch directories from `tempfile`.
//!
//! A missing or broken zoo is a failure, never a skip: a test that passes without its models checks
//! nothing.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `augur` binary of this build.
pub fn augur() -> Command {
    Command::new(env!("CARGO_BIN_EXE_augur"))
}

/// The unpacked development zoo (`target/zoo-dev`), unpacking it on first use.
///
/// The script unpacks into a fresh folder and renames it into place, so test binaries that run at
/// once never see half a zoo; within a process, the first caller unpacks and the others wait.
pub fn zoo_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo().join("target/zoo-dev");
        let out = Command::new("sh")
            .arg(repo().join("scripts/unpack-zoo.sh"))
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run scripts/unpack-zoo.sh: {e}"));
        assert!(
            out.status.success(),
            "scripts/unpack-zoo.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// A zoo model by its stem (`mobilenet_v2_224`) or file name; fails when the zoo does not have it.
pub fn zoo_model(name: &str) -> PathBuf {
    let file = if name.ends_with(".onnx") {
        name.to_string()
    } else {
        format!("{name}.onnx")
    };
    let p = zoo_dir().join(file);
    assert!(p.is_file(), "{} is not in the development zoo", p.display());
    p
}

/// Every model of the zoo, sorted by path.
pub fn zoo_models() -> Vec<PathBuf> {
    let dir = zoo_dir();
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no models in {}", dir.display());
    v
}

/// `zoo-dev.reference.json`: per model, the reference MACs and PyTorch parameter count.
pub fn zoo_reference() -> PathBuf {
    repo().join("data/zoo/zoo-dev.reference.json")
}

/// Spawns `cmd` (an `augur serve` told to listen on `127.0.0.1:0`, its stdout piped) and returns it
/// with the port it printed in its first line; the rest of its stdout is drained so the daemon
/// never blocks on a full pipe.
pub fn spawn_serve(cmd: &mut Command) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn augur serve: {e}"));
    let out = child.stdout.take().expect("piped stdout");
    let mut lines = std::io::BufReader::new(out).lines();
    let line = lines.next().and_then(Result::ok).unwrap_or_default();
    std::thread::spawn(move || for _ in lines {});
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in augur serve's first line {line:?}"));
    (child, port)
}

/// A fresh temporary directory, removed when the value drops.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("augur-{prefix}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
}

/// A temporary directory that lives as long as the test process: for state shared by several
/// tests (one calibrated profile). Statics are never dropped, so it is removed at exit instead.
pub fn process_scratch(prefix: &str) -> PathBuf {
    static DIRS: std::sync::Mutex<Vec<tempfile::TempDir>> = std::sync::Mutex::new(Vec::new());
    static CLEANUP: std::sync::Once = std::sync::Once::new();
    extern "C" fn remove_all() {
        if let Ok(mut dirs) = DIRS.lock() {
            dirs.clear();
        }
    }
    CLEANUP.call_once(|| {
        // SAFETY: `remove_all` is a plain function that never unwinds into C (it only drops
        // `TempDir`s, whose removal errors are ignored).
        unsafe { libc::atexit(remove_all) };
    });
    let dir = scratch(prefix);
    let path = dir.path().to_path_buf();
    DIRS.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
    path
}

/// A device profile with no regressors (every kernel from its roofline, at `gflops` for compute and
/// memory alike) for `threads` threads: a stand-in board for planning tests, as profile JSON.
pub fn roofline_profile(gflops: f64, threads: usize) -> String {
    let fusion: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("data/fusion/tract.json"))
            .unwrap_or_else(|e| panic!("data/fusion/tract.json: {e}")),
    )
    .unwrap_or_else(|e| panic!("data/fusion/tract.json: {e}"));
    serde_json::json!({
        "format_version": 1,
        "augur_version": "test",
        "created_unix": 0,
        "device": {"cpu_model": "stand-in", "cores": threads, "caches": [], "kernel": "", "arch": ""},
        "runtime": "stand-in",
        "threads": threads,
        "budget": "quick",
        "fusion": fusion,
        "roofline": {"flops_per_second": gflops * 1e9, "bytes_per_second": gflops * 1e9,
                     "overhead_seconds": 1e-6},
        "regressors": {},
        "measurements": []
    })
    .to_string()
}
