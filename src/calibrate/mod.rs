//! Calibration on the board: samples kernel configurations from the layer prior, measures them with a
//! runtime backend, detects the runtime's fusion rules, fits one regressor per kernel kind, and writes
//! the device profile.
pub mod build;
pub mod compose;
pub mod fusion;
pub mod innet;
pub mod journal;
pub mod load_fit;
pub mod prior;
pub mod run;
pub mod sample;
pub mod target;
