//! `augur inspect`: a model's kernels as a table with totals, or as JSON.
use crate::kernels::{Decomposition, FusionRules, decompose};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file: ONNX, or nn-Meter IR JSON.
    pub model: PathBuf,
    /// Fix the input shape, e.g. 1,3,160,160.
    #[arg(long, value_parser = super::parse_shape)]
    pub input_shape: Option<super::Shape>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Imports and decomposes a model file with the built-in runtime's fusion rules.
pub fn load(path: &Path, input_shape: Option<&[usize]>) -> anyhow::Result<Decomposition> {
    let g = crate::model::import_path(path, input_shape)?;
    let d = decompose(&g, &FusionRules::tract_default())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(d)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let d = load(&args.model, args.input_shape.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(());
    }
    println!(
        "{:<4} {:<13} {:<44} {:>18} {:>12} {:>10}",
        "#", "kind", "ops", "output", "MMACs", "AI"
    );
    for (i, k) in d.kernels.iter().enumerate() {
        let ops = k.ops.join("+");
        let ops = if ops.len() > 44 {
            format!("{}…", &ops[..43])
        } else {
            ops
        };
        let shape = k
            .output_shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        println!(
            "{:<4} {:<13} {:<44} {:>18} {:>12.2} {:>10.2}",
            i,
            k.kind.name(),
            ops,
            shape,
            k.macs as f64 / 1e6,
            k.arithmetic_intensity
        );
    }
    println!();
    println!("kernels            {}", d.kernels.len());
    println!("MACs               {:.1} M", d.macs as f64 / 1e6);
    println!("params             {:.2} M", d.params as f64 / 1e6);
    println!(
        "weights            {:.1} MiB",
        d.weights_bytes as f64 / 1048576.0
    );
    println!(
        "peak activations   {:.1} MiB",
        d.peak_activation_bytes as f64 / 1048576.0
    );
    println!(
        "peak memory        {:.1} MiB",
        d.peak_memory_bytes as f64 / 1048576.0
    );
    Ok(())
}
