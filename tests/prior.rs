//! The shipped layer prior against the development zoo: the prior is generated from the design space,
//! so configurations it shares with the zoo are common shapes both happened to draw (a 3×3 conv of
//! 64 channels at 56×56 is everywhere), not copies. The test reports the overlap and bounds it.
//!
//! Needs the development zoo (unpacked on demand from `../shared/models`). Run with `--release`.
use augur::calibrate::prior::{Prior, config_key};
use augur::kernels::{FusionRules, decompose};
use augur::model::import_path;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The unpacked zoo's ONNX files (unpacking it first when it is not there).
fn zoo_models() -> Vec<PathBuf> {
    let dir = repo().join("target/zoo-dev");
    let list = |dir: &PathBuf| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    if list(&dir).len() < 22 {
        let status = Command::new("sh")
            .arg("../shared/models/unpack.sh")
            .arg("target/zoo-dev")
            .current_dir(repo())
            .status()
            .expect("run ../shared/models/unpack.sh");
        assert!(status.success(), "unpacking the zoo failed");
    }
    let models = list(&dir);
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
        of_prior < 0.08 && of_zoo < 0.08,
        "the prior shares {:.1} % of its configurations with the zoo ({:.1} % of the zoo's)",
        100.0 * of_prior,
        100.0 * of_zoo
    );
}
