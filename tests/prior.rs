//! The shipped layer prior against the development zoo: the prior is generated from the design space,
//! so configurations it shares with the zoo are common shapes both happened to draw (a 3×3 conv of
//! 64 channels at 56×56 is everywhere), not copies. The test reports the overlap and bounds it.
//!
//! Needs the development zoo (unpacked on demand from `data/zoo`). Run with `--release`.
use augur::calibrate::prior::{Prior, config_key};
use augur::kernels::{FusionRules, decompose};
use augur::model::import_path;
use std::collections::BTreeSet;
use std::path::PathBuf;

mod common;

/// The unpacked zoo's ONNX files (from the repository's data/zoo).
fn zoo_models() -> Vec<PathBuf> {
    let models = common::zoo_models();
    assert_eq!(models.len(), 22, "the development zoo has 22 models");
    models
}

#[test]
fn the_shipped_prior_shares_few_configurations_with_the_zoo() {
    let prior = Prior::shipped();
    assert!(prior.generated.is_some(), "the shipped prior is generated");
    let ours: BTreeSet<String> = prior.kernels.iter().map(config_key).collect();
    let mut zoo: BTreeSet<String> = BTreeSet::new();
    for m in zoo_models() {
        let g = import_path(&m, None).unwrap_or_else(|e| panic!("{e}"));
        let d = decompose(&g, &FusionRules::tract_default()).expect("decomposes");
        zoo.extend(d.kernels.iter().map(config_key));
    }
    let shared: Vec<&String> = ours.intersection(&zoo).collect();
    let of_prior = shared.len() as f64 / ours.len() as f64;
    let of_zoo = shared.len() as f64 / zoo.len() as f64;
    eprintln!(
        "prior {} configurations, zoo {}; {} in both ({:.1} % of the prior, {:.1} % of the zoo)",
        ours.len(),
        zoo.len(),
        shared.len(),
        100.0 * of_prior,
        100.0 * of_zoo
    );
    for k in shared.iter().take(40) {
        eprintln!("  shared: {k}");
    }
    assert!(
        of_prior < 0.05 && of_zoo < 0.05,
        "the prior shares {:.1} % of its configurations with the zoo ({:.1} % of the zoo's)",
        100.0 * of_prior,
        100.0 * of_zoo
    );
}

/// One network of every family runs in tract, per node, and most of its time lands on augur's
/// kernels: the composition data calibration takes from these networks can be measured.
#[test]
fn every_generated_family_runs_in_tract_per_node() {
    use augur::calibrate::innet::attribute;
    use augur::model::families::{FAMILIES, network};
    use augur::runtime::{Backend, RunSpec, TractBackend};
    let backend = TractBackend::new();
    let spec = RunSpec {
        threads: 1,
        warmup: 0,
        warmup_seconds: 0.0,
        runs: 3,
        max_seconds: 0.1,
    };
    for (f, family) in FAMILIES.iter().enumerate() {
        // The family's first network under 2 GMACs and 64 MB of weights, to keep the test short.
        let (g, d) = (0..20)
            .map(|r| {
                let i = f + r * FAMILIES.len();
                let g = network(21, i).unwrap_or_else(|e| panic!("network {i}: {e}"));
                let d = decompose(&g, &FusionRules::tract_default()).expect("decomposes");
                (g, d)
            })
            .find(|(_, d)| d.macs < 2_000_000_000 && d.weights_bytes < 64 << 20)
            .unwrap_or_else(|| panic!("no {family} network under 2 GMACs"));
        let bytes = augur::model::export::to_onnx_bytes(&g).expect("exports");
        let t0 = std::time::Instant::now();
        let nodes = backend
            .time_per_node_onnx(&bytes, &spec)
            .unwrap_or_else(|e| panic!("{}: {e}", g.name))
            .expect("tract times per node");
        let a = attribute(&g, &d, &nodes);
        let timed: f64 = a.kernel_ms.iter().sum();
        let with_time = a.kernel_ms.iter().filter(|&&ms| ms > 0.0).count();
        eprintln!(
            "{}: {} kernels ({} timed), {:.1} GMACs, {timed:.2} ms attributed, {:.2} ms not, {:.1} s",
            g.name,
            d.kernels.len(),
            with_time,
            d.macs as f64 / 1e9,
            a.unattributed_ms,
            t0.elapsed().as_secs_f64()
        );
        assert!(timed > 0.0, "{}: no time attributed", g.name);
        assert!(
            a.unattributed_ms < 0.2 * (timed + a.unattributed_ms),
            "{}: {:.2} of {:.2} ms not attributed",
            g.name,
            a.unattributed_ms,
            timed + a.unattributed_ms
        );
        assert!(2 * with_time >= d.kernels.len(), "{}", g.name);
    }
}
