//! `augur plan`: where to run a model — here, split with another board, or there — ranked, with the
//! chance of meeting a deadline; and `augur split`, which writes the two halves of a chosen cut.
//!
//! The other board is a profile file (predicted on a quiet board) or a running augur daemon's URL,
//! asked for its live per-kernel prediction of the model ([`crate::plan::remote`]; such options are
//! marked `remote_live`).
use crate::kernels::decompose;
use crate::model::export::{SourceValues, to_onnx_bytes_with};
use crate::plan::{Ask, CutOptions, Link, Local, Plan, Prepared, RankBy, Remote, Source};
use crate::predict::Predictor;
use crate::profile::{Profile, Roofline};
use anyhow::Context;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file: ONNX, or nn-Meter IR JSON.
    pub model: PathBuf,
    /// This board's profile (default: `profile` of config/augur.toml).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// The other board: its profile file (predicted on a quiet board), or a running augur daemon's
    /// address, http://host:port (asked for its live prediction of the model).
    #[arg(long)]
    pub remote: Option<String>,
    /// File holding the bearer token of a --remote daemon that wants one.
    #[arg(long)]
    pub remote_token_file: Option<PathBuf>,
    /// Link bandwidth to the other board, megabits per second (needed with --remote).
    #[arg(long)]
    pub link_mbps: Option<f64>,
    /// Link round-trip time, milliseconds.
    #[arg(long, default_value_t = 0.0)]
    pub rtt_ms: f64,
    /// Deadline of one inference, milliseconds: each option gets its chance of meeting it.
    #[arg(long)]
    pub deadline_ms: Option<f64>,
    /// Rank by `latency`, `memory` (local peak, then latency) or `energy` (this board's, above idle:
    /// needs a profile with power figures; options that use the link have none and come last).
    #[arg(long, default_value = "latency")]
    pub by: String,
    /// Most tensors a cut may send (1, or 2 to cut through residual blocks).
    #[arg(long, default_value_t = 1)]
    pub max_crossing: usize,
    /// Fix the input shape, e.g. 1,3,160,160.
    #[arg(long, value_parser = super::parse_shape)]
    pub input_shape: Option<super::Shape>,
    /// Thread counts to offer here: `all` (1 to the board's cores), or a list such as `1,2`
    /// (default: the profile's own count).
    #[arg(long)]
    pub threads: Option<String>,
    /// Threads the other board runs its part with (default: its profile's count, or the remote
    /// daemon's).
    #[arg(long)]
    pub remote_threads: Option<usize>,
    /// Ignore the live state (plan for a quiet board).
    #[arg(long)]
    pub r#static: bool,
    #[command(flatten)]
    pub state: super::StateFrom,
    #[arg(long)]
    pub json: bool,
}

/// Whether a `--remote` names another augur daemon rather than a profile file.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// A board known by its profile: the predictor and the model decomposed by its fusion rules.
struct Board {
    predictor: Predictor,
    d: crate::kernels::Decomposition,
    base: crate::predict::BasePrediction,
    threads: usize,
}

fn board(p: Profile, g: &crate::model::Graph, what: &Path) -> anyhow::Result<Board> {
    let d = decompose(g, &p.fusion).map_err(|e| anyhow::anyhow!("{}: {e}", what.display()))?;
    let threads = p.threads.max(1);
    let predictor = Predictor::new(Some(p), Roofline::default());
    let base = predictor.base(&d);
    Ok(Board {
        predictor,
        d,
        base,
        threads,
    })
}

