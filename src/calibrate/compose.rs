//! Composition: kernels as they behave inside whole networks rather than timed alone. A kernel timed
//! alone runs with its inputs and weights hot and nothing between its runs; inside a network its
//! operands stream through the caches behind other kernels. Where the runtime reports per-node times
//! (tract), random networks of the design space ([`crate::model::families`], never the evaluation
//! models) are timed per node and the times attributed to kernels: those are what the regressors
//! learn from, and networks held out of that fit give one factor per kind for what is left. Where it
//! cannot (an external command), whole-network times of the same networks give the per-kind factors
//! by least squares.
use super::error::{FitError, MeasureError};
use super::innet::{held_out, network};
use super::progress::{Progress, note};
use super::speed::Reader;
use crate::kernels::{FusionRules, KernelKind, decompose};
use crate::model::families::network as generated;
use crate::profile::{CacheBytes, CacheCurve, Composition, Measurement, Profile};
use crate::runtime::{Backend, RunSpec};
use std::collections::BTreeMap;

/// Composition factors per kind, and the median error of whole networks they leave.
#[derive(Clone, Debug, Default)]
pub struct Fitted {
    pub factors: BTreeMap<KernelKind, Composition>,
    /// Median relative error of summed kernel predictions against the networks' measured times,
    /// with the factors kept (a fraction); None without networks.
    pub error: Option<f64>,
}

/// Median of `errors`, None when there are none.
fn median_error(errors: impl IntoIterator<Item = f64>) -> Option<f64> {
    crate::util::percentile(errors, 0.5)
}

/// In-network measurements split for fitting: regressor training rows (with the time the network
/// spent streaming cold weights from DRAM taken out, as prediction adds it back per model), and the
/// held-out networks' kernels as (network, kernel index, measurement).
#[derive(Debug, Default)]
pub struct InNetwork {
    pub train: Vec<Measurement>,
    pub held_out: Vec<(usize, usize, Measurement)>,
    /// Networks measured in all.
    pub networks: usize,
}

/// With a cache curve, each kernel's target loses what the network's working set cost it beyond a
/// hot cache ([`crate::predict::recycled_bytes`] under `rule`, at the curve's extra cost); without
/// one (a sweep that failed), the older rule: weights streamed at `bandwidth` beyond the nominal
/// `llc_bytes`.
pub fn split(
    seed: u64,
    measured: &[(usize, usize, Measurement)],
    cache: &CacheCurve,
    rule: CacheBytes,
    llc_bytes: f64,
    bandwidth: f64,
) -> InNetwork {
    // Per network: extra seconds per recycled byte, or per weight byte under the older rule.
    let mut cold: BTreeMap<usize, f64> = BTreeMap::new();
    let mut out = InNetwork {
        train: Vec::new(),
        held_out: Vec::new(),
        networks: measured
            .iter()
            .map(|(i, _, _)| *i)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
    };
    for (i, k, m) in measured {
        if held_out(*i) {
            out.held_out.push((*i, *k, m.clone()));
            continue;
        }
        let c = *cold.entry(*i).or_insert_with(|| {
            network(seed, *i)
                .map(|(_, d)| {
                    if cache.is_empty() {
                        crate::predict::cold_weight_seconds_per_byte(llc_bytes, bandwidth, &d)
                    } else {
                        cache.extra_seconds_per_byte(crate::predict::footprint(&d), 0.0)
                    }
                })
                .unwrap_or(0.0)
        });
        let bytes = if cache.is_empty() {
            m.kernel.weight_bytes as f64
        } else {
            crate::predict::recycled_bytes(&m.kernel, rule, *k == 0)
        };
        let mut m = m.clone();
        let t = (m.median_ms - bytes * c * 1e3).max(0.3 * m.median_ms);
        m.median_ms = t;
        m.p10_ms = t;
        m.p90_ms = t;
        out.train.push(m);
    }
    out
}

