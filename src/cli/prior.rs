//! `augur prior`: generates the layer-configuration prior calibration samples (how the shipped
//! `layers.json` is made): kernels of networks drawn from the design space of CNN families, so no
//! model augur is judged on lends it its layers.
use crate::calibrate::prior::Prior;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many networks to draw (consecutive indices go round the families).
    #[arg(long, value_name = "N")]
    pub generate: usize,
    /// Seed of the network stream.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep at most about this many configurations (each kind keeps its share).
    #[arg(long, default_value_t = 1000)]
    pub max: usize,
    /// Where to write the prior JSON.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let prior = Prior::generate(args.seed, args.generate, args.max)?;
    crate::util::write_atomic(&args.out, serde_json::to_string_pretty(&prior)?.as_bytes())?;
    eprintln!(
        "{} configurations from {} generated networks → {}",
        prior.kernels.len(),
        args.generate,
        args.out.display()
    );
    Ok(())
}
