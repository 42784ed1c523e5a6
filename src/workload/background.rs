//! Background load in a child process (`augur load …`), so that the sensors see it as another job's
//! work — load threads inside augur would count as augur's own CPU. The child stops at its deadline,
//! when this guard drops, and when augur dies (parent-death signal).
use super::load::LoadKind;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct BackgroundLoad {
    child: Option<Child>,
    pub kind: LoadKind,
}

/// The command-line form of a load, as `augur load` takes it.
pub fn load_args(kind: LoadKind, max: Duration) -> Vec<String> {
    let (k, threads, bytes) = match kind {
        LoadKind::Cpu { threads } => ("cpu", threads, 0),
        LoadKind::Memory { threads, bytes } => ("memory", threads, bytes),
        LoadKind::Cache { threads, bytes } => ("cache", threads, bytes),
    };
    vec![
        "load".into(),
        "--kind".into(),
        k.into(),
        "--threads".into(),
        threads.to_string(),
        "--bytes".into(),
        bytes.to_string(),
        "--seconds".into(),
        format!("{:.1}", max.as_secs_f64()),
    ]
}

impl BackgroundLoad {
    /// Starts the load for at most `max`.
    pub fn start(kind: LoadKind, max: Duration) -> std::io::Result<BackgroundLoad> {
        BackgroundLoad::start_with(&std::env::current_exe()?, kind, max)
    }

    /// Starts the load with an explicit `augur` binary (tests, where the current exe is the harness).
    pub fn start_with(
        exe: &std::path::Path,
        kind: LoadKind,
        max: Duration,
    ) -> std::io::Result<BackgroundLoad> {
        let child = Command::new(exe)
            .args(load_args(kind, max))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(BackgroundLoad {
            child: Some(child),
            kind,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for BackgroundLoad {
    fn drop(&mut self) {
        self.kill();
    }
}

/// In the child: die with the parent, so a killed augur never leaves load behind.
pub fn die_with_parent() {
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets a flag on this process.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
}
