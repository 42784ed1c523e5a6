//! Calibration on the board: samples kernel configurations from the layer prior, measures them with a
//! runtime backend, detects the runtime's fusion rules, fits one regressor per kernel kind, and writes
//! the device profile.
pub mod prior;
pub mod sample;
pub mod journal;
pub mod build;
pub mod run;
pub mod fusion;
pub mod background;
pub mod load_fit;
