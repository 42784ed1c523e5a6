//! The in-network phase: synthetic networks timed per node, one after the other, until the time is
//! spent (see [`super::innet`] for why and how).
use super::error::CalibrateError;
use super::session::Session;
use std::time::Duration;

/// Most networks one calibration walks (a bound on the loop, never reached in practice).
const MAX_NETWORKS: usize = 1_000_000;

/// Times networks until `until`; false when the backend cannot time per node (nothing was timed).
pub fn run(s: &mut Session, until: Duration) -> Result<bool, CalibrateError> {
    let mut i = 0;
    while s.elapsed() < until && i < MAX_NETWORKS {
        if !s.network(i)? {
            return Ok(false);
        }
        i += 1;
    }
    Ok(true)
}