/// Per-kind factors from held-out networks: measured over predicted time of each kind's kernels.
/// A kind with too little held-out time keeps 1.
pub fn held_out_factors(
    profile: &Profile,
    seed: u64,
    held_out: &[(usize, usize, Measurement)],
    progress: Progress,
) -> Fitted {
    let predictor = crate::predict::Predictor::new(
        Some(Profile {
            composition: BTreeMap::new(),
            ..profile.clone()
        }),
        profile.roofline,
    );
    let mut by_net: BTreeMap<usize, Vec<(usize, &Measurement)>> = BTreeMap::new();
    for (i, k, m) in held_out {
        by_net.entry(*i).or_default().push((*k, m));
    }
    // Per held-out network, its kernels as (kind, measured ms, predicted ms): each network is
    // regenerated and predicted once.
    let nets: Vec<Vec<(KernelKind, f64, f64)>> = by_net
        .iter()
        .filter_map(|(i, ms)| {
            let (_, d) = network(seed, *i).ok()?;
            let base = predictor.base(&d);
            Some(
                ms.iter()
                    .filter_map(|(k, m)| {
                        let (kernel, (p, _)) = (d.kernels.get(*k)?, base.kernels.get(*k)?);
                        (kernel.kind == m.kernel.kind).then_some((kernel.kind, m.median_ms, *p))
                    })
                    .collect(),
            )
        })
        .collect();
    // Per kind: (measured, predicted, kernels).
    let mut sums: BTreeMap<KernelKind, (f64, f64, usize)> = BTreeMap::new();
    for (kind, m, p) in nets.iter().flatten() {
        let e = sums.entry(*kind).or_default();
        e.0 += m;
        e.1 += p;
        e.2 += 1;
    }
    let factors: BTreeMap<KernelKind, Composition> = sums
        .iter()
        .filter(|(_, (m, p, n))| *n >= 10 && *m > 0.0 && *p > 0.0)
        .map(|(k, (m, p, _))| {
            let f = (m / p).clamp(0.5, 3.0);
            (
                *k,
                Composition {
                    compute: f,
                    memory: f,
                },
            )
        })
        .collect();
    let error_with = |fac: &dyn Fn(KernelKind) -> f64| {
        median_error(nets.iter().filter_map(|rows| {
            let m_sum: f64 = rows.iter().map(|r| r.1).sum();
            let p_sum: f64 = rows.iter().map(|r| r.2 * fac(r.0)).sum();
            (m_sum > 0.0).then(|| ((p_sum - m_sum) / m_sum).abs())
        }))
    };
    let before = error_with(&|_| 1.0);
    let after = error_with(&|k| factors.get(&k).map(|c| c.compute).unwrap_or(1.0));
    // The factors are a model choice made on held-out data: kept only when they help there.
    let keep = matches!((after, before), (Some(a), Some(b)) if a < b);
    let pct = |e: Option<f64>| e.map_or(f64::NAN, |e| e * 100.0);
    note(
        progress,
        format!(
            "composition: {} held-out networks; median error {:.1} % → {:.1} % with factors {} ({})",
            nets.len(),
            pct(before),
            pct(after),
            factors
                .iter()
                .map(|(k, c)| format!("{} {:.2}", k.name(), c.compute))
                .collect::<Vec<_>>()
                .join(", "),
            if keep { "kept" } else { "not kept" }
        ),
    );
    if keep {
        Fitted {
            factors,
            error: after,
        }
    } else {
        Fitted {
            factors: BTreeMap::new(),
            error: before,
        }
    }
}

