//! Per-kind latency regressors: gradient-boosted trees (trained with forust-ml) over kernel features,
//! predicting the log-ratio of measured latency to a roofline estimate, so that a tree's bounded output
//! still scales with the kernel's size; plus the analytic roofline that is the fallback.
use crate::kernels::{Kernel, N_FEATURES, features};
use serde::{Deserialize, Serialize};

/// Why a regressor could not be fitted.
#[derive(Debug, thiserror::Error)]
pub enum RegressorError {
    #[error("too few measurements ({0}; at least 4 are needed)")]
    TooFew(usize),
    #[error("training the trees: {0}")]
    Training(String),
}

/// Depth of the trees.
const DEPTH: usize = 5;

/// The analytic model: time = max(compute, memory) + a fixed cost per kernel.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Roofline {
    /// Floating-point operations per second a kernel reaches at best.
    pub flops_per_second: f64,
    /// Bytes per second of memory traffic at best.
    pub bytes_per_second: f64,
    /// Fixed cost of launching one kernel, seconds.
    pub overhead_seconds: f64,
}

impl Default for Roofline {
    /// Deliberately modest figures (a phone-class core) used only until a probe or a profile says better.
    fn default() -> Self {
        Roofline {
            flops_per_second: 5e9,
            bytes_per_second: 5e9,
            overhead_seconds: 5e-6,
        }
    }
}

impl Roofline {
    pub fn kernel_ms(&self, k: &Kernel) -> f64 {
        let bytes = (k.input_bytes + k.output_bytes + k.weight_bytes + k.scratch_bytes) as f64;
        let compute = k.flops as f64 / self.flops_per_second.max(1.0);
        let memory = bytes / self.bytes_per_second.max(1.0);
        (compute.max(memory) + self.overhead_seconds) * 1e3
    }
}

/// One regression tree as a complete binary tree of fixed depth, stored level by level: evaluation
/// is `depth` branch-free steps (`i = 2i + 1 + (x ≥ t)`), so the CPU overlaps many trees instead of
/// stalling on mispredicted branches. forust's own nodes carry training statistics and evaluate
/// through a generic matrix API; a prediction here must cost nanoseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlatTree {
    pub depth: u8,
    /// Internal nodes (2^depth − 1), level by level.
    pub splits: Vec<Split>,
    /// 2^depth leaf values.
    pub leaves: Vec<f64>,
}

/// A split: go right when `x[feature] ≥ threshold`. Feature and threshold side by side, one load.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub threshold: f64,
    pub feature: u32,
}

impl FlatTree {
    pub(crate) fn eval(&self, x: &[f64; N_FEATURES]) -> f64 {
        let mut i = 0usize;
        for _ in 0..self.depth {
            let Some(s) = self.splits.get(i) else {
                return 0.0;
            };
            let xv = x.get(s.feature as usize).copied().unwrap_or(0.0);
            i = 2 * i + 1 + usize::from(xv >= s.threshold);
        }
        self.leaves
            .get(i.wrapping_sub(self.splits.len()))
            .copied()
            .unwrap_or(0.0)
    }

    /// Lays out a forust tree; a leaf above the full depth becomes splits that always go left (threshold f64::MAX: JSON has no infinity).
    fn from_forust(t: &forust_ml::tree::Tree, depth: u8) -> FlatTree {
        let internal = (1usize << depth) - 1;
        let mut ft = FlatTree {
            depth,
            splits: vec![
                Split {
                    threshold: f64::MAX,
                    feature: 0
                };
                internal
            ],
            leaves: vec![0.0; 1 << depth],
        };
        let by_num: std::collections::HashMap<usize, _> =
            t.nodes.iter().map(|n| (n.num, n)).collect();
        // (forust node, slot in the complete tree, level)
        let mut stack = vec![(0usize, 0usize, 0u8)];
        while let Some((num, slot, level)) = stack.pop() {
            let Some(n) = by_num.get(&num) else { continue };
            if level == depth || n.is_leaf {
                // Fill every leaf under this slot with the value.
                let (mut lo, mut hi) = (slot, slot);
                for _ in level..depth {
                    lo = 2 * lo + 1;
                    hi = 2 * hi + 2;
                }
                for leaf in lo..=hi {
                    if let Some(v) = ft.leaves.get_mut(leaf - internal) {
                        *v = n.weight_value as f64;
                    }
                }
                continue;
            }
            if let Some(s) = ft.splits.get_mut(slot) {
                *s = Split {
                    threshold: n.split_value,
                    feature: n.split_feature as u32,
                };
            }
            stack.push((n.left_child, 2 * slot + 1, level + 1));
            stack.push((n.right_child, 2 * slot + 2, level + 1));
        }
        ft
    }
}

