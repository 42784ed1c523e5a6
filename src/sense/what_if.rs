//! What-if states: a partial [`Snapshot`] written by a client, merged over the live one, with two
//! shorthands for the load a prediction competes with. Every number of the patch is checked before
//! it reaches the predictor: a what-if state is data from outside, and one absurd figure (a busy
//! share of 1e308) would otherwise come back as a prediction of infinity.
use super::Snapshot;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Why a what-if state was refused. The message names the key, as the client wrote it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WhatIfError {
    #[error("state.{key} must be a number")]
    NotANumber { key: String },
    #[error("state.{key} must be within {min}..={max}, got {value}")]
    OutOfRange {
        key: String,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error("state: {0}")]
    Shape(String),
}

/// Largest magnitude any figure of a snapshot may take: a rate of 1e15 per second (PFLOP/s, PB/s)
/// is far beyond any board, and anything above would only feed overflow into the predictor.
const MAX_FIGURE: f64 = 1e15;

/// The range a number under `path` (dotted keys, array indices left out) may take. Shares of CPU
/// time are fractions; ratios against a reference may exceed 1 a little; temperatures may be
/// negative; everything else is a physical count, rate or duration: non-negative.
fn range_of(path: &str) -> (f64, f64) {
    let leaf = path.rsplit('.').next().unwrap_or(path);
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}."));
    if under("utilization")
        || under("own_cpu")
        || leaf == "busy"
        || leaf == "others_busy"
        || leaf == "cpu_share"
    {
        (0.0, 1.0)
    } else if leaf.ends_with("_ratio") {
        (0.0, 16.0)
    } else if leaf == "celsius" {
        (-273.15, 1000.0)
    } else {
        (0.0, MAX_FIGURE)
    }
}

/// Checks every number of `v` against the range of its key.
fn check_numbers(path: &str, v: &Value) -> Result<(), WhatIfError> {
    match v {
        Value::Number(n) => {
            let x =
                n.as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| WhatIfError::NotANumber {
                        key: path.to_string(),
                    })?;
            let (min, max) = range_of(path);
            if !(min..=max).contains(&x) {
                return Err(WhatIfError::OutOfRange {
                    key: path.to_string(),
                    value: x,
                    min,
                    max,
                });
            }
            Ok(())
        }
        Value::Array(a) => a.iter().try_for_each(|x| check_numbers(path, x)),
        Value::Object(m) => m.iter().try_for_each(|(k, x)| {
            let sub = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            check_numbers(&sub, x)
        }),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

/// The state to predict under: the live one, or the live one with `patch` applied; the flag says
/// whether the patch changed anything.
///
/// `patch` is a partial [`Snapshot`] merged over the live one (objects merge key by key, anything
/// else replaces), plus two shorthands applied after the merge: `others_busy` (0..=1: the busy
/// fraction of all CPUs taken by other work) and `extra_busy_cores` (0..=1024: cores' worth of
/// work added to what is running now, as in "if another job took one core"). `cores` is the
/// board's core count, for the second shorthand.
pub fn what_if(
    live: &Arc<Snapshot>,
    patch: Option<&Map<String, Value>>,
    cores: f64,
) -> Result<(Arc<Snapshot>, bool), WhatIfError> {
    let Some(patch) = patch.filter(|p| !p.is_empty()) else {
        return Ok((Arc::clone(live), false));
    };
    let number = |key: &str| -> Result<Option<f64>, WhatIfError> {
        match patch.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(WhatIfError::NotANumber { key: key.into() }),
            },
        }
    };
    let range = |key: &str, x: Option<f64>, max: f64| match x {
        Some(v) if !(0.0..=max).contains(&v) => Err(WhatIfError::OutOfRange {
            key: key.into(),
            value: v,
            min: 0.0,
            max,
        }),
        _ => Ok(x),
    };
    let others = range("others_busy", number("others_busy")?, 1.0)?;
    let extra = range("extra_busy_cores", number("extra_busy_cores")?, 1024.0)?;
    let rest: Map<String, Value> = patch
        .iter()
        .filter(|(k, _)| *k != "others_busy" && *k != "extra_busy_cores")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut s = if rest.is_empty() {
        (**live).clone()
    } else {
        let rest = Value::Object(rest);
        check_numbers("", &rest)?;
        let mut v = serde_json::to_value(&**live).map_err(|e| WhatIfError::Shape(e.to_string()))?;
        merge(&mut v, rest);
        serde_json::from_value::<Snapshot>(v).map_err(|e| WhatIfError::Shape(e.to_string()))?
    };
    let others = match (others, extra) {
        (_, Some(x)) => {
            Some((others.or(s.others_busy()).unwrap_or(0.0) + x / cores.max(1.0)).clamp(0.0, 1.0))
        }
        (o, None) => o,
    };
    if let Some(o) = others {
        s.utilization.busy.mean = Some(o);
        s.own_cpu.mean = Some(0.0);
    }
    Ok((Arc::new(s), true))
}

