//! `augur observe`: feeds a JSON-lines log of observed latencies to the online learner, offline.
//! Each line: `{"model": "path.onnx", "latency_ms": 12.3, "threads"?: 1, "state"?: {…snapshot…}}`.
use crate::predict::{Job, Learner, Predictor};
use crate::profile::Roofline;
use serde::Deserialize;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The log, one observation per line (`-` for standard input).
    pub log: PathBuf,
    /// Device profile (default: `profile` of config/augur.toml).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// The learner's state file: read if present, written back atomically (default:
    /// `offline-learner.json` in the data directory, `$XDG_DATA_HOME/augur` or `~/.local/share/augur`).
    #[arg(long, default_value_os_t = crate::config::default_learner_path())]
    pub learner: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Deserialize)]
struct Line {
    model: PathBuf,
    latency_ms: f64,
    #[serde(default = "one")]
    threads: usize,
    #[serde(default)]
    state: crate::sense::Snapshot,
}

fn one() -> usize {
    1
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let profile = super::predict::load_profile(args.profile.as_deref())?;
    let predictor = Predictor::new(Some(profile), Roofline::default());
    let mut learner = Learner::load(&args.learner, 4096)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.learner.display()))?;
    let reader: Box<dyn BufRead> = if args.log.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(&args.log)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.log.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut models: HashMap<
        PathBuf,
        (
            crate::kernels::Decomposition,
            crate::predict::BasePrediction,
        ),
    > = HashMap::new();
    let (mut accepted, mut rejected, mut bad) = (0usize, 0usize, 0usize);
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let obs: Line = match serde_json::from_str(&line) {
            Ok(o) => o,
            Err(e) => {
                bad += 1;
                eprintln!("{}:{}: not an observation: {e}", args.log.display(), n + 1);
                continue;
            }
        };
        if !models.contains_key(&obs.model) {
            let d = super::inspect::load(&obs.model, None)?;
            let base = predictor.base(&d);
            models.insert(obs.model.clone(), (d, base));
        }
        let Some((d, base)) = models.get(&obs.model) else {
            continue;
        };
        let key = obs.model.display().to_string();
        let job = Job {
            model: &key,
            d,
            base,
            threads: obs.threads,
        };
        match predictor.observe(&job, &obs.state, &mut learner, obs.latency_ms) {
            Ok(_) => accepted += 1,
            Err(e) => {
                rejected += 1;
                eprintln!("{}:{}: rejected: {e}", args.log.display(), n + 1);
            }
        }
    }
    learner
        .save(&args.learner)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.learner.display()))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"accepted": accepted, "rejected": rejected, "malformed": bad,
                "learner": args.learner.display().to_string(), "weights": learner.w, "observations": learner.observations,
                "resets": learner.resets})
        );
    } else {
        println!(
            "{accepted} learned, {rejected} rejected, {bad} malformed; learner in {} ({} observations in all)",
            args.learner.display(),
            learner.observations
        );
    }
    Ok(())
}
