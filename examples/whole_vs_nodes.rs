//! Development aid: for generated networks of the design space (never the evaluation models), the
//! whole-network time `augur bench` would report beside the sum of tract's per-node times that
//! calibration learns from (sums of first quartiles and of medians, and the time of nodes no kernel
//! owns). Alternates the two measurements so that a change of the board's speed hits both alike.
//! Nothing here is fitted; it shows whether kernel sums and whole runs agree.
//!
//! Usage: whole_vs_nodes SEED FIRST COUNT
use augur::calibrate::innet::attribute;
use augur::kernels::{FusionRules, decompose};
use augur::runtime::{Backend, RunSpec, TractBackend};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut next = |what: &str| -> Result<u64, Box<dyn std::error::Error>> {
        Ok(args
            .next()
            .ok_or(format!(
                "usage: whole_vs_nodes SEED FIRST COUNT (missing {what})"
            ))?
            .parse()?)
    };
    let (seed, first, count) = (next("SEED")?, next("FIRST")?, next("COUNT")?);
    let backend = TractBackend::new();
    let spec = RunSpec {
        threads: 1,
        warmup: 2,
        warmup_seconds: 0.0,
        runs: 9,
        max_seconds: 3.0,
    };
    println!(
        "net\tnodes\tkernels\twhole_ms\tp25_sum_ms\tmedian_sum_ms\tunattributed_ms\tp25/whole\tname"
    );
    for i in first..first + count {
        let g = augur::model::families::network(seed, i as usize)?;
        let d = decompose(&g, &FusionRules::tract_default())?;
        if d.macs > 8_000_000_000 {
            continue;
        }
        let bytes = augur::model::export::to_onnx_bytes(&g)?;
        let whole = backend.time_onnx(&bytes, &spec)?;
        let Some(nodes) = backend.time_per_node_onnx(&bytes, &spec)? else {
            return Err("this backend cannot time per node".into());
        };
        let a = attribute(&g, &d, &nodes);
        let p25: f64 = a.kernel_ms.iter().sum();
        let median: f64 = nodes.iter().map(|n| n.median_ms).sum();
        println!(
            "{i}\t{}\t{}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{}",
            nodes.len(),
            d.kernels.len(),
            whole.median_ms,
            p25,
            median,
            a.unattributed_ms,
            p25 / whole.median_ms,
            g.name
        );
    }
    Ok(())
}
