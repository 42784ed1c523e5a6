//! The layer-configuration prior: kernels of real models (shipped as `data/prior/layers.json`,
//! derived from the development zoo's layers), which calibration samples and perturbs.
use crate::kernels::{Kernel, KernelKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

const SHIPPED: &str = include_str!("../../data/prior/layers.json");

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Prior {
    pub note: String,
    pub kernels: Vec<Kernel>,
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

    /// Builds a prior from decomposed models, one entry per distinct configuration.
    pub fn from_kernels<'a>(kernels: impl Iterator<Item = &'a Kernel>, note: &str) -> Prior {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for k in kernels {
            if seen.insert(config_key(k)) {
                let mut k = k.clone();
                k.name = format!("prior{}", out.len());
                out.push(k);
            }
        }
        Prior {
            note: note.to_string(),
            kernels: out,
        }
    }

    pub fn of_kind(&self, kind: KernelKind) -> Vec<&Kernel> {
        self.kernels.iter().filter(|k| k.kind == kind).collect()
    }
}
