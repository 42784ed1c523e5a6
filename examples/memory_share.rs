//! Development aid: prints each model's memory share under a profile (kernel memory shares weighted by
//! the kernels' quiet-board times), to compare how far models of different shares slow in a spell.
//!
//! Usage: memory_share PROFILE MODEL[@N,C,H,W]...
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (profile, models) = args
        .split_first()
        .ok_or("usage: memory_share PROFILE MODEL...")?;
    let (p, _) = augur::profile::Profile::load(
        std::path::Path::new(profile),
        &augur::profile::tract_runtime(),
    )?;
    let rules = p.fusion.clone();
    let pred = augur::predict::Predictor::new(Some(p), augur::profile::Roofline::default());
    for m in models {
        let (path, shape) = match m.split_once('@') {
            Some((a, s)) => (
                a,
                Some(
                    s.split(',')
                        .map(|x| x.parse())
                        .collect::<Result<Vec<usize>, _>>()?,
                ),
            ),
            None => (m.as_str(), None),
        };
        let g = augur::model::import_path(std::path::Path::new(path), shape.as_deref())?;
        let d = augur::kernels::decompose(&g, &rules)?;
        let b = pred.base(&d);
        let share: f64 = b
            .kernels
            .iter()
            .zip(&b.memory_share)
            .map(|(k, s)| k.0 * s)
            .sum::<f64>()
            / b.latency_ms;
        let kinds: Vec<String> = augur::kernels::KernelKind::ALL
            .iter()
            .zip(&b.kind_shares)
            .filter(|(_, s)| **s > 0.005)
            .map(|(k, s)| format!("{k:?}={s:.2}"))
            .collect();
        let cache: f64 = b.cache_ms.iter().sum();
        println!(
            "{m} {:.3} mem {:.3} dram {:.3} {}",
            b.latency_ms,
            share,
            cache / b.latency_ms,
            kinds.join(",")
        );
    }
    Ok(())
}
