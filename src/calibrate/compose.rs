//! Composition: how kernels behave inside a whole network rather than timed alone. Calibration times
//! each kernel in isolation (its inputs and weights hot in cache, nothing else running between runs);
//! inside a network, activations and weights stream through the caches. This stage builds random
//! synthetic networks (mobile-style inverted residuals, residual basic blocks, squeeze-excitation —
//! never the evaluation models), times them end to end, and fits one factor per kernel kind so that
//! the sum of corrected kernel predictions matches whole-network time.
use crate::kernels::{FusionRules, KernelKind, decompose};
use crate::model::Graph;
use crate::model::TensorId;
use crate::model::builder::{BuildError, GraphBuilder};
use crate::profile::{Composition, Profile};
use crate::runtime::{RunSpec, TractBackend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

fn pick<T: Copy>(rng: &mut StdRng, v: &[T]) -> T {
    v[rng.random_range(0..v.len())]
}

fn act(b: &mut GraphBuilder, x: TensorId, relu6: bool) -> Result<TensorId, BuildError> {
    if relu6 {
        b.clip(x, 0.0, 6.0)
    } else {
        b.relu(x)
    }
}

/// One random network.
pub fn synthetic(rng: &mut StdRng, i: usize) -> Result<Graph, BuildError> {
    let mut b = GraphBuilder::new(&format!("synthetic{i}"));
    let r = pick(rng, &[96usize, 128, 160, 192, 224]);
    let x = b.input(&[1, 3, r, r]);
    let mobile = rng.random_bool(0.6);
    let relu6 = rng.random_bool(0.5);
    let mut c = pick(rng, &[16usize, 24, 32, 48, 64]);
    let mut y = b.conv(x, c, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 1, true)?;
    y = act(&mut b, y, relu6)?;
    if !mobile && rng.random_bool(0.5) {
        y = b.maxpool(y, [3, 3], [2, 2], [1, 1, 1, 1])?;
    }
    let stages = rng.random_range(3..=5);
    for s in 0..stages {
        let cout = (c as f64 * pick(rng, &[1.5, 2.0])).round() as usize / 8 * 8;
        let blocks = rng.random_range(1..=3);
        for bi in 0..blocks {
            let stride = if bi == 0 && s > 0 { 2 } else { 1 };
            let out_c = if bi == 0 { cout.max(8) } else { c };
            let input = y;
            if mobile {
                let t = pick(rng, &[1usize, 3, 4, 6]);
                let k = pick(rng, &[3usize, 5]);
                let mid = (c * t).max(8);
                let mut z = input;
                if t > 1 {
                    z = b.conv(z, mid, [1, 1], [1, 1], [0; 4], [1, 1], 1, true)?;
                    z = act(&mut b, z, relu6)?;
                }
                let p = k / 2;
                z = b.conv(
                    z,
                    mid,
                    [k, k],
                    [stride, stride],
                    [p, p, p, p],
                    [1, 1],
                    mid,
                    true,
                )?;
                z = act(&mut b, z, relu6)?;
                if rng.random_bool(0.3) {
                    let g = b.global_avg_pool(z)?;
                    let sq = (mid / 4).max(8);
                    let h = b.conv(g, sq, [1, 1], [1, 1], [0; 4], [1, 1], 1, true)?;
                    let h = b.relu(h)?;
                    let h = b.conv(h, mid, [1, 1], [1, 1], [0; 4], [1, 1], 1, true)?;
                    let h = b.sigmoid(h)?;
                    z = b.mul(z, h)?;
                }
                z = b.conv(z, out_c, [1, 1], [1, 1], [0; 4], [1, 1], 1, true)?;
                y = if stride == 1 && out_c == c {
                    b.add(input, z)?
                } else {
                    z
                };
            } else {
                let mut z = b.conv(
                    input,
                    out_c,
                    [3, 3],
                    [stride, stride],
                    [1, 1, 1, 1],
                    [1, 1],
                    1,
                    true,
                )?;
                z = b.relu(z)?;
                z = b.conv(z, out_c, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, true)?;
                let short = if stride == 1 && out_c == c {
                    input
                } else {
                    b.conv(
                        input,
                        out_c,
                        [1, 1],
                        [stride, stride],
                        [0; 4],
                        [1, 1],
                        1,
                        true,
                    )?
                };
                z = b.add(z, short)?;
                y = b.relu(z)?;
            }
            c = out_c;
        }
    }
    let g = b.global_avg_pool(y)?;
    let f = b.flatten(g, 1)?;
    let o = b.gemm(f, 1000, true)?;
    b.finish(&[o])
}

/// Per-kind factors, fitted on `n` synthetic networks; `log` reports progress.
pub fn fit(
    profile: &Profile,
    n: usize,
    seed: u64,
    log: &dyn Fn(String),
) -> Result<BTreeMap<KernelKind, Composition>, String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc0_3b05e);
    let backend = TractBackend::new();
    let spec = RunSpec {
        threads: profile.threads.max(1),
        warmup: 2,
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
    for i in 0..n {
        let Ok(g) = synthetic(&mut rng, i) else {
            continue;
        };
        let d = decompose(&g, &FusionRules::tract_default()).map_err(|e| e.to_string())?;
        let bytes = crate::model::export::to_onnx_bytes(&g).map_err(|e| e.to_string())?;
        let t = backend
            .prepare(&bytes)
            .and_then(|p| p.time(&spec))
            .map_err(|e| e.to_string())?;
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
        rows.push((s, crate::calibrate::run::fit_target_timing(&t)));
    }
    if rows.len() < 5 {
        return Err(format!(
            "only {} synthetic networks could be timed",
            rows.len()
        ));
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
    let f = solve(a, bv).ok_or("singular system")?;
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
        let mut e: Vec<f64> = rows
            .iter()
            .map(|(s, y)| {
                ((s.iter().enumerate().map(|(j, v)| v * fac(j)).sum::<f64>() - y) / y).abs()
            })
            .collect();
        e.sort_by(f64::total_cmp);
        e[e.len() / 2]
    };
    let before = err(&|_| 1.0);
    let after = err(&|j| {
        factors
            .get(&kinds[j / 2])
            .map(|c| if j % 2 == 0 { c.compute } else { c.memory })
            .unwrap_or(1.0)
    });
    log(format!(
        "composition: {} synthetic networks; median error {:.1} % → {:.1} %; factors {}",
        rows.len(),
        before * 100.0,
        after * 100.0,
        factors
            .iter()
            .filter(|(_, c)| (c.compute - 1.0).abs() > 1e-3 || (c.memory - 1.0).abs() > 1e-3)
            .map(|(k, c)| format!("{} {:.2}/{:.2}", k.name(), c.compute, c.memory))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(factors)
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
