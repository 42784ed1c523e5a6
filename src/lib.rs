//! augur: predicts how long a neural network takes on this board, right now, and how much memory it needs.
//!
//! The modules are stages, each using only the stages below it (checked by `tests/stages.rs`), from
//! the ground up:
//!
//! 1. [`util`]: small helpers any stage may use.
//! 2. [`model`]: import (ONNX, nn-Meter IR) into one graph IR; the synthetic network generator.
//! 3. [`kernels`]: decomposition into the kernels a runtime executes, their features and memory.
//! 4. [`profile`]: the device profile and its per-kind regressors.
//! 5. [`runtime`]: measurement backends that time a model on this board.
//! 6. [`workload`]: what augur runs on purpose: the reference workload and the background loads.
//! 7. [`sense`]: live state from the sensors (its reference probe times the reference workload).
//! 8. [`predict`]: base latency × slowdown from the live state, with online correction.
//! 9. [`plan`]: where to run a model: here, split at a cut point, or on another board.
//! 10. [`calibrate`]: micro-benchmarks and fits that write the profile (it checks its fit with the
//!     predictor, so it stands above [`predict`]).
//! 11. [`eval`]: the evaluation protocol (passes, noise floor, FLOPs proxy, scenarios under load).
//! 12. [`config`]: the operator's file, which gathers the stages' own sections (such as `[sense]`).
//! 13. [`serve`]: the HTTP daemon.
//! 14. [`cli`]: the command line.
pub mod calibrate;
pub mod cli;
pub mod config;
pub mod eval;
pub mod kernels;
pub mod model;
pub mod plan;
pub mod predict;
pub mod profile;
pub mod runtime;
pub mod sense;
pub mod serve;
pub mod util;
pub mod workload;
