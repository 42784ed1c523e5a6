//! The layer-configuration prior: the kernel configurations calibration samples and perturbs. The
//! shipped one (`data/prior/layers.json`) is generated: the kernels of networks drawn from the
//! design space of CNN families ([`crate::model::families`]), never of a model augur is judged on.
//! Its `generated` record says how, and a test rebuilds it from that record.
use super::build::kernel_graph;
use crate::kernels::{FusionRules, Kernel, KernelKind, decompose};
use crate::model::families::{FAMILIES, network};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

const SHIPPED: &str = include_str!("../../data/prior/layers.json");

/// Names the network generator a prior was drawn from; changes whenever the generator's stream does,
/// so a shipped prior that no longer rebuilds says why.
pub const GENERATOR: &str = "model::families/v2";

/// Every kind keeps at least this many configurations (or all it has), however rare it is.
const MIN_PER_KIND: usize = 30;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Prior {
    pub note: String,
    /// How the prior was generated, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<Generation>,
    pub kernels: Vec<Kernel>,
}

/// The recipe of a generated prior: rebuilding with the same values gives the same prior.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The network generator and its version ([`GENERATOR`]).
    pub generator: String,
    pub seed: u64,
    /// Networks drawn (consecutive indices, so every family in turn).
    pub networks: usize,
    /// At most about this many configurations are kept.
    pub max_kernels: usize,
    /// Distinct measurable configurations the networks had, before the selection.
    pub distinct: usize,
}

/// Why a prior could not be generated: the generator made a network that does not build or
/// decompose (a defect of the generator, named by network).
#[derive(Debug, thiserror::Error)]
pub enum PriorError {
    #[error("generated network {index}: {detail}")]
    Network { index: usize, detail: String },
}

/// Identity of a kernel configuration: two kernels with the same key take the same time.
pub fn config_key(k: &Kernel) -> String {
    format!(
        "{}|{}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{}|{:?}",
        k.kind.name(),
        k.ops.join("+"),
        k.input_shapes,
        k.cout,
        k.kernel_size,
        k.stride,
        k.pads,
        k.dilation,
        k.groups,
        k.perm
    )
}

impl Prior {
    /// The prior that ships with augur.
    pub fn shipped() -> Prior {
        // Embedded at build time and checked by a test; an empty prior only makes calibration sample less.
        serde_json::from_str(SHIPPED).unwrap_or_default()
    }

    /// The prior of `networks` generated networks (seed `seed`): their distinct configurations that
    /// calibration can build and measure, then at most about `max_kernels` of them drawn at random,
    /// every kind keeping its share of the distinct ones (and at least a few), half of each share
    /// spread evenly over the kind's range of FLOPs and of weight bytes.
    pub fn generate(seed: u64, networks: usize, max_kernels: usize) -> Result<Prior, PriorError> {
        let rules = FusionRules::tract_default();
        let mut seen = BTreeSet::new();
        let mut pool: Vec<Kernel> = Vec::new();
        for index in 0..networks {
            let fail = |detail: String| PriorError::Network { index, detail };
            let g = network(seed, index).map_err(|e| fail(e.to_string()))?;
            let d = decompose(&g, &rules).map_err(|e| fail(e.to_string()))?;
            for k in d.kernels {
                if k.kind == KernelKind::Other || kernel_graph(&k).is_err() {
                    continue;
                }
                if seen.insert(config_key(&k)) {
                    pool.push(k);
                }
            }
        }
        let distinct = pool.len();
        let mut per_kind: BTreeMap<KernelKind, usize> = BTreeMap::new();
        for k in &pool {
            *per_kind.entry(k.kind).or_default() += 1;
        }
        let quota: BTreeMap<KernelKind, usize> = per_kind
            .iter()
            .map(|(&kind, &count)| {
                let share = (max_kernels as f64 * count as f64 / distinct.max(1) as f64).round();
                (kind, (share as usize).max(MIN_PER_KIND).min(count))
            })
            .collect();
        let mut keep = spread_draw(&pool, &quota, seed);
        // In the order the networks made them, so the file reads family by family.
        keep.sort_unstable();
        let kernels: Vec<Kernel> = keep
            .iter()
            .enumerate()
            .map(|(j, &i)| Kernel {
                name: format!("prior{j}"),
                ..pool[i].clone()
            })
            .collect();
        let note = format!(
            "generated: {} of the {distinct} distinct measurable kernel configurations (each kind \
             keeping its share, half of it spread evenly over the kind's range of FLOPs and of weights) of {networks} networks drawn by {GENERATOR} with seed {seed} from the \
             design space of {} CNN families ({}), decomposed with tract's fusion rules; no model \
             file was read. Rebuild: augur prior --generate {networks} --seed {seed} --max \
             {max_kernels} --out FILE",
            kernels.len(),
            FAMILIES.len(),
            FAMILIES.join(", "),
        );
        Ok(Prior {
            note,
            generated: Some(Generation {
                generator: GENERATOR.to_string(),
                seed,
                networks,
                max_kernels,
                distinct,
            }),
            kernels,
        })
    }