/// The thread counts to offer on this board: `--threads all`, a list, or the profile's own count.
fn local_threads(arg: Option<&str>, here: &Board) -> anyhow::Result<Vec<usize>> {
    let Some(arg) = arg else {
        return Ok(vec![here.threads]);
    };
    if arg.trim() == "all" {
        return Ok((1..=here.predictor.max_threads()).collect());
    }
    let mut counts = Vec::new();
    for word in arg.split(',') {
        let n: usize = word.trim().parse().map_err(|_| {
            anyhow::anyhow!("--threads {arg}: give `all` or thread counts such as 1,2")
        })?;
        let n = here
            .predictor
            .check_threads(n)
            .map_err(|e| anyhow::anyhow!("--threads: {e}"))?;
        if !counts.contains(&n) {
            counts.push(n);
        }
    }
    Ok(counts)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let by = args.by.parse::<RankBy>()?;
    if let Some(d) = args.deadline_ms {
        crate::plan::check_deadline(d)?;
    }
    if !(1..=crate::plan::cuts::MAX_CROSSING).contains(&args.max_crossing) {
        anyhow::bail!(
            "--max-crossing {}: give 1 or {}",
            args.max_crossing,
            crate::plan::cuts::MAX_CROSSING
        );
    }
    let link = match (&args.remote, args.link_mbps) {
        (Some(_), None) => anyhow::bail!("--remote needs --link-mbps (the link's bandwidth)"),
        (_, Some(b)) => Some(Link::new(b, args.rtt_ms)?),
        (None, None) => None,
    };
    let daemon = match &args.remote {
        Some(r) if is_url(r) => Some(crate::plan::remote::Daemon::new(
            r,
            args.remote_token_file.as_deref(),
        )?),
        _ if args.remote_token_file.is_some() => {
            anyhow::bail!("--remote-token-file needs --remote with a daemon's http:// address")
        }
        _ => None,
    };
    let remote_profile = match &args.remote {
        Some(r) if is_url(r) => None,
        Some(r) => {
            // A remote profile is from another board by design: the board warning does not apply.
            let (p, _) = Profile::load(Path::new(r), &crate::profile::tract_runtime())?;
            Some(p)
        }
        None => None,
    };
    let profile = super::predict::load_profile(args.profile.as_deref())?;
    let g = crate::model::import_path(&args.model, args.input_shape.as_deref())?;
    let here = board(profile, &g, &args.model)?;
    let there = remote_profile
        .map(|p| board(p, &g, &args.model))
        .transpose()?;
    let state = args.state.snapshot(args.r#static)?;
    let m = Prepared::new(
        &g,
        &here.d,
        CutOptions {
            max_tensors: args.max_crossing,
        },
    );
    let threads = local_threads(args.threads.as_deref(), &here)?;
    let remote_threads = match (args.remote_threads, &there) {
        (Some(n), Some(b)) => Some(
            b.predictor
                .check_threads(n)
                .map_err(|e| anyhow::anyhow!("--remote-threads: {e}"))?,
        ),
        // The daemon checks the count against its own board's cores.
        (Some(n), None) if daemon.is_some() => Some(n),
        (Some(_), None) => anyhow::bail!("--remote-threads needs --remote"),
        (None, _) => None,
    };
    let answered = match &daemon {
        Some(d) => {
            // The same bytes the graph was imported from, so that both sides import one model.
            let bytes = std::fs::read(&args.model)
                .with_context(|| format!("{}: cannot read", args.model.display()))?;
            Some(d.predict(
                &bytes,
                args.input_shape.as_deref(),
                here.d.macs,
                remote_threads,
            )?)
        }
        None => None,
    };
    let local = Local {
        predictor: &here.predictor,
        d: &here.d,
        base: &here.base,
        state: &state,
        threads: &threads,
        learned: None,
    };
    let mut remotes: Vec<Remote> = there
        .iter()
        .map(|b| Remote {
            name: None,
            source: Source::Profile {
                predictor: &b.predictor,
                d: &b.d,
                base: &b.base,
            },
            threads: remote_threads.unwrap_or(b.threads),
        })
        .collect();
    remotes.extend(answered.iter().map(|a| Remote {
        name: None,
        source: Source::Answered(&a.answered),
        threads: a.threads,
    }));
    let ask = Ask {
        link,
        deadline_ms: args.deadline_ms,
        by,
    };
    let plan = crate::plan::plan(&m, &local, &remotes, &ask)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", table(&plan));
        match (&args.remote, &answered) {
            (Some(url), Some(_)) => println!("remote parts: the live prediction of {url}"),
            (Some(_), None) => println!("remote parts: the remote profile, on a quiet board"),
            _ => {}
        }
    }
    Ok(())
}

