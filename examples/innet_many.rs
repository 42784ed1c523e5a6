//! Development aid: times models per node once and prints, per model and kernel kind, the in-network
//! time beside the predictions of several profiles, so that profiles are compared on the same timings
//! (the board's speed moves between runs). Nothing here is fitted.
//!
//! Usage: innet_many PROFILE[,PROFILE…] MODEL…  (one line per model and kind: model, kind, in-network
//! ms, then each profile's predicted ms; `WHOLE` the sums)
use augur::calibrate::innet::attribute;
use augur::kernels::{FusionRules, KernelKind, decompose};
use augur::predict::Predictor;
use augur::profile::Profile;
use augur::runtime::{RunSpec, TractBackend};
use std::collections::BTreeMap;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let list = args
        .next()
        .ok_or("usage: innet_many PROFILE[,PROFILE…] MODEL…")?;
    let mut predictors = Vec::new();
    for p in list.split(',') {
        let (mut profile, _) = Profile::load(std::path::Path::new(p), "")?;
        profile.composition.clear();
        predictors.push(Predictor::new(Some(profile.clone()), profile.roofline));
    }
    let backend = TractBackend::new();
    let spec = RunSpec {
        threads: 1,
        warmup: 2,
        warmup_seconds: 0.0,
        runs: 10,
        max_seconds: 10.0,
    };
    for path in args {
        let g = augur::model::import_path(std::path::Path::new(&path), None)?;
        let d = decompose(&g, &FusionRules::tract_default())?;
        let prepared = backend.prepare(&std::fs::read(&path)?)?;
        let nodes = prepared.time_per_node(&spec)?;
        let a = attribute(&g, &d, &nodes);
        let bases: Vec<_> = predictors.iter().map(|p| p.base(&d)).collect();
        let mut per: BTreeMap<KernelKind, (f64, Vec<f64>)> = BTreeMap::new();
        for (i, (k, m)) in d.kernels.iter().zip(&a.kernel_ms).enumerate() {
            let e = per
                .entry(k.kind)
                .or_insert_with(|| (0.0, vec![0.0; bases.len()]));
            e.0 += m;
            for (j, b) in bases.iter().enumerate() {
                e.1[j] += b.kernels.get(i).map(|x| x.0).unwrap_or(0.0);
            }
        }
        let total: f64 = a.kernel_ms.iter().sum();
        let preds: Vec<String> = bases
            .iter()
            .map(|b| format!("{:.3}", b.latency_ms))
            .collect();
        let name = std::path::Path::new(&path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| d.model.clone());
        println!("{name} WHOLE {total:.3} {}", preds.join(" "));
        for (k, (m, ps)) in per {
            let ps: Vec<String> = ps.iter().map(|p| format!("{p:.3}")).collect();
            println!("{name} {} {m:.3} {}", k.name(), ps.join(" "));
        }
    }
    Ok(())
}
