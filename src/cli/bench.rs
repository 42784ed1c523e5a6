//! `augur bench`: how long a model really takes on this board, measured with a runtime backend.
use crate::runtime::{
    Backend, Phase, Progress, RunSpec, Timing, TractBackend, backend_from_spec, set_input_shape,
};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs that take longer than this get a progress bar (on a terminal).
const SHOW_PROGRESS_AFTER: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (ONNX).
    pub model: PathBuf,
    /// Threads the runtime may use (0: every core).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// With --warmup above 0, keep warming up until this many seconds have passed as well: a
    /// small model's runs settle only after a few dozen milliseconds, and a served model runs
    /// settled.
    #[arg(long, default_value_t = 0.2)]
    pub warmup_seconds: f64,
    /// Stop timing after this many seconds (at least 3 runs are still taken).
    #[arg(long, default_value_t = 60.0)]
    pub max_seconds: f64,
    /// `tract` (in process), or `cmd:<command template>` with {model}, {threads}, {runs}, {warmup}.
    #[arg(long, default_value = "tract")]
    pub backend: String,
    /// Fix the input shape, e.g. 1,3,160,160.
    #[arg(long, value_parser = InputShape::parse)]
    pub input_shape: Option<InputShape>,
    /// Print JSON instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// An input shape as one argument (clap would take a bare `Vec` for a list of separate values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputShape(pub Vec<usize>);

impl InputShape {
    fn parse(s: &str) -> Result<InputShape, crate::model::ShapeError> {
        super::parse_shape(s).map(InputShape)
    }
}

/// What the timing thread tells the display.
enum Event {
    Progress(Progress),
    Done(anyhow::Result<Timing>),
}

/// Shows a bar once a measurement has run for [`SHOW_PROGRESS_AFTER`]; nothing when stderr is not a
/// terminal.
struct Display {
    start: Instant,
    bar: Option<ProgressBar>,
    last: Option<Progress>,
    enabled: bool,
}

impl Display {
    fn new() -> Display {
        Display {
            start: Instant::now(),
            bar: None,
            last: None,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, p: Option<Progress>) {
        if p.is_some() {
            self.last = p;
        }
        if !self.enabled || self.start.elapsed() < SHOW_PROGRESS_AFTER {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        match self.last {
            Some(p) => {
                let msg = match p.phase {
                    Phase::WarmUp => "warm-up",
                    Phase::Timed => "timed runs",
                };
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg:>10} [{bar:30}] {pos}/{len}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_message(msg);
                bar.set_length(p.total as u64);
                bar.set_position(p.done as u64);
            }
            None => {
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message("loading and timing");
            }
        }
    }

    fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

/// Times the model on a worker thread while this one shows progress.
fn measure(
    args: &Args,
    onnx: &[u8],
    spec: &RunSpec,
    backend: &dyn Backend,
) -> anyhow::Result<Timing> {
    let in_process = args.backend.trim().eq_ignore_ascii_case("tract");
    let (tx, rx) = mpsc::channel::<Event>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let result = (|| -> anyhow::Result<Timing> {
                if in_process {
                    let prepared = TractBackend::new().prepare_with_input_shape(
                        onnx,
                        args.input_shape.as_ref().map(|s| &s.0[..]),
                    )?;
                    Ok(prepared.time_with_progress(spec, &mut |pr| {
                        let _ = tx.send(Event::Progress(pr));
                    })?)
                } else {
                    let reshaped;
                    let bytes = match &args.input_shape {
                        Some(shape) => {
                            reshaped = set_input_shape(onnx, &shape.0)?;
                            &reshaped[..]
                        }
                        None => onnx,
                    };
                    Ok(backend.time_onnx(bytes, spec)?)
                }
            })();
            let _ = tx.send(Event::Done(result));
        });
        let mut display = Display::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Progress(p)) => display.update(Some(p)),
                Ok(Event::Done(r)) => {
                    display.finish();
                    return r;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => display.update(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    display.finish();
                    anyhow::bail!("the measurement stopped without a result");
                }
            }
        }
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.warmup_seconds.is_finite() && (0.0..=600.0).contains(&args.warmup_seconds),
        "--warmup-seconds must be between 0 and 600, not {}",
        args.warmup_seconds
    );
    let backend = backend_from_spec(&args.backend)?;
    let onnx = std::fs::read(&args.model)
        .with_context(|| format!("{}: cannot read", args.model.display()))?;
    let spec = RunSpec {
        threads: args.threads,
        warmup: args.warmup,
        warmup_seconds: args.warmup_seconds,
        runs: usize::try_from(args.runs).unwrap_or(usize::MAX),
        max_seconds: args.max_seconds,
    };
    let t = measure(&args, &onnx, &spec, backend.as_ref())
        .with_context(|| args.model.display().to_string())?;
    let threads = spec.effective_threads();
    let version = backend.version();
    if args.json {
        let out = serde_json::json!({
            "model": args.model.display().to_string(),
            "backend": backend.name(),
            "version": version,
            "latency_ms": {"median": t.median_ms, "p10": t.p10_ms, "p90": t.p90_ms},
            "runs": t.runs,
            "threads": threads,
            "samples_ms": t.samples_ms,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}: median {:.3} ms (p10 {:.3}, p90 {:.3}) over {} runs, {} thread{}, {}",
            args.model.display(),
            t.median_ms,
            t.p10_ms,
            t.p90_ms,
            t.runs,
            threads,
            if threads == 1 { "" } else { "s" },
            version
        );
    }
    Ok(())
}