/// A per-kind regressor: `ln(latency / roofline)` = base + Σ trees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Regressor {
    pub base: f64,
    pub trees: Vec<FlatTree>,
    /// Measurements it was fitted on.
    pub samples: usize,
    /// Median absolute relative error on held-out measurements (4-fold), a fraction; None when too
    /// few measurements to hold any out.
    pub holdout_error: Option<f64>,
    /// Fitted on kernels timed inside whole networks (else on kernels timed alone).
    #[serde(default)]
    pub in_network: bool,
    /// The trees in evaluation form (see [`FastTree`]); filled by [`Regressor::compile`], which
    /// fitting and profile loading call. Empty: the serialised trees are walked instead.
    #[serde(skip)]
    pub fast: Vec<FastTree>,
}

/// A depth-5 tree in 32-bit, fixed-size arrays: 284 bytes instead of 752, so the trees of every kind
/// a model uses stay in L2, and indices masked to the array size need no bounds checks.
#[derive(Clone, Debug, PartialEq)]
pub struct FastTree {
    feature: [u8; 32],
    threshold: [f32; 32],
    leaf: [f32; 32],
}

const _: () = assert!(N_FEATURES == 16 && DEPTH == 5);

impl FastTree {
    fn new(t: &FlatTree) -> Option<FastTree> {
        if t.depth as usize != DEPTH || t.splits.len() != 31 || t.leaves.len() != 32 {
            return None;
        }
        let mut f = FastTree {
            feature: [0; 32],
            threshold: [f32::MAX; 32],
            leaf: [0.0; 32],
        };
        for (i, s) in t.splits.iter().enumerate() {
            if s.feature as usize >= N_FEATURES {
                return None;
            }
            f.feature[i] = s.feature as u8;
            f.threshold[i] = if s.threshold >= f32::MAX as f64 {
                f32::MAX
            } else {
                s.threshold as f32
            };
        }
        for (i, v) in t.leaves.iter().enumerate() {
            f.leaf[i] = *v as f32;
        }
        Some(f)
    }

    #[inline]
    pub(crate) fn eval(&self, x: &[f32; N_FEATURES]) -> f32 {
        let mut i = 0usize;
        for _ in 0..DEPTH {
            let j = i & 31;
            let go_right = x[self.feature[j] as usize & 15] >= self.threshold[j];
            i = 2 * i + 1 + usize::from(go_right);
        }
        self.leaf[(i - 31) & 31]
    }
}

