//! Workloads augur runs on purpose: the reference workload whose CPU time tells how fast the board
//! runs now, the bounded background loads (in-process threads, or a child `augur load` so the sensors
//! see another job's work) and the named loads calibration runs. Calibration, sensing and the
//! evaluation commands all use them, so they stand below those stages.
pub mod background;
pub mod load;
pub mod reference;
pub mod table;
