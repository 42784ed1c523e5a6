//! Energy of one inference: Σ over its kernels of (live ms × the profile's power above idle for the
//! kernel's kind). The board's idle power over the same time is not included — it is drawn whether
//! the model runs or not; the whole board's energy adds `idle_watts × latency`. Where the profile
//! has no power figures, the reason instead.
use crate::kernels::KernelKind;
use crate::profile::{Power, Profile};
use crate::sense::energy::EnergyMeter;
use crate::util::roots::Roots;

/// Why a prediction has no energy figure (the text answers carry).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoEnergy(pub String);

/// The profile's power figures, or why there are none.
pub fn power_of(profile: Option<&Profile>) -> Result<&Power, NoEnergy> {
    let profile = profile.ok_or_else(|| {
        NoEnergy(
            "no device profile: energy needs a calibration on a board with an energy counter"
                .into(),
        )
    })?;
    let power = profile.power.as_ref().ok_or_else(|| {
        NoEnergy(
            "the profile has no power figures (it was made before augur measured power); run \
             `augur calibrate` on a board with an energy counter"
                .into(),
        )
    })?;
    if let Some(why) = &power.unavailable {
        return Err(NoEnergy(why.clone()));
    }
    if power.above_idle_watts.is_empty() {
        return Err(NoEnergy(
            "the profile has no power figure for any kernel kind".into(),
        ));
    }
    Ok(power)
}

/// Power above idle by kernel kind, ready to price kernels one by one (the mean for a kind
/// calibration could not run is taken once, not per kernel).
pub struct KindWatts<'a> {
    watts: &'a std::collections::BTreeMap<KernelKind, f64>,
    mean: f64,
}

impl<'a> KindWatts<'a> {
    pub fn new(power: &'a Power) -> KindWatts<'a> {
        let w = &power.above_idle_watts;
        KindWatts {
            watts: w,
            mean: w.values().sum::<f64>() / w.len().max(1) as f64,
        }
    }

    /// Joules above idle of a kernel of `kind` that runs `ms`.
    pub fn joules(&self, kind: KernelKind, ms: f64) -> f64 {
        ms / 1e3 * self.watts.get(&kind).copied().unwrap_or(self.mean)
    }
}

/// Joules above idle of kernels given as (kind, live ms). A kind calibration could not run takes
/// the mean of the kinds it measured.
pub fn joules(power: &Power, kernels: impl IntoIterator<Item = (KernelKind, f64)>) -> f64 {
    let w = KindWatts::new(power);
    kernels
        .into_iter()
        .map(|(kind, ms)| w.joules(kind, ms))
        .sum()
}

/// The reason a prediction has no energy, told better where the profile cannot say: a profile made
/// before power was measured is answered with what the board's meter says now.
pub fn reason_now(profile: Option<&Profile>, reason: &str, roots: &Roots) -> String {
    if profile.is_some_and(|p| p.power.is_none()) {
        return match EnergyMeter::new(roots) {
            Err(u) => format!(
                "no energy counter on this board: {}; {}",
                u.reason, u.remedy
            ),
            Ok(m) => format!(
                "{reason} (this board has one: {})",
                crate::sense::energy::Meter::source(&m)
            ),
        };
    }
    reason.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn joules_sum_kernel_time_by_kind_power() {
        let power = Power {
            source: "rapl energy: package-0".into(),
            idle_watts: Some(4.0),
            above_idle_watts: BTreeMap::from([(KernelKind::Conv, 10.0), (KernelKind::Pool, 2.0)]),
            unavailable: None,
        };
        let j = joules(
            &power,
            [
                (KernelKind::Conv, 100.0),
                (KernelKind::Pool, 50.0),
                // Not calibrated: the mean of the kinds that were, 6 W.
                (KernelKind::Softmax, 10.0),
            ],
        );
        assert!((j - (1.0 + 0.1 + 0.06)).abs() < 1e-12, "{j}");
    }

    #[test]
    fn reasons_name_what_is_missing() {
        assert!(power_of(None).unwrap_err().0.contains("no device profile"));
        let why = Power::unavailable("no energy counter at calibration: none here");
        let mut p: Profile = serde_json::from_value(serde_json::json!({
            "format_version": 1, "augur_version": "", "created_unix": 0,
            "device": crate::profile::DeviceInfo::default(), "runtime": "tract", "threads": 1, "budget": "quick",
            "fusion": crate::kernels::FusionRules::tract_default(),
            "roofline": crate::profile::Roofline::default(),
            "regressors": {}, "measurements": []
        }))
        .unwrap();
        assert!(power_of(Some(&p)).unwrap_err().0.contains("made before"));
        p.power = Some(why);
        assert_eq!(
            power_of(Some(&p)).unwrap_err().0,
            "no energy counter at calibration: none here"
        );
    }
}