    pub fn of_kind(&self, kind: KernelKind) -> Vec<&Kernel> {
        self.kernels.iter().filter(|k| k.kind == kind).collect()
    }
}

/// Two sizes of a kernel on a log scale: the work it does (FLOPs) and the weights it reads.
fn size_keys(k: &Kernel) -> [f64; 2] {
    [
        (k.flops as f64).max(1.0).ln(),
        (k.weight_bytes as f64).max(1.0).ln(),
    ]
}

/// Draws each kind's quota from the pool: a quarter of it one kernel per equal-width bin of log
/// FLOPs over the kind's range, a quarter the same over log weight bytes, the rest at random. A
/// plain random draw follows the pool's mass, and the pool holds few of the largest layers of a
/// kind (one wide classifier per network against dozens of convolutions; a kind such as matmul
/// mixes compute-heavy channel MLPs with weight-heavy classifiers), so the regressors would never
/// see the ends of the design space they are asked to predict. Indices come back in pool order.
fn spread_draw(pool: &[Kernel], quota: &BTreeMap<KernelKind, usize>, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5e1ec7);
    let mut keep: Vec<usize> = Vec::new();
    for (&kind, &want) in quota {
        let mut members: Vec<usize> = (0..pool.len()).filter(|&i| pool[i].kind == kind).collect();
        members.shuffle(&mut rng);
        let keys: Vec<[f64; 2]> = members.iter().map(|&i| size_keys(&pool[i])).collect();
        let mut taken = vec![false; members.len()];
        let mut count = 0;
        for axis in 0..2 {
            let (lo, hi) = keys
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), k| {
                    (a.min(k[axis]), b.max(k[axis]))
                });
            let bins = (want / 4).max(1);
            let width = ((hi - lo) / bins as f64).max(f64::MIN_POSITIVE);
            let mut filled = vec![false; bins];
            // Members are shuffled, so the first of each bin is a random one of it.
            for (j, key) in keys.iter().enumerate() {
                let b = (((key[axis] - lo) / width) as usize).min(bins - 1);
                if !filled[b] && !taken[j] && count < want {
                    filled[b] = true;
                    taken[j] = true;
                    count += 1;
                }
            }
        }
        for t in taken.iter_mut() {
            if count >= want {
                break;
            }
            if !*t {
                *t = true;
                count += 1;
            }
        }
        keep.extend(
            members
                .iter()
                .zip(&taken)
                .filter(|&(_, &t)| t)
                .map(|(&i, _)| i),
        );
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped prior says it was generated and how, and generating it again from that record
    /// gives the same configurations (so it was not edited by hand, and the generator is
    /// deterministic).
    #[test]
    fn the_shipped_prior_is_generated_and_rebuilds_the_same() {
        let shipped = Prior::shipped();
        assert!(
            !shipped.kernels.is_empty(),
            "the shipped prior does not parse"
        );
        let g = shipped
            .generated
            .clone()
            .expect("the shipped prior records how it was generated");
        assert_eq!(g.generator, GENERATOR, "regenerate the shipped prior");
        for part in [
            "generated".to_string(),
            format!("seed {}", g.seed),
            format!("{} networks", g.networks),
        ] {
            assert!(shipped.note.contains(&part), "note lacks `{part}`");
        }
        let again = Prior::generate(g.seed, g.networks, g.max_kernels).unwrap();
        assert_eq!(again.generated, shipped.generated);
        assert_eq!(again.note, shipped.note);
        assert_eq!(again.kernels.len(), shipped.kernels.len());
        for (a, b) in again.kernels.iter().zip(&shipped.kernels) {
            assert_eq!(config_key(a), config_key(b));
            assert_eq!(a.name, b.name);
            assert_eq!(
                (
                    a.macs,
                    a.flops,
                    a.weight_bytes,
                    a.input_bytes,
                    a.output_bytes
                ),
                (
                    b.macs,
                    b.flops,
                    b.weight_bytes,
                    b.input_bytes,
                    b.output_bytes
                ),
                "{}",
                a.name
            );
            assert_eq!(a.scratch_bytes, b.scratch_bytes, "{}", a.name);
        }
    }

    #[test]
    fn a_small_generation_keeps_every_kind_and_no_duplicates() {
        let p = Prior::generate(5, 2 * FAMILIES.len(), 300).unwrap();
        let g = p.generated.as_ref().unwrap();
        assert!(p.kernels.len() <= g.distinct);
        assert!(p.kernels.len() >= 250, "{} kept", p.kernels.len());
        let keys: BTreeSet<String> = p.kernels.iter().map(config_key).collect();
        assert_eq!(keys.len(), p.kernels.len());
        for kind in [
            KernelKind::Conv,
            KernelKind::Pointwise,
            KernelKind::Depthwise,
            KernelKind::MatMul,
            KernelKind::Elementwise,
            KernelKind::Concat,
            KernelKind::DataMovement,
            KernelKind::Pool,
            KernelKind::Reduce,
        ] {
            assert!(!p.of_kind(kind).is_empty(), "{kind:?} missing");
        }
        for k in &p.kernels {
            kernel_graph(k).unwrap_or_else(|e| panic!("{}: {e}", k.name));
        }
    }
}
