//! augur: predicts how long a neural network takes on this board, right now, and how much memory it needs.
//!
//! Data flows through the modules in this order: [`model`] (import) → [`kernels`] (decomposition,
//! features, memory) → [`profile`] (device profile, regressors) ← [`calibrate`] (micro-benchmarks via
//! [`runtime`]) → [`sense`] (live state) → [`predict`] (base × slowdown + online learning) →
//! [`eval`] (the evaluation protocol) and [`serve`].
pub mod calibrate;
pub mod cli;
pub mod config;
pub mod eval;
pub mod kernels;
pub mod model;
pub mod predict;
pub mod profile;
pub mod runtime;
pub mod sense;
pub mod serve;
pub mod util;
