//! Development aid: for generated networks of the design space (never the evaluation models), each
//! sampled cut's two halves timed end to end as models of their own beside the sums of the whole
//! network's per-node times (attributed to augur's kernels, as calibration learns them), two
//! alternating rounds so that a change of the board's speed hits all alike. With a profile, also
//! what it says a half costs alone over what its kernels cost inside the whole network (the plan's
//! re-pricing at the half's own working set). It shows whether a part runs as its kernels did inside
//! the network; nothing here is fitted.
//!
//! Usage: halves_vs_nodes SEED FIRST COUNT CUTS [PROFILE[,PROFILE…]] (with several profiles, a
//! prefix and a suffix ratio column for each). `HALVES_FAMILY=NAME` keeps only that family's
//! networks among indices FIRST..FIRST+COUNT.
use augur::calibrate::innet::attribute;
use augur::kernels::{FusionRules, decompose};
use augur::plan::cuts::cut_points;
use augur::plan::split::split;
use augur::predict::{Predictor, footprint, footprint_of};
use augur::profile::Profile;
use augur::runtime::{Backend, RunSpec, TractBackend};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: halves_vs_nodes SEED FIRST COUNT CUTS [PROFILE[,PROFILE…]]";
    let [seed, first, count, most, rest @ ..] = args.as_slice() else {
        return Err(usage.into());
    };
    let (seed, first, count, most): (u64, usize, usize, usize) =
        (seed.parse()?, first.parse()?, count.parse()?, most.parse()?);
    let mut predictors = Vec::new();
    for p in rest
        .first()
        .map(|l| l.split(',').collect())
        .unwrap_or_else(Vec::new)
    {
        let (profile, _) = Profile::load(std::path::Path::new(p), "")?;
        predictors.push(Predictor::new(Some(profile.clone()), profile.roofline));
    }
    let backend = TractBackend::new();
    let spec = RunSpec {
        threads: 1,
        warmup: 3,
        warmup_seconds: 0.2,
        runs: 10,
        max_seconds: 5.0,
    };
    let ratio_columns: Vec<String> = (1..=predictors.len())
        .map(|j| format!("\tprofile{j}_prefix_ratio\tprofile{j}_suffix_ratio"))
        .collect();
    println!(
        "net\tkernels_before\tlast_kind\tprefix_ms\tprefix_nodes_ms\tsuffix_ms\tsuffix_nodes_ms\t\
         suffix_weights_mb\tsuffix_footprint_mb\tnet_footprint_mb\tprefix_footprint_mb\t\
         prefix_written_mb{}",
        ratio_columns.concat()
    );
    let family = std::env::var("HALVES_FAMILY").ok();
    for i in first..first + count {
        let fam = augur::model::families::FAMILIES[i % augur::model::families::FAMILIES.len()];
        if family.as_deref().is_some_and(|f| f != fam) {
            continue;
        }
        let g = augur::model::families::network(seed, i)?;
        let d = decompose(&g, &FusionRules::tract_default())?;
        let cuts = cut_points(&g, &d, Default::default());
        if d.macs > 3_000_000_000 || cuts.is_empty() || most < 2 {
            continue;
        }
        let picked: Vec<_> = if cuts.len() > most {
            (0..most)
                .filter_map(|j| cuts.get(j * (cuts.len() - 1) / (most - 1)))
                .collect()
        } else {
            cuts.iter().collect()
        };
        let whole = augur::model::export::to_onnx_bytes(&g)?;
        let mut halves = Vec::new();
        for c in &picked {
            let h = split(&g, c);
            halves.push((
                augur::model::export::to_onnx_bytes(&h.prefix)?,
                augur::model::export::to_onnx_bytes(&h.suffix)?,
            ));
        }
        let mut nodes = vec![0.0; d.kernels.len()];
        let mut timed = vec![(0.0, 0.0); picked.len()];
        for _ in 0..2 {
            let Some(t) = backend.time_per_node_onnx(&whole, &spec)? else {
                return Err("this backend cannot time per node".into());
            };
            for (s, x) in nodes.iter_mut().zip(&attribute(&g, &d, &t).kernel_ms) {
                *s += x / 2.0;
            }
            for ((p, s), out) in halves.iter().zip(timed.iter_mut()) {
                out.0 += backend.time_onnx(p, &spec)?.median_ms / 2.0;
                out.1 += backend.time_onnx(s, &spec)?.median_ms / 2.0;
            }
        }
        // A profile's figure for kernels `r` run alone over theirs inside the whole network.
        let ratio = |p: &Predictor, r: std::ops::Range<usize>| -> Option<f64> {
            let base = p.base(&d);
            let alone_footprint = footprint_of(d.kernels.get(r.clone())?);
            let (mut alone, mut inside) = (0.0, 0.0);
            for i in r {
                alone += p.repriced_ms(&d, &base, i, alone_footprint)?;
                inside += base.kernels.get(i)?.0;
            }
            Some(alone / inside)
        };
        let fmt = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        let n = d.kernels.len();
        for (c, (p, s)) in picked.iter().zip(&timed) {
            let k = c.kernels_before;
            let (before, after) = (&nodes[..k], &nodes[k..]);
            let weights: u64 = d.kernels[k..].iter().map(|x| x.weight_bytes).sum();
            let ratios: Vec<String> = predictors
                .iter()
                .flat_map(|pr| [fmt(ratio(pr, 0..k)), fmt(ratio(pr, k..n))])
                .collect();
            let written: u64 = d.kernels[..k].iter().map(|x| x.output_bytes).sum();
            println!(
                "{}\t{k}\t{}\t{p:.4}\t{:.4}\t{s:.4}\t{:.4}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{:.2}{}",
                g.name,
                d.kernels[k - 1].kind.name(),
                before.iter().sum::<f64>(),
                after.iter().sum::<f64>(),
                weights as f64 / 1e6,
                footprint_of(&d.kernels[k..]) / 1e6,
                footprint(&d) / 1e6,
                footprint_of(&d.kernels[..k]) / 1e6,
                written as f64 / 1e6,
                ratios.iter().map(|r| format!("\t{r}")).collect::<String>(),
            );
        }
    }
    Ok(())
}
