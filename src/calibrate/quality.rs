//! The calibration's quality report: held-out errors per kind, the composition error, the noise the
//! board made; and the judgement whether the profile is poor, with the remedy.
use crate::kernels::KernelKind;
use crate::profile::{Noise, Quality, Regressor};
use std::collections::BTreeMap;

/// What to do about a poor calibration.
pub const REMEDY: &str = "Remedy: stop other work on the board and run the same command again \
(delete the journal beside the profile to measure afresh), or give it more time with `--budget standard`.";

/// A kind that carries most of a CNN's time (convolutions) whose held-out median error is above
/// this is poorly fitted. Figures seen on a 2-vCPU VM: 4–9 % on a quiet hour, 11–27 % on a busy one.
const MAIN_KIND_ERROR: f64 = 0.15;

/// The same for the other kinds, whose small kernels time noisily even on a quiet board (quick
/// budget, quiet hour: elementwise 18 %, concat 22 %) and weigh little in a network's sum.
const OTHER_KIND_ERROR: f64 = 0.25;

fn limit(kind: KernelKind) -> f64 {
    match kind {
        KernelKind::Conv | KernelKind::Pointwise | KernelKind::Depthwise => MAIN_KIND_ERROR,
        _ => OTHER_KIND_ERROR,
    }
}

/// Held-out measurements a kind needs before its error is judged (fewer: too noisy a figure).
const JUDGED_SAMPLES: usize = 50;

/// Whole held-out networks predicted worse than this (median): the kernels do not add up.
const COMPOSITION_ERROR: f64 = 0.15;

/// The reference workload's spread (p90 over p10) beyond which the board's speed moved too much for
/// normalisation to be trusted.
const SPREAD: f64 = 0.25;

/// Share of measurements kept spoiled (a switch in their window after their repeat) beyond which
/// too much of the profile was measured mid-switch.
const KEPT_SPOILED: f64 = 0.10;

/// Judges a calibration from its fits and the noise it saw.
pub fn assess(
    regressors: &BTreeMap<KernelKind, Regressor>,
    composition_error: Option<f64>,
    noise: Noise,
    measurements: usize,
) -> Quality {
    let held_out_error: BTreeMap<KernelKind, f64> = regressors
        .iter()
        .filter_map(|(k, r)| r.holdout_error.map(|e| (*k, e)))
        .collect();
    let mut problems = Vec::new();
    for (k, r) in regressors {
        if let Some(e) = r.holdout_error
            && r.samples >= JUDGED_SAMPLES
            && e > limit(*k)
        {
            problems.push(format!(
                "{} kernels held-out error {:.1} % (over {:.0} %)",
                k.name(),
                e * 100.0,
                limit(*k) * 100.0
            ));
        }
    }
    if let Some(e) = composition_error.filter(|e| *e > COMPOSITION_ERROR) {
        problems.push(format!(
            "whole held-out networks err by {:.1} % (over {:.0} %)",
            e * 100.0,
            COMPOSITION_ERROR * 100.0
        ));
    }
    if noise.reference_spread > SPREAD {
        problems.push(format!(
            "the board's speed moved by {:.0} % while measuring ({} regime switches in {} windows)",
            noise.reference_spread * 100.0,
            noise.regime_switches,
            noise.windows
        ));
    }
    if measurements > 0 && noise.kept_spoiled as f64 > KEPT_SPOILED * measurements as f64 {
        problems.push(format!(
            "{} of {measurements} measurements were still spoiled by a speed switch after a repeat",
            noise.kept_spoiled
        ));
    }
    Quality {
        held_out_error,
        composition_error,
        noise,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(samples: usize, err: Option<f64>) -> Regressor {
        Regressor {
            base: 0.0,
            trees: Vec::new(),
            samples,
            holdout_error: err,
            in_network: true,
            fast: Vec::new(),
        }
    }

    fn quiet() -> Noise {
        Noise {
            reference_readings: 50,
            reference_median_ms: 21.0,
            reference_spread: 0.04,
            windows: 49,
            regime_switches: 1,
            repeats: 3,
            kept_spoiled: 0,
        }
    }

    #[test]
    fn a_good_calibration_has_no_problems() {
        let regs = BTreeMap::from([
            (KernelKind::Conv, reg(400, Some(0.06))),
            // Too few samples to judge, however large its error.
            (KernelKind::Softmax, reg(20, Some(0.5))),
            // A minor kind is held to a looser limit.
            (KernelKind::Concat, reg(400, Some(0.22))),
            (KernelKind::Pool, reg(10, None)),
        ]);
        let q = assess(&regs, Some(0.05), quiet(), 1000);
        assert!(!q.is_poor(), "{:?}", q.problems);
        assert_eq!(q.held_out_error.len(), 3);
        let bad = BTreeMap::from([(KernelKind::Concat, reg(400, Some(0.3)))]);
        assert!(assess(&bad, None, quiet(), 1000).problems[0].contains("concat"));
    }

    #[test]
    fn a_busy_board_is_named_with_its_figures() {
        let regs = BTreeMap::from([(KernelKind::Pointwise, reg(400, Some(0.267)))]);
        let noisy = Noise {
            reference_spread: 0.45,
            regime_switches: 12,
            kept_spoiled: 200,
            ..quiet()
        };
        let q = assess(&regs, Some(0.136), noisy, 1000);
        assert_eq!(q.problems.len(), 3, "{:?}", q.problems);
        assert!(q.problems[0].contains("pointwise") && q.problems[0].contains("26.7 %"));
        assert!(q.problems[1].contains("45 %") && q.problems[1].contains("12 regime switches"));
        assert!(q.problems[2].contains("200 of 1000"));
        let q = assess(&BTreeMap::new(), Some(0.2), quiet(), 0);
        assert!(q.problems[0].contains("20.0 %"), "{:?}", q.problems);
    }
}
