//! The coefficients of the slowdown model as a profile stores them: fitted by calibration under
//! controlled load, read by the predictor (which owns what they mean, see `predict::slowdown`).
use serde::{Deserialize, Serialize};

/// Coefficients of the slowdown model (refined by calibration under load and by online learning).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slowdown {
    /// Cores of the board.
    pub cores: f64,
    /// Frequency at calibration, Hz (0: unknown, ignore frequency).
    pub reference_hertz: f64,
    /// Memory-probe bandwidth on the quiet board, bytes/s (0: unknown).
    pub reference_bandwidth: f64,
    /// Weight of CPU contention (1 = fair time-sharing exactly as the arithmetic says).
    pub cpu_weight: f64,
    /// Weight of lost bandwidth on a memory-bound kernel.
    pub memory_weight: f64,
    /// CPU ms of one pass of the reference workload at calibration (0: none; see
    /// [`crate::workload::reference`]). Taken from the profile's reference, not fitted.
    #[serde(default)]
    pub reference_workload_cpu_ms: f64,
    /// How far predictions follow the reference workload's speed: latency × speed^elasticity.
    /// 0 (the default): not at all — the speed is read and reported, and the bandwidth and
    /// frequency terms stand for the board instead. Read just before a job, the reference did not
    /// foretell the job's time on the development VM (docs/state.md has the study), so it is not
    /// applied unless a board shows that it tracks.
    #[serde(default)]
    pub speed_elasticity: f64,
    /// Follow the reference workload's speed as far as it has persisted: the elasticity is taken
    /// live from the recent readings (how much of a reading's departure from calibration the next
    /// one kept), and `speed_elasticity` is not used. Set by calibration; false in profiles made
    /// before it (they keep their fixed elasticity).
    #[serde(default)]
    pub speed_live: bool,
    /// Relative half-width of the prediction interval, calibrated and not.
    pub interval_calibrated: [f64; 2],
    pub interval_uncalibrated: [f64; 2],
}

impl Default for Slowdown {
    fn default() -> Self {
        Slowdown {
            cores: std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0),
            reference_hertz: 0.0,
            reference_bandwidth: 0.0,
            cpu_weight: 1.0,
            memory_weight: 1.0,
            reference_workload_cpu_ms: 0.0,
            speed_elasticity: 0.0,
            speed_live: false,
            interval_calibrated: [0.9, 1.1],
            interval_uncalibrated: [0.5, 2.0],
        }
    }
}
