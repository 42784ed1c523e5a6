//! Development aid: times a model per node with tract, attributes the node times to augur's kernels
//! and prints, per kernel kind, the in-network time beside the profile's prediction. For checking where
//! a profile errs; nothing here is fitted.
use augur::calibrate::innet::attribute;
use augur::kernels::{FusionRules, KernelKind, decompose};
use augur::predict::Predictor;
use augur::profile::Profile;
use augur::runtime::{RunSpec, TractBackend};
use std::collections::BTreeMap;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let profile = args.next().ok_or("usage: innet PROFILE MODEL…")?;
    let (mut profile, _) = Profile::load(std::path::Path::new(&profile), "")?;
    if std::env::var_os("INNET_KEEP_COMPOSITION").is_none() {
        profile.composition.clear();
    }
    let predictor = Predictor::new(Some(profile.clone()), profile.roofline);
    let backend = TractBackend::new();
    let spec = RunSpec {
        threads: 1,
        warmup: 2,
        warmup_seconds: 0.0,
        runs: 10,
        max_seconds: 10.0,
    };
    let mut all: BTreeMap<KernelKind, (f64, f64)> = BTreeMap::new();
    for path in args {
        let g = augur::model::import_path(std::path::Path::new(&path), None)?;
        let d = decompose(&g, &FusionRules::tract_default())?;
        let bytes = std::fs::read(&path)?;
        let prepared = backend.prepare(&bytes)?;
        let plain = prepared.time(&spec)?;
        let nodes = prepared.time_per_node(&spec)?;
        let a = attribute(&g, &d, &nodes);
        let base = predictor.base(&d);
        let mut per: BTreeMap<KernelKind, (f64, f64)> = BTreeMap::new();
        let show = std::env::var("INNET_KIND").ok();
        for ((k, m), (p, _)) in d.kernels.iter().zip(&a.kernel_ms).zip(&base.kernels) {
            if show.as_deref() == Some(k.kind.name()) {
                println!(
                    "    {:40} {:?} in {:?} out {:?}  in-net {:.4}  predicted {:.4}",
                    k.name, k.ops, k.input_shapes, k.output_shape, m, p
                );
            }
            let e = per.entry(k.kind).or_default();
            e.0 += m;
            e.1 += p;
            let e = all.entry(k.kind).or_default();
            e.0 += m;
            e.1 += p;
        }
        let sum: f64 = a.kernel_ms.iter().sum();
        println!(
            "{}: plain {:.2} ms, nodes {:.2} ms (+{:.2} unattributed), predicted {:.2} ms",
            d.model, plain.median_ms, sum, a.unattributed_ms, base.latency_ms
        );
        for (k, (m, p)) in per {
            println!(
                "  {:14} in-net {:8.3}  predicted {:8.3}  ratio {:.2}",
                k.name(),
                m,
                p,
                p / m
            );
        }
    }
    println!("all models:");
    for (k, (m, p)) in all {
        println!(
            "  {:14} in-net {:8.3}  predicted {:8.3}  ratio {:.2}",
            k.name(),
            m,
            p,
            p / m
        );
    }
    Ok(())
}
