//! Fusion rules as data: which (producer class, consumer class) pairs a runtime executes as one kernel.
//! The built-in set for tract ships in `data/fusion/tract.json`; calibration re-detects it per runtime
//! and stores the result in the device profile.
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FusionRules {
    /// The runtime these rules were read off (`tract`, or an external backend's name).
    pub runtime: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// Pairs that fuse: a consumer of class `.1` joins the kernel whose last op has class `.0`.
    pub pairs: BTreeSet<(String, String)>,
}

/// The tract release augur is built with (checked against Cargo.lock by a test): the built-in rules
/// are read off its optimiser, and a profile names the runtime by it.
pub const TRACT_VERSION: &str = "0.23.9";

const TRACT_RULES: &str = include_str!("../../data/fusion/tract.json");

impl FusionRules {
    /// tract 0.23's rules, as read off its optimiser.
    pub fn tract_default() -> FusionRules {
        // The file is part of the source tree and checked by a test, so a parse failure here is a
        // build defect; an empty rule set (no fusion) is still a safe answer.
        serde_json::from_str(TRACT_RULES).unwrap_or_else(|_| FusionRules {
            runtime: "tract".into(),
            note: String::new(),
            pairs: BTreeSet::new(),
        })
    }

    /// No fusion at all: every op is its own kernel (the conservative rules for an unknown runtime).
    pub fn none(runtime: &str) -> FusionRules {
        FusionRules {
            runtime: runtime.into(),
            note: String::new(),
            pairs: BTreeSet::new(),
        }
    }

    pub fn fuses(&self, producer: &str, consumer: &str) -> bool {
        self.pairs
            .contains(&(producer.to_string(), consumer.to_string()))
    }
}