/// The evaluation form of `trees`: all or none (empty where a tree has another shape, and the
/// serialised walk is kept for the whole ensemble).
pub(crate) fn compile_trees(trees: &[FlatTree]) -> Vec<FastTree> {
    trees
        .iter()
        .map(FastTree::new)
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

impl Regressor {
    /// Builds the evaluation form of the trees ([`compile_trees`]).
    pub fn compile(&mut self) {
        self.fast = compile_trees(&self.trees);
    }

    pub fn predict_ms(&self, roofline: &Roofline, k: &Kernel) -> f64 {
        self.predict_with(roofline, k, &features(k))
    }

    /// As [`Regressor::predict_ms`], with the kernel's features already computed.
    pub fn predict_with(&self, roofline: &Roofline, k: &Kernel, x: &[f64; N_FEATURES]) -> f64 {
        let log_ratio = self.base + self.trees.iter().map(|t| t.eval(x)).sum::<f64>();
        roofline.kernel_ms(k) * log_ratio.clamp(-20.0, 20.0).exp()
    }

    /// ln(latency / roofline) for many feature rows at once: tree by tree, so each tree is loaded
    /// once and the rows give the CPU independent work to overlap.
    pub fn log_ratios(&self, xs: &[[f64; N_FEATURES]]) -> Vec<f64> {
        if !self.fast.is_empty() && self.fast.len() == self.trees.len() {
            let rows: Vec<[f32; N_FEATURES]> = xs.iter().map(|x| x.map(|v| v as f32)).collect();
            let mut acc = vec![0.0f32; rows.len()];
            for t in &self.fast {
                for (a, x) in acc.iter_mut().zip(&rows) {
                    *a += t.eval(x);
                }
            }
            return acc.into_iter().map(|a| self.base + a as f64).collect();
        }
        let mut acc = vec![self.base; xs.len()];
        for t in &self.trees {
            for (a, x) in acc.iter_mut().zip(xs) {
                *a += t.eval(x);
            }
        }
        acc
    }

    /// Fits a regressor on (kernel, measured ms) pairs.
    pub fn fit(
        roofline: &Roofline,
        data: &[(Kernel, f64)],
        seed: u64,
    ) -> Result<Regressor, RegressorError> {
        if data.len() < 4 {
            return Err(RegressorError::TooFew(data.len()));
        }
        let rows: Vec<[f64; N_FEATURES]> = data.iter().map(|(k, _)| features(k)).collect();
        let y: Vec<f64> = data
            .iter()
            .map(|(k, ms)| (ms.max(1e-6) / roofline.kernel_ms(k)).ln())
            .collect();
        let (base, trees) = train(&rows, &y, seed)?;
        let mut r = Regressor {
            base,
            trees,
            samples: data.len(),
            holdout_error: None,
            in_network: false,
            fast: Vec::new(),
        };
        r.compile();
        r.holdout_error = holdout(roofline, data, seed);
        Ok(r)
    }
}

fn train(
    rows: &[[f64; N_FEATURES]],
    y: &[f64],
    seed: u64,
) -> Result<(f64, Vec<FlatTree>), RegressorError> {
    train_weighted(rows, y, &vec![1.0; rows.len()], seed)
}

/// Boosted trees of depth [`DEPTH`] fitted to `y` over kernel feature rows, each row weighted by
/// `w`: the base score and the trees. Shared by the latency regressors and the thread scaling's
/// per-kind efficiency trees.
pub(crate) fn train_weighted(
    rows: &[[f64; N_FEATURES]],
    y: &[f64],
    w: &[f64],
    seed: u64,
) -> Result<(f64, Vec<FlatTree>), RegressorError> {
    if rows.len() < 4 || y.len() != rows.len() || w.len() != rows.len() {
        return Err(RegressorError::TooFew(rows.len().min(y.len()).min(w.len())));
    }
    use forust_ml::GradientBooster;
    use forust_ml::objective::ObjectiveType;
    // forust's Matrix is column-major.
    let n = rows.len();
    let mut cols = Vec::with_capacity(n * N_FEATURES);
    for f in 0..N_FEATURES {
        cols.extend(rows.iter().map(|r| r[f]));
    }
    let m = forust_ml::Matrix::new(&cols, n, N_FEATURES);
    // 60 trees keep the prediction of a 70-kernel model under the 20 µs budget.
    let iterations = if n < 60 { 40 } else { 60 };
    let mut gb = GradientBooster::default()
        .set_objective_type(ObjectiveType::SquaredLoss)
        .set_iterations(iterations)
        .set_learning_rate(0.2)
        .set_max_depth(DEPTH)
        .set_min_leaf_weight(2.0)
        .set_parallel(false)
        .set_seed(seed)
        .set_initialize_base_score(true);
    gb.fit(&m, y, w, None)
        .map_err(|e| RegressorError::Training(e.to_string()))?;
    let trees = gb
        .trees
        .iter()
        .map(|t| FlatTree::from_forust(t, DEPTH as u8))
        .collect();
    Ok((gb.base_score, trees))
}

/// Median relative error over a 4-fold split, the figure calibration refines on.
fn holdout(roofline: &Roofline, data: &[(Kernel, f64)], seed: u64) -> Option<f64> {
    if data.len() < 16 {
        return None;
    }
    let mut errs = Vec::new();
    for fold in 0..4 {
        let train_set: Vec<(Kernel, f64)> = data
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 4 != fold)
            .map(|(_, d)| d.clone())
            .collect();
        let rows: Vec<[f64; N_FEATURES]> = train_set.iter().map(|(k, _)| features(k)).collect();
        let y: Vec<f64> = train_set
            .iter()
            .map(|(k, ms)| (ms.max(1e-6) / roofline.kernel_ms(k)).ln())
            .collect();
        let (base, trees) = train(&rows, &y, seed).ok()?;
        let r = Regressor {
            base,
            trees,
            samples: rows.len(),
            holdout_error: None,
            in_network: false,
            fast: Vec::new(),
        };
        for (i, (k, ms)) in data.iter().enumerate() {
            if i % 4 == fold {
                errs.push(((r.predict_ms(roofline, k) - ms) / ms).abs());
            }
        }
    }
    crate::util::percentile(errs, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::prior::Prior;

    #[test]
    fn the_fast_trees_agree_with_the_serialised_ones() {
        let roofline = Roofline::default();
        let data: Vec<(Kernel, f64)> = Prior::shipped()
            .kernels
            .iter()
            .filter(|k| k.kind == crate::kernels::KernelKind::Pointwise)
            .take(300)
            .map(|k| {
                (
                    k.clone(),
                    roofline.kernel_ms(k) * (1.0 + (k.cin % 7) as f64 / 5.0),
                )
            })
            .collect();
        let r = Regressor::fit(&roofline, &data, 1).unwrap();
        assert_eq!(r.fast.len(), r.trees.len());
        let rows: Vec<[f64; N_FEATURES]> = data.iter().map(|(k, _)| features(k)).collect();
        let fast = r.log_ratios(&rows);
        let slow = Regressor {
            fast: Vec::new(),
            ..r.clone()
        }
        .log_ratios(&rows);
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
        // A profile read back compiles its trees again.
        let json = serde_json::to_string(&r).unwrap();
        let mut back: Regressor = serde_json::from_str(&json).unwrap();
        assert!(back.fast.is_empty());
        back.compile();
        assert_eq!(back.fast, r.fast);
    }
}
