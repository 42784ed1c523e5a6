//! Development aid: times each model per node once with tract, attributes the node times to augur's
//! kernels and prints, per model and kernel kind, the in-network time beside the predictions of one
//! or several profiles — several on the same timings, since the board's speed moves between runs.
//! For checking where a profile errs; nothing here is fitted.
//!
//! Usage: innet PROFILE[,PROFILE…] MODEL…  One line per model and kind: model, kind, in-network ms,
//! then each profile's predicted ms and its ratio to the in-network time; `WHOLE` the sums.
//! INNET_KIND=pointwise also lists that kind's kernels (first profile); INNET_PREFIX=1 lists each
//! leading part's in-network and predicted ms (first profile), where a part's share of the error
//! shows; INNET_KEEP_COMPOSITION=1 keeps the profiles' composition terms.
use augur::calibrate::innet::attribute;
use augur::kernels::{FusionRules, KernelKind, decompose};
use augur::predict::Predictor;
use augur::profile::Profile;
use augur::runtime::{RunSpec, TractBackend};
use std::collections::BTreeMap;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: innet PROFILE[,PROFILE…] MODEL…";
    let mut args = std::env::args().skip(1);
    let list = args.next().ok_or(usage)?;
    let keep = std::env::var_os("INNET_KEEP_COMPOSITION").is_some();
    let mut predictors = Vec::new();
    for p in list.split(',') {
        let (mut profile, _) = Profile::load(std::path::Path::new(p), "")?;
        if !keep {
            profile.composition.clear();
        }
        predictors.push(Predictor::new(Some(profile.clone()), profile.roofline));
    }
    let show = std::env::var("INNET_KIND").ok();
    let prefixes = std::env::var_os("INNET_PREFIX").is_some();
    let backend = TractBackend::new();
    let spec = RunSpec {
        threads: 1,
        warmup: 2,
        warmup_seconds: 0.0,
        runs: 10,
        max_seconds: 10.0,
    };
    let columns = |m: f64, ps: &[f64]| -> String {
        let cols: Vec<String> = ps
            .iter()
            .map(|p| format!("{p:9.3} {:5.2}", p / m))
            .collect();
        format!("{m:9.3} {}", cols.join(" "))
    };
    for path in args {
        let g = augur::model::import_path(std::path::Path::new(&path), None)?;
        let d = decompose(&g, &FusionRules::tract_default())?;
        let prepared = backend.prepare(&std::fs::read(&path)?)?;
        let nodes = prepared.time_per_node(&spec)?;
        let a = attribute(&g, &d, &nodes);
        let bases: Vec<_> = predictors.iter().map(|p| p.base(&d)).collect();
        let name = std::path::Path::new(&path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| d.model.clone());
        let predicted = |j: usize, i: usize| bases[j].kernels.get(i).map(|x| x.0).unwrap_or(0.0);
        let mut per: BTreeMap<KernelKind, (f64, Vec<f64>)> = BTreeMap::new();
        let (mut m_sum, mut p_sum) = (0.0, 0.0);
        for (i, (k, m)) in d.kernels.iter().zip(&a.kernel_ms).enumerate() {
            let e = per
                .entry(k.kind)
                .or_insert_with(|| (0.0, vec![0.0; bases.len()]));
            e.0 += m;
            for (j, sum) in e.1.iter_mut().enumerate() {
                *sum += predicted(j, i);
            }
            if show.as_deref() == Some(k.kind.name()) {
                println!(
                    "    {:40} {:?} in {:?} out {:?}  in-net {m:.4}  predicted {:.4}",
                    k.name,
                    k.ops,
                    k.input_shapes,
                    k.output_shape,
                    predicted(0, i)
                );
            }
            m_sum += m;
            p_sum += predicted(0, i);
            if prefixes {
                println!(
                    "    prefix {i:3} {:12} {:40} in-net {m_sum:8.3}  predicted {p_sum:8.3}  ratio {:.2}",
                    k.kind.name(),
                    k.name,
                    p_sum / m_sum
                );
            }
        }
        let wholes: Vec<f64> = bases.iter().map(|b| b.latency_ms).collect();
        let total: f64 = a.kernel_ms.iter().sum();
        println!("{name} {:14} {}", "WHOLE", columns(total, &wholes));
        for (k, (m, ps)) in per {
            println!("{name} {:14} {}", k.name(), columns(m, &ps));
        }
    }
    Ok(())
}
