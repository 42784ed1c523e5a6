//! Development aid: for one model file, where the plan's per-cut figures part from the timings. Per
//! cut point, the profile's figure for each half (its kernels' base figures, the whole model's
//! working set; no live state, no learner) beside the sum of the same kernels' per-node times inside
//! a run of the whole model, and beside the half exported and timed alone as `augur bench` times it.
//! A half whose node sum agrees with the profile but whose lone timing does not runs differently alone;
//! one whose node sum already disagrees is a per-kernel error. Rounds alternate the three timings so
//! that a change of the board's speed hits them alike. Nothing here is fitted: it reads.
//!
//! Usage: model_nodes MODEL PROFILE [ROUNDS]
use augur::calibrate::innet::attribute;
use augur::kernels::{FusionRules, decompose};
use augur::plan::cuts::cut_points;
use augur::plan::split::split;
use augur::predict::Predictor;
use augur::profile::Profile;
use augur::runtime::{Backend, RunSpec, TractBackend};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, profile, rest @ ..] = args.as_slice() else {
        return Err("usage: model_nodes MODEL PROFILE [ROUNDS]".into());
    };
    let rounds: usize = rest.first().map(|r| r.parse()).transpose()?.unwrap_or(3);
    let (profile, _) = Profile::load(std::path::Path::new(profile), "")?;
    let predictor = Predictor::new(Some(profile.clone()), profile.roofline);
    let g = augur::model::import_path(std::path::Path::new(model), None)?;
    let d = decompose(&g, &FusionRules::tract_default())?;
    let base = predictor.base(&d);
    let cuts = cut_points(&g, &d, Default::default());
    let whole = augur::model::export::to_onnx_bytes(&g)?;
    let halves = cuts
        .iter()
        .map(|c| {
            let h = split(&g, c);
            Ok((
                augur::model::export::to_onnx_bytes(&h.prefix)?,
                augur::model::export::to_onnx_bytes(&h.suffix)?,
            ))
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let backend = TractBackend::new();
    // `augur bench`'s own settling (0.2 s of warm-up), as the cut check times its halves.
    let spec = RunSpec {
        warmup_seconds: 0.2,
        max_seconds: 10.0,
        ..RunSpec::default()
    };
    let share = 1.0 / rounds as f64;
    let (mut nodes, mut whole_ms) = (vec![0.0; d.kernels.len()], 0.0);
    let mut alone = vec![(0.0, 0.0); cuts.len()];
    for _ in 0..rounds {
        let Some(t) = backend.time_per_node_onnx(&whole, &spec)? else {
            return Err("this backend cannot time per node".into());
        };
        for (s, x) in nodes.iter_mut().zip(&attribute(&g, &d, &t).kernel_ms) {
            *s += x * share;
        }
        whole_ms += backend.time_onnx(&whole, &spec)?.median_ms * share;
        for ((p, s), out) in halves.iter().zip(alone.iter_mut()) {
            out.0 += backend.time_onnx(p, &spec)?.median_ms * share;
            out.1 += backend.time_onnx(s, &spec)?.median_ms * share;
        }
    }
    let predicted: Vec<f64> = base.kernels.iter().map(|&(ms, _)| ms).collect();
    let (pred_all, nodes_all): (f64, f64) = (predicted.iter().sum(), nodes.iter().sum());
    println!(
        "# {}: whole {whole_ms:.3} ms alone, {nodes_all:.3} ms of kernel nodes, {pred_all:.3} ms predicted (kernel sum)",
        g.name
    );
    println!("kernel\tkind\tpredicted_ms\tnodes_ms");
    for ((k, p), n) in d.kernels.iter().zip(&predicted).zip(&nodes) {
        println!("{}\t{}\t{p:.4}\t{n:.4}", k.name, k.kind.name());
    }
    println!(
        "cut\tkernels_before\tprefix_pred\tprefix_nodes\tprefix_alone\tsuffix_pred\tsuffix_nodes\tsuffix_alone"
    );
    for (c, (pa, sa)) in cuts.iter().zip(&alone) {
        let k = c.kernels_before;
        let sum = |v: &[f64]| v.iter().sum::<f64>();
        println!(
            "{}\t{k}\t{:.4}\t{:.4}\t{pa:.4}\t{:.4}\t{:.4}\t{sa:.4}",
            c.name,
            sum(&predicted[..k]),
            sum(&nodes[..k]),
            sum(&predicted[k..]),
            sum(&nodes[k..]),
        );
    }
    Ok(())
}
