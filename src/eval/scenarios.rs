//! The protocol under background load: per named scenario, the load runs in a child process; once
//! the sensed state has settled, the passes run as in a plain evaluation, scored runtime-aware and
//! static, each with the scenario's own noise floor.
use super::protocol::{self, Plan, Progress, Report, Subject};
use super::{Board, EvalError};
use crate::predict::Predictor;
use crate::workload::background::BackgroundLoad;
use crate::workload::load::LoadKind;
use std::collections::BTreeMap;
use std::time::Duration;

/// The load of a named scenario on a board with `llc` bytes of last-level cache and `cores` cores.
pub fn scenario_load(name: &str, llc: u64, cores: usize) -> Result<Option<LoadKind>, EvalError> {
    let llc = llc.max(8 << 20) as usize;
    match name {
        "quiet" => Ok(None),
        // Every core busy with another job: the model's thread time-shares.
        "cpu" => Ok(Some(LoadKind::Cpu {
            threads: cores.max(1),
        })),
        "mem" => Ok(Some(LoadKind::Memory {
            threads: 1,
            bytes: llc * 8,
        })),
        "cache" => Ok(Some(LoadKind::Cache {
            threads: 1,
            bytes: llc,
        })),
        other => Err(EvalError::UnknownScenario(other.to_string())),
    }
}

/// Longest a scenario's load may run (it stops earlier, when its guard drops).
const MAX_LOAD: Duration = Duration::from_secs(3600);

/// Runs the protocol under each scenario in turn; `progress` hears of each measurement with the
/// scenario's name.
pub fn run(
    predictor: &Predictor,
    subjects: &[Subject],
    board: &mut Board,
    scenarios: &[String],
    plan: &Plan,
    progress: &mut dyn FnMut(&str, &Progress),
) -> Result<BTreeMap<String, Report>, EvalError> {
    let device = crate::profile::DeviceInfo::detect(&crate::util::roots::Roots::default());
    // Every name is checked before any load starts.
    let loads = scenarios
        .iter()
        .map(|s| scenario_load(s, device.llc_bytes(), device.cores))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = BTreeMap::new();
    for (name, load) in scenarios.iter().zip(loads) {
        let guard = load
            .map(|k| BackgroundLoad::start(k, MAX_LOAD))
            .transpose()
            .map_err(EvalError::Load)?;
        board.settle()?;
        let report = protocol::run(predictor, subjects, board, plan, &mut |p| progress(name, p))?;
        drop(guard);
        out.insert(name.clone(), report);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names() {
        assert!(scenario_load("quiet", 0, 2).unwrap().is_none());
        assert!(matches!(
            scenario_load("cpu", 0, 2).unwrap(),
            Some(LoadKind::Cpu { threads: 2 })
        ));
        assert!(matches!(
            scenario_load("nope", 0, 2),
            Err(EvalError::UnknownScenario(_))
        ));
    }
}
