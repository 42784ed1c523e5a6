//! The `augur` binary: parses the command line and turns every error into one clear line.
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "augur",
    version,
    about = "How long will this network take on this board, right now?"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's kernels, MACs, parameters and memory.
    Inspect(augur::cli::inspect::Args),
    /// Run the prediction daemon (HTTP API, metrics, systemd notify).
    Serve(augur::cli::serve::Args),
    /// Time a model on this board with a runtime backend (tract in process, or a command).
    Bench(augur::cli::bench::Args),
    /// Measure this board and write its device profile.
    Calibrate(augur::cli::calibrate::Args),
    /// Predict a model's latency and memory on this board, now.
    Predict(augur::cli::predict::Args),
    /// Where to run a model: here, split with another board, or there; ranked, with deadline odds.
    Plan(augur::cli::plan::Args),
    /// Write the two halves of a model cut at a cut point (prefix.onnx, suffix.onnx).
    Split(augur::cli::plan::SplitArgs),
    /// Measure and predict models; report the errors beside a FLOPs baseline.
    Eval(augur::cli::eval::Args),
    /// Feed a JSON-lines log of observed latencies to the online learner.
    Observe(augur::cli::observe::Args),
    /// Run a bounded background load (used by calibrate and eval --scenarios).
    #[command(hide = true)]
    Load(augur::cli::load::Args),
    /// Show the board's live state and which sensors are live (and why the others are not).
    State(augur::cli::state::Args),
    /// Generate the layer-configuration prior calibration samples, from networks of the design space.
    #[command(hide = true)]
    Prior(augur::cli::prior::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AUGUR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Panics inside dependencies (tract) are caught where they can happen and reported as errors; the
    // default hook would still print them, with a backtrace under RUST_BACKTRACE, so it only logs.
    std::panic::set_hook(Box::new(|info| tracing::debug!("caught panic: {info}")));
    let cli = Cli::parse();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match cli.command {
        Command::Inspect(a) => augur::cli::inspect::run(a),
        Command::Serve(a) => augur::cli::serve::run(a),
        Command::Bench(a) => augur::cli::bench::run(a),
        Command::Calibrate(a) => augur::cli::calibrate::run(a),
        Command::Predict(a) => augur::cli::predict::run(a),
        Command::Plan(a) => augur::cli::plan::run(a),
        Command::Split(a) => augur::cli::plan::split(a),
        Command::Eval(a) => augur::cli::eval::run(a),
        Command::Observe(a) => augur::cli::observe::run(a),
        Command::Load(a) => augur::cli::load::run(a),
        Command::State(a) => augur::cli::state::run(a),
        Command::Prior(a) => augur::cli::prior::run(a),
    }))
    .unwrap_or_else(|payload| {
        let msg = augur::util::panic::panic_message(payload.as_ref(), "no message");
        Err(anyhow::anyhow!("internal error: {msg}"))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain joined, no backtrace.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            // Names from the file may hold newlines or escapes: keep the message on one line.
            let mut line = String::new();
            for c in msg.join(": ").chars() {
                if c.is_control() {
                    line.extend(c.escape_default());
                } else {
                    line.push(c);
                }
            }
            eprintln!("augur: error: {line}");
            ExitCode::FAILURE
        }
    }
}
