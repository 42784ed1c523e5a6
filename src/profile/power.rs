//! The board's power per kernel kind, measured at calibration where the board has an energy counter:
//! what the energy of a prediction is made of, or why there is none.
use crate::kernels::KernelKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Power {
    /// What measured it (`rapl energy: package-0`); empty where nothing could.
    #[serde(default)]
    pub source: String,
    /// The quiet board's power, W.
    #[serde(default)]
    pub idle_watts: Option<f64>,
    /// Per kind: the board's power while the kind's kernels run, above idle, W.
    #[serde(default)]
    pub above_idle_watts: BTreeMap<KernelKind, f64>,
    /// Why calibration measured no power (no counter on the board, an unreadable one …).
    #[serde(default)]
    pub unavailable: Option<String>,
}

impl Power {
    /// A profile's record that calibration could not measure power, and why.
    pub fn unavailable(reason: impl Into<String>) -> Power {
        Power {
            unavailable: Some(reason.into()),
            ..Power::default()
        }
    }
}