/// The options as a table, best first; the cut comes last and whole (`augur split --cut` takes it).
pub fn table(p: &Plan) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<3} {:<9} {:>3} {:>10} {:>19} {:>6} {:>9} {:>10} {:>9} {:>10} {:>9}  cut",
        "#",
        "placement",
        "thr",
        "ms",
        "interval ms",
        "p",
        "local ms",
        "sent KiB",
        "remote ms",
        "local MiB",
        "local J"
    );
    for (i, x) in p.options.iter().enumerate() {
        let placement = serde_json::to_value(x.placement)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let pd = x
            .p_deadline
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "-".into());
        let joules = x
            .energy_joules
            .map(|j| format!("{j:.4}"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "{:<3} {:<9} {:>3} {:>10.2} {:>9.2}–{:<9.2} {:>6} {:>9.2} {:>10.1} {:>9.2} {:>10.1} {:>9}  {}",
            i + 1,
            placement,
            x.threads,
            x.latency_ms,
            x.interval_ms[0],
            x.interval_ms[1],
            pd,
            x.local_ms,
            x.transfer_bytes as f64 / 1024.0,
            x.remote_ms,
            x.local_peak_memory_bytes as f64 / 1048576.0,
            joules,
            x.cut.as_deref().unwrap_or("-")
        );
    }
    o
}

#[derive(clap::Args, Debug)]
pub struct SplitArgs {
    /// Model file: ONNX, or nn-Meter IR JSON.
    pub model: PathBuf,
    /// The cut, by the name `augur plan` gives it.
    #[arg(long)]
    pub cut: String,
    /// Folder to write prefix.onnx and suffix.onnx into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// The profile whose fusion rules place the cuts (default: tract's built-in rules).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Fix the input shape, e.g. 1,3,160,160.
    #[arg(long, value_parser = super::parse_shape)]
    pub input_shape: Option<super::Shape>,
}

pub fn split(args: SplitArgs) -> anyhow::Result<()> {
    let file = args.model.display().to_string();
    let bytes = std::fs::read(&args.model).with_context(|| format!("{file}: cannot read"))?;
    let g = crate::model::import_bytes(&bytes, &file, args.input_shape.as_deref())?;
    let rules = match &args.profile {
        Some(p) => super::predict::load_profile(Some(p))?.fusion,
        None => crate::kernels::FusionRules::tract_default(),
    };
    let d = decompose(&g, &rules).map_err(|e| anyhow::anyhow!("{}: {e}", args.model.display()))?;
    let cuts = crate::plan::cuts::cut_points(
        &g,
        &d,
        CutOptions {
            max_tensors: crate::plan::cuts::MAX_CROSSING,
        },
    );
    let Some(cut) = cuts.iter().find(|c| c.name == args.cut) else {
        let some: Vec<&str> = cuts.iter().take(5).map(|c| c.name.as_str()).collect();
        anyhow::bail!(
            "{}: no cut `{}` ({} cuts; e.g. {}); `augur plan` names them",
            args.model.display(),
            args.cut,
            cuts.len(),
            if some.is_empty() {
                "none".to_string()
            } else {
                some.join(", ")
            }
        );
    };
    let halves = crate::plan::split::split(&g, cut);
    // The halves carry the model's own weights, so the deployed pair computes what the model does
    // (and a runtime shares identical tensors in a half as it does in the whole). An nn-Meter IR
    // model has shapes only.
    let values = match crate::model::sniff(&bytes) {
        crate::model::Format::Onnx => {
            let dir = args.model.parent().unwrap_or(Path::new(""));
            SourceValues::from_bytes(&bytes, &file, dir)?
        }
        crate::model::Format::NnMeterIr => SourceValues::none(),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the folder", args.out.display()))?;
    let mut placeholders = Vec::new();
    for (name, part) in [
        ("prefix.onnx", &halves.prefix),
        ("suffix.onnx", &halves.suffix),
    ] {
        let written = to_onnx_bytes_with(part, &values)?;
        let path = args.out.join(name);
        crate::util::write_atomic(&path, &written.bytes)
            .with_context(|| format!("{}: cannot write", path.display()))?;
        println!("{}", path.display());
        placeholders.extend(written.placeholders);
    }
    if !placeholders.is_empty() {
        let why = if values.is_empty() {
            "the model file holds no weights"
        } else {
            "the model file has no tensor of that name and shape (a constant augur folds)"
        };
        eprintln!(
            "warning: {} weight tensor(s) of the halves are a placeholder pattern, e.g. `{}`: {why}; \
             the halves time as the model does, but their outputs are not the model's",
            placeholders.len(),
            placeholders[0]
        );
    }
    Ok(())
}