fn merge(dst: &mut Value, patch: Value) {
    match (dst, patch) {
        (Value::Object(d), Value::Object(p)) => {
            for (k, v) in p {
                merge(d.entry(k).or_insert(Value::Null), v);
            }
        }
        (d, p) => *d = p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn what_if_merges_and_applies_shorthands() {
        let mut live = Snapshot::default();
        live.utilization.busy.mean = Some(0.3);
        live.own_cpu.mean = Some(0.1);
        live.seq = 7;
        let live = Arc::new(live);
        let (s, changed) = what_if(&live, None, 2.0).unwrap();
        assert!(!changed && Arc::ptr_eq(&s, &live));
        let (s, _) = what_if(
            &live,
            Some(&map(
                serde_json::json!({"utilization": {"busy": {"mean": 0.9}}}),
            )),
            2.0,
        )
        .unwrap();
        assert_eq!(s.utilization.busy.mean, Some(0.9));
        assert_eq!(s.own_cpu.mean, Some(0.1));
        assert_eq!(s.seq, 7);
        let (s, _) = what_if(
            &live,
            Some(&map(serde_json::json!({"extra_busy_cores": 1}))),
            2.0,
        )
        .unwrap();
        assert!((s.others_busy().unwrap() - 0.7).abs() < 1e-9);
        let (s, _) = what_if(
            &live,
            Some(&map(serde_json::json!({"others_busy": 0.5}))),
            2.0,
        )
        .unwrap();
        assert_eq!(s.others_busy(), Some(0.5));
        for bad in [
            serde_json::json!({"others_busy": 2}),
            serde_json::json!({"others_busy": "lots"}),
            serde_json::json!({"utilization": {"busy": {"mean": "high"}}}),
        ] {
            assert!(
                what_if(&live, Some(&map(bad.clone())), 2.0).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn absurd_and_negative_figures_are_refused() {
        let live = Arc::new(Snapshot::default());
        for bad in [
            serde_json::json!({"utilization": {"busy": {"mean": 1e308}}}),
            serde_json::json!({"utilization": {"busy": {"mean": -0.1}}}),
            serde_json::json!({"own_cpu": {"ewma": 1.5}}),
            serde_json::json!({"freq_ratio": -1}),
            serde_json::json!({"cpus": [{"frequency_hertz": -5e8}]}),
            serde_json::json!({"probe": {"memory_bandwidth_bytes_per_second": {"ewma": 1e300}}}),
            serde_json::json!({"procs_running": -3}),
            serde_json::json!({"extra_busy_cores": -1}),
        ] {
            let e = what_if(&live, Some(&map(bad.clone())), 2.0).unwrap_err();
            assert!(matches!(e, WhatIfError::OutOfRange { .. }), "{bad}: {e:?}");
        }
        let ok = serde_json::json!({"thermal": [{"zone": "z", "kind": "cpu", "celsius": -20.0}],
            "cpus": [{"cpu": 0, "frequency_hertz": 1.8e9, "busy": 0.4}]});
        assert!(what_if(&live, Some(&map(ok)), 2.0).is_ok());
    }
}
