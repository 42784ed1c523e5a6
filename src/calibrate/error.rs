//! What can go wrong in calibration: the one error type of the front door, and the error of one
//! measurement (which calibration counts and goes on past).
use crate::kernels::DecomposeError;
use crate::model::builder::BuildError;
use crate::model::export::ExportError;
use crate::profile::{ProfileError, Quality};
use crate::runtime::RuntimeError;
use std::path::PathBuf;

/// Why one configuration or network could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("building its graph: {0}")]
    Build(#[from] BuildError),
    #[error("decomposing its graph: {0}")]
    Decompose(#[from] DecomposeError),
    #[error("exporting its graph: {0}")]
    Export(#[from] ExportError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("the built graph has no kernel")]
    NoKernel,
}

/// Why a fit on the measurements could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error(transparent)]
    Measure(#[from] MeasureError),
    #[error("only {timed} synthetic networks could be timed (at least {needed} are needed)")]
    TooFewNetworks { timed: usize, needed: usize },
    #[error("the least-squares system is singular")]
    Singular,
    #[error("starting the {load} load: {detail}")]
    Load { load: String, detail: String },
}

/// Why a calibration did not produce a profile.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error(transparent)]
    Journal(#[from] super::journal::JournalError),
    #[error(
        "calibration interrupted after {measured} measurements; run the same command again to resume"
    )]
    Interrupted { measured: usize },
    #[error("no kernel could be measured (last error: {last})")]
    Nothing { last: String },
    #[error(
        "{}: no journal of measurements beside the profile (it is written by `augur calibrate`); \
         refitting needs the measurements the profile was fitted on",
        .0.display()
    )]
    NoJournal(PathBuf),
    #[error("detecting the runtime's fusion rules: {0}")]
    Fusion(#[from] super::fusion::FusionError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(
        "the calibration came out poor ({}); the profile already at {} was kept and the new one written to {}. {}",
        .quality.problems.join("; "), .kept.display(), .aside.display(), super::quality::REMEDY
    )]
    Poor {
        quality: Box<Quality>,
        kept: PathBuf,
        aside: PathBuf,
    },
}
