//! Evaluation: how well augur predicts this board, measured by a protocol a regime switch cannot
//! fool. Several passes over the models, each model predicted from the state read just before it
//! is measured; scored per model on the mean prediction against the mean measurement, beside the
//! FLOPs proxy and the run's own noise floor (each measurement predicted by the same model's
//! measurement in the previous pass). Optionally every measurement is fed back to the online
//! learner, as a scheduler would. Each prediction's deadline probabilities are checked against
//! what was met ([`reliability`]).
//!
//! Entry point: [`protocol::run`] over a [`Bench`] ([`board::Board`] measures this board);
//! [`scenarios::run`] runs the protocol under each named background load.
pub mod baseline;
pub mod board;
pub mod protocol;
pub mod reliability;
pub mod scenarios;
pub mod summary;
pub mod tracking;

pub use baseline::FlopsProxy;
pub use board::Board;
pub use protocol::{Bench, Passes, Plan, Report, Subject};
pub use reliability::Reliability;
pub use summary::Summary;

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("unknown scenario `{0}` (quiet, cpu, mem, cache)")]
    UnknownScenario(String),
    #[error("cannot start the background load: {0}")]
    Load(#[source] std::io::Error),
    #[error("no models to evaluate")]
    Empty,
}
