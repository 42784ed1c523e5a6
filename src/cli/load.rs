//! `augur load` (hidden): runs a bounded background load; calibration and `eval --scenarios` start it
//! as a child process so that it counts as another job's work.
use crate::workload::load::{LoadGuard, LoadKind};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// cpu, memory or cache.
    #[arg(long)]
    pub kind: String,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Buffer per thread for memory and cache loads.
    #[arg(long, default_value_t = 0)]
    pub bytes: usize,
    /// Stops by itself after this long.
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::workload::background::die_with_parent();
    let kind = match args.kind.as_str() {
        "cpu" => LoadKind::Cpu {
            threads: args.threads,
        },
        "memory" => LoadKind::Memory {
            threads: args.threads,
            bytes: args.bytes.max(1 << 20),
        },
        "cache" => LoadKind::Cache {
            threads: args.threads,
            bytes: args.bytes.max(1 << 20),
        },
        other => anyhow::bail!("unknown load kind `{other}` (cpu, memory, cache)"),
    };
    let max = Duration::from_secs_f64(args.seconds.clamp(0.1, 3600.0));
    let guard = LoadGuard::start(kind, max)?;
    std::thread::sleep(max);
    guard.stop();
    Ok(())
}
