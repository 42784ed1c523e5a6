//! `augur prior`: derives the layer-configuration prior from model files (how `data/prior/layers.json`
//! was made from the development zoo).
use crate::calibrate::prior::Prior;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model files whose layers make the prior.
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
    /// Where to write the prior JSON.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for m in &args.models {
        let d = super::inspect::load(m, None)?;
        all.extend(d.kernels);
    }
    let names: Vec<String> = args
        .models
        .iter()
        .filter_map(|m| m.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let prior = Prior::from_kernels(
        all.iter(),
        &format!("layer configurations of: {}", names.join(", ")),
    );
    crate::util::write_atomic(&args.out, serde_json::to_string_pretty(&prior)?.as_bytes())?;
    eprintln!(
        "{} configurations from {} models → {}",
        prior.kernels.len(),
        args.models.len(),
        args.out.display()
    );
    Ok(())
}
