//! The background loads that calibration and `eval --scenarios` start as `augur load` child
//! processes: they stop when their guard drops, at their deadline, and when their parent dies.
use augur::workload::background::BackgroundLoad;
use augur::workload::load::LoadKind;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AUGUR: &str = env!("CARGO_BIN_EXE_augur");

/// Running (not ended, not a zombie waiting for its reaper).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn ends_within(pid: u32, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if !running(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !running(pid)
}

#[test]
fn a_load_stops_when_its_guard_drops() {
    let load = BackgroundLoad::start_with(
        std::path::Path::new(AUGUR),
        LoadKind::Cpu { threads: 1 },
        Duration::from_secs(60),
    )
    .unwrap();
    let pid = load.pid().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(running(pid), "the load did not start");
    drop(load);
    assert!(
        ends_within(pid, Duration::from_secs(2)),
        "load {pid} outlived its guard"
    );
}

#[test]
fn a_load_stops_at_its_deadline() {
    let t = Instant::now();
    let status = Command::new(AUGUR)
        .args([
            "load",
            "--kind",
            "memory",
            "--bytes",
            "1048576",
            "--seconds",
            "0.5",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn a_load_dies_with_its_parent() {
    // A shell stands in for augur: it starts the load, prints its pid, and is killed with -9, which
    // runs no destructor; the parent-death signal must end the load.
    let mut parent = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{AUGUR}' load --kind cpu --threads 1 --seconds 60 & echo $!; sleep 60"
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(parent.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let pid: u32 = line.trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(running(pid), "the load did not start");
    parent.kill().unwrap();
    parent.wait().unwrap();
    let ended = ends_within(pid, Duration::from_secs(3));
    if !ended {
        // Do not leave it behind for the tests that follow.
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(ended, "load {pid} outlived its parent");
}