/// Per-kind factors from whole-network times of `n` synthetic networks (for backends that cannot
/// time per node), each timing brought to the profile's nominal speed by a reading of the reference
/// workload after it.
pub fn fit(
    backend: &dyn Backend,
    profile: &Profile,
    n: usize,
    seed: u64,
    progress: Progress,
) -> Result<Fitted, FitError> {
    let spec = RunSpec {
        threads: profile.threads.max(1),
        warmup: 2,
        warmup_seconds: 0.0,
        runs: 7,
        max_seconds: 5.0,
    };
    let kinds: Vec<KernelKind> = KernelKind::ALL.to_vec();
    let mut rows: Vec<(Vec<f64>, f64)> = Vec::new();
    let predictor = crate::predict::Predictor::new(
        Some(Profile {
            composition: BTreeMap::new(),
            ..profile.clone()
        }),
        profile.roofline,
    );
    let reader = Reader::new();
    let nominal = profile.reference.workload_cpu_ms;
    for i in 0..n {
        let Ok(g) = generated(seed ^ 0xc0_3b05e, i) else {
            continue;
        };
        let d = decompose(&g, &FusionRules::tract_default()).map_err(MeasureError::from)?;
        let bytes = crate::model::export::to_onnx_bytes(&g).map_err(MeasureError::from)?;
        let t = backend
            .time_onnx(&bytes, &spec)
            .map_err(MeasureError::from)?;
        let speed = match reader.read() {
            Some(now) if nominal > 0.0 => now / nominal,
            _ => 1.0,
        };
        let base = predictor.base(&d);
        // Columns: per kind, predicted ms of its compute-bound share, then of its memory-bound share.
        let mut s = vec![0.0; 2 * kinds.len()];
        for (k, (ms, _)) in d.kernels.iter().zip(&base.kernels) {
            if let Some(j) = kinds.iter().position(|x| *x == k.kind) {
                let m = crate::predict::memory_share_of(&profile.roofline, k);
                s[2 * j] += ms * (1.0 - m);
                s[2 * j + 1] += ms * m;
            }
        }
        rows.push((s, super::target::fit_target_timing(&t) / speed));
    }
    if rows.len() < 5 {
        return Err(FitError::TooFewNetworks {
            timed: rows.len(),
            needed: 5,
        });
    }
    // Least squares on relative error, ridge towards 1 so a kind the networks barely use keeps 1.
    let m = 2 * kinds.len();
    let mut a = vec![vec![0.0; m]; m];
    let mut bv = vec![0.0; m];
    for (s, y) in &rows {
        for i in 0..m {
            for j in 0..m {
                a[i][j] += s[i] * s[j] / (y * y);
            }
            bv[i] += s[i] / y;
        }
    }
    let lambda = 0.05;
    for i in 0..m {
        a[i][i] += lambda;
        bv[i] += lambda;
    }
    let f = solve(a, bv).ok_or(FitError::Singular)?;
    let factors: BTreeMap<KernelKind, Composition> = kinds
        .iter()
        .enumerate()
        .map(|(j, k)| {
            (
                *k,
                Composition {
                    compute: f[2 * j].clamp(0.5, 2.0),
                    memory: f[2 * j + 1].clamp(0.5, 3.0),
                },
            )
        })
        .collect();
    let err = |fac: &dyn Fn(usize) -> f64| {
        median_error(rows.iter().map(|(s, y)| {
            ((s.iter().enumerate().map(|(j, v)| v * fac(j)).sum::<f64>() - y) / y).abs()
        }))
    };
    let before = err(&|_| 1.0);
    let after = err(&|j| {
        factors
            .get(&kinds[j / 2])
            .map(|c| if j % 2 == 0 { c.compute } else { c.memory })
            .unwrap_or(1.0)
    });
    let pct = |e: Option<f64>| e.map_or(f64::NAN, |e| e * 100.0);
    note(
        progress,
        format!(
            "composition: {} synthetic networks; median error {:.1} % → {:.1} %; factors {}",
            rows.len(),
            pct(before),
            pct(after),
            factors
                .iter()
                .filter(|(_, c)| (c.compute - 1.0).abs() > 1e-3 || (c.memory - 1.0).abs() > 1e-3)
                .map(|(k, c)| format!("{} {:.2}/{:.2}", k.name(), c.compute, c.memory))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    Ok(Fitted {
        factors,
        error: after,
    })
}

/// Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        let pivot_row = a[col].clone();
        for r in col + 1..n {
            let f = a[r][col] / pivot_row[col];
            for (x, p) in a[r].iter_mut().zip(&pivot_row).skip(col) {
                *x -= f * p;
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|j| a[i][j] * x[j]).sum();
        x[i] = (b[i] - s) / a[i][i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_the_entry_rule_the_stem_target_also_loses_its_input_and_writes() {
        // The first two kernels of calibration network 0 (trained on, not held out), each timed
        // at 10 ms inside it.
        let (_, d) = network(1, 0).unwrap();
        assert!(!held_out(0));
        let measured: Vec<(usize, usize, Measurement)> = (0..2)
            .map(|k| {
                (
                    0,
                    k,
                    Measurement::new(d.kernels[k].clone(), 10.0, 10.0, 10.0),
                )
            })
            .collect();
        let curve = CacheCurve::from_bandwidths(&[(1 << 20, 100e9), (64 << 20, 10e9)]);
        let extra = curve.extra_seconds_per_byte(crate::predict::footprint(&d), 0.0) * 1e3;
        assert!(extra > 0.0, "the network outgrows the curve's hot end");
        let target =
            |rule, k: usize| split(1, &measured, &curve, rule, 0.0, 0.0).train[k].median_ms;
        let (stem, next) = (&d.kernels[0], &d.kernels[1]);
        // A later kernel loses its weights' cost under both rules.
        let later = 10.0 - next.weight_bytes as f64 * extra;
        assert!((target(CacheBytes::Weights, 1) - later).abs() < 1e-12);
        assert!((target(CacheBytes::WeightsAndEntry, 1) - later).abs() < 1e-12);
        // The stem also what it reads and writes a whole run after they were last used.
        let entry =
            (stem.weight_bytes + stem.input_bytes + 2 * stem.output_bytes + 2 * stem.scratch_bytes)
                as f64;
        let want = (10.0 - entry * extra).max(3.0);
        assert!((target(CacheBytes::WeightsAndEntry, 0) - want).abs() < 1e-12);
        assert!(target(CacheBytes::WeightsAndEntry, 0) < target(CacheBytes::Weights, 0));
    }
}
