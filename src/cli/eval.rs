//! `augur eval`: the evaluation protocol of [`crate::eval`] on this board — parse, run, print.
use crate::eval::protocol::{Progress, Report};
use crate::eval::{Board, FlopsProxy, Passes, Plan, Subject, Summary};
use crate::predict::Predictor;
use crate::profile::Roofline;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model files.
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
    /// Device profile (default: `profile` of config/augur.toml).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Threads for measuring and predicting: 1 to the board's cores (counts other than the
    /// profile's are predicted through its calibrated thread scaling).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Passes over the models (default: as many as make the run span --span-s, at least 3).
    #[arg(long)]
    pub passes: Option<usize>,
    /// Seconds the run spans when --passes is not given: a regime switch of the board then
    /// falls inside the run instead of between the models.
    #[arg(long, default_value_t = 600.0)]
    pub span_s: f64,
    /// Seconds each model runs per measurement.
    #[arg(long, alias = "window", default_value_t = 2.0)]
    pub window_s: f64,
    /// Timed runs per measurement, at least.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Feed each measurement back to the online learner, as a scheduler would.
    #[arg(long)]
    pub observe: bool,
    /// Seed of the passes' orders.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Evaluate under background load: any of quiet,cpu,mem,cache (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let profile = super::predict::load_profile(args.profile.as_deref())?;
    let flops = FlopsProxy::fit(&profile);
    let predictor = Predictor::new(Some(profile), Roofline::default());
    predictor.check_threads(args.threads)?;
    if predictor.slowdown.reference_workload_cpu_ms <= 0.0 && !args.json {
        eprintln!(
            "augur: note: the profile has no reference-workload timing (made before it existed); predicting without the speed term"
        );
    }
    let backend = crate::runtime::TractBackend::default();
    let mut subjects = Vec::new();
    let mut prepared = Vec::new();
    for m in &args.models {
        let d = super::inspect::load(m, None)?;
        let base = predictor.base(&d);
        prepared
            .push(backend.prepare(
                &std::fs::read(m).map_err(|e| anyhow::anyhow!("{}: {e}", m.display()))?,
            )?);
        let name = m
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        subjects.push(Subject { name, d, base });
    }
    // Said once for the run: every model gets the same note.
    let notes = subjects
        .first()
        .map(|s| predictor.thread_scale(&s.d, args.threads).notes)
        .unwrap_or_default();
    if !args.json {
        for n in &notes {
            eprintln!("augur: note: {n}");
        }
    }
    let mut board = Board::new(
        prepared,
        args.window_s,
        args.runs,
        args.threads,
        predictor.slowdown.reference_workload_cpu_ms > 0.0,
    )?;
    let plan = Plan {
        passes: match args.passes {
            Some(p) => Passes::Fixed(p.max(1)),
            None => Passes::Span {
                seconds: args.span_s,
                min: 3,
            },
        },
        observe: args.observe,
        seed: args.seed,
        threads: args.threads,
        flops,
    };
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix}pass {msg} [{bar:30}] {pos}/{len} ~{eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let tick = |prefix: &str, p: &Progress| {
        bar.set_length(p.expected as u64);
        bar.set_position(p.done as u64);
        bar.set_prefix(prefix.to_string());
        bar.set_message(format!("{} {}", p.pass, p.model));
    };
    let protocol = serde_json::json!({
        "window_s": args.window_s, "runs": args.runs, "threads": args.threads, "notes": notes,
    });
    if !args.scenarios.is_empty() {
        let reports = crate::eval::scenarios::run(
            &predictor,
            &subjects,
            &mut board,
            &args.scenarios,
            &plan,
            &mut |sc, p| tick(&format!("{sc} "), p),
        )?;
        bar.finish_and_clear();
        if args.json {
            let v = serde_json::json!({"protocol": protocol, "scenarios": reports});
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            super::scenarios::print(&reports);
        }
        return Ok(());
    }
    board.settle()?;
    let report = crate::eval::protocol::run(&predictor, &subjects, &mut board, &plan, &mut |p| {
        tick("", p)
    })?;
    bar.finish_and_clear();
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("protocol".into(), protocol);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print(&report);
    Ok(())
}

/// One summary line: `name` and its figures.
pub fn summary_line(name: &str, s: &Summary) -> String {
    format!(
        "{name:<22} MAPE {:>6.2} %   median {:>+6.1} %   within ±10 %: {:>5.1} %   ±5 %: {:>5.1} %   (n = {})",
        s.mape_pct,
        s.median_signed_pct,
        s.within_10_pct * 100.0,
        s.within_5_pct * 100.0,
        s.n
    )
}

fn print(r: &Report) {
    println!(
        "{:<26} {:>10} {:>10} {:>8} {:>8} {:>8} {:>7}  per pass",
        "model", "predicted", "measured", "error", "static", "FLOPs", "floor"
    );
    for m in &r.models {
        let passes: Vec<String> = m
            .passes
            .iter()
            .map(|p| format!("{:+.1}", p.error_pct))
            .collect();
        println!(
            "{:<26} {:>7.2} ms {:>7.2} ms {:>+7.1}% {:>+7.1}% {:>8} {:>6.1}%  {}",
            m.model,
            m.predicted_ms,
            m.measured_ms,
            m.error_pct,
            m.static_error_pct,
            m.baseline_error_pct
                .map_or("-".to_string(), |e| format!("{e:+.1}%")),
            m.floor_mape_pct,
            passes.join(" ")
        );
    }
    println!(
        "{} passes in {:.0} s{}",
        r.passes,
        r.seconds,
        if r.observe {
            format!(
                ", observing (refused {}, learner resets {})",
                r.observations_refused, r.learner_resets
            )
        } else {
            String::new()
        }
    );
    println!("{}", summary_line("augur (means)", &r.summary));
    println!("{}", summary_line("augur (each pass)", &r.per_pass));
    println!("{}", summary_line("augur (first pass)", &r.first_pass));
    if let Some(u) = &r.unlearned {
        println!("{}", summary_line("augur, not learning", u));
    }
    println!("{}", summary_line("static", &r.static_));
    if let Some(b) = &r.baseline_flops {
        println!("{}", summary_line("FLOPs proxy", b));
    }
    println!("{}", summary_line("noise floor", &r.noise_floor));
    for line in r.reliability.lines() {
        println!("{line}");
    }
    if let Some(t) = &r.speed_tracking {
        let at: Vec<String> = t
            .mape_pct_at
            .iter()
            .map(|[e, m]| format!("{e}: {m:.1} %"))
            .collect();
        println!(
            "speed tracking: measured/predicted rose {:.2} ± {:.2} per unit of the reference's log ratio ({} readings, spread {:.1} %); MAPE at elasticity {}",
            t.slope,
            t.slope_stderr,
            t.pairs,
            100.0 * t.ratio_spread,
            at.join(", ")
        );
    }
}
