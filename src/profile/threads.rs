//! Thread scaling: how much faster a kernel runs with more threads, per kernel kind and as a
//! function of the kernel's size, so that one profile predicts every thread count of its board.
//!
//! The speed-up of a kernel at `n` threads over one thread is `1 + (n − 1)·eff`, with the parallel
//! efficiency `eff = a + b·log10(work)` clamped to [0, 1]: small kernels spend their time in fixed
//! costs that do not split (scheduling, synchronising the threads), large ones split almost fully.
//! `work` is the kernel's FLOPs, or the bytes it reads and writes where that is more (data movement
//! does no arithmetic); the coefficients are fitted by calibration (`calibrate`'s thread phase).
//!
//! Where calibration found that the kernel's shape says more than its size (a grouped convolution
//! splits worse than a dense one of the same work; an elementwise kernel after a split one reads
//! what the other core wrote), a kind's efficiency is given instead by boosted trees over the
//! kernel's features ([`EfficiencyTrees`]), kept only when they predicted the held-out networks'
//! speed-ups better than the lines.
use super::regressor::{FastTree, FlatTree};
use crate::kernels::{Kernel, KernelKind, N_FEATURES, features};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Parallel efficiency assumed for a thread count a profile did not calibrate: half of ideal, a
/// conservative figure (tract splits matrix products well and elementwise kernels not at all), with
/// a note on every such prediction.
pub const UNCALIBRATED_EFFICIENCY: f64 = 0.5;

/// The size measure the efficiency depends on: log10 of the kernel's FLOPs or of the bytes it
/// moves, whichever is more.
pub fn log_work(k: &Kernel) -> f64 {
    let work = k.flops.max(k.input_bytes + k.output_bytes).max(1);
    (work as f64).log10()
}

/// The lowest efficiency a fit is followed down to: below zero a kernel runs slower split over
/// threads than on one (the threads' start and join cost more than the share of work they take),
/// which calibration's samples of small kernels show.
pub const MIN_EFFICIENCY: f64 = -1.0;

/// The smallest speed-up predicted: a kernel split over threads is taken to cost at most twice its
/// one-thread time, however far below zero its size puts the fitted line.
pub const MIN_SPEEDUP: f64 = 0.5;

/// Speed-up at `threads` of a kernel with parallel efficiency `eff` (1 at one thread).
pub fn speedup(eff: f64, threads: usize) -> f64 {
    let eff = if eff.is_finite() { eff.min(1.0) } else { 0.0 };
    (1.0 + threads.saturating_sub(1) as f64 * eff).max(MIN_SPEEDUP)
}

/// The parallel efficiency of one kind as a function of size.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Efficiency {
    pub intercept: f64,
    /// Per decade of work.
    pub slope: f64,
    /// (kernel, thread count) pairs it was fitted on.
    pub samples: usize,
    /// Median relative error of the fitted speed-up over the samples (a fraction).
    pub error: f64,
}

impl Efficiency {
    /// A constant efficiency.
    pub fn constant(eff: f64) -> Efficiency {
        Efficiency {
            intercept: eff,
            slope: 0.0,
            samples: 0,
            error: 0.0,
        }
    }

    /// The efficiency at `log_work` (see [`log_work`]), in [[`MIN_EFFICIENCY`], 1]. The fit is a
    /// straight line through speed-ups below one as well as above (least squares on the unclamped
    /// form), so it is followed below zero: clamped there, small kernels were predicted no slower
    /// at two threads than at one, and small networks, made of them, came out 15–25 % fast at two.
    pub fn at(&self, log_work: f64) -> f64 {
        let e = self.intercept + self.slope * log_work;
        if e.is_finite() {
            e.clamp(MIN_EFFICIENCY, 1.0)
        } else {
            0.0
        }
    }
}

/// A kind's parallel efficiency as boosted trees over the kernel's features
/// ([`crate::kernels::features`]): base + Σ trees, clamped to [[`MIN_EFFICIENCY`], 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EfficiencyTrees {
    pub base: f64,
    pub trees: Vec<FlatTree>,
    /// (kernel, thread count) pairs it was fitted on.
    pub samples: usize,
    /// The trees in evaluation form ([`FastTree`]), filled by [`EfficiencyTrees::compile`]:
    /// a prediction at another thread count evaluates them for every kernel of the model.
    #[serde(skip)]
    pub fast: Vec<FastTree>,
}

impl EfficiencyTrees {
    /// Builds the evaluation form of the trees (all or none, as the latency regressors do).
    pub fn compile(&mut self) {
        self.fast = super::regressor::compile_trees(&self.trees);
    }

    pub fn at(&self, x: &[f64; N_FEATURES]) -> f64 {
        let e = if !self.fast.is_empty() && self.fast.len() == self.trees.len() {
            let x32 = x.map(|v| v as f32);
            self.base + self.fast.iter().map(|t| t.eval(&x32)).sum::<f32>() as f64
        } else {
            self.base + self.trees.iter().map(|t| t.eval(x)).sum::<f64>()
        };
        if e.is_finite() {
            e.clamp(MIN_EFFICIENCY, 1.0)
        } else {
            0.0
        }
    }
}

/// What calibration measured of thread scaling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadScaling {
    /// The thread counts timed (one thread among them: speed-ups are relative to it).
    pub counts: Vec<usize>,
    /// Per kind with enough samples.
    pub kinds: BTreeMap<KernelKind, Efficiency>,
    /// All kinds together, for a kind without a fit of its own.
    pub pooled: Efficiency,
    /// Per thread count: median relative error of held-out synthetic networks' speed-up predicted
    /// from their kernels' fitted speed-ups (absent where no network was held out).
    #[serde(default)]
    pub network_error: BTreeMap<usize, f64>,
    /// Per thread count beyond one: the reference workload's parallel ratio (wall time of a pass
    /// at that count over one at a single thread) measured here at calibration, the way the live
    /// probe measures it — what a live reading is compared with (absent in profiles made before:
    /// they compare it with the ratio these fits predict for the same networks).
    #[serde(default)]
    pub reference_ratio: BTreeMap<usize, f64>,
    /// Per kind, where they were kept: the efficiency as trees over the kernel's features, which
    /// take the place of the kind's line (absent in profiles made before, and where the lines
    /// predicted the held-out networks as well).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trees: BTreeMap<KernelKind, EfficiencyTrees>,
}

impl ThreadScaling {
    /// The fit for `kind`: its own, or the pooled one.
    pub fn efficiency_of(&self, kind: KernelKind) -> &Efficiency {
        self.kinds.get(&kind).unwrap_or(&self.pooled)
    }

    /// The parallel efficiency of kernel `k`.
    pub fn efficiency(&self, k: &Kernel) -> f64 {
        match self.trees.get(&k.kind) {
            Some(t) => t.at(&features(k)),
            None => self.efficiency_of(k.kind).at(log_work(k)),
        }
    }

    /// Compiles the trees of every kind ([`EfficiencyTrees::compile`]).
    pub fn compile(&mut self) {
        self.trees.values_mut().for_each(EfficiencyTrees::compile);
    }

    /// As [`ThreadScaling::efficiency`], for a kernel known by its kind, size and features.
    pub fn efficiency_at(&self, kind: KernelKind, log_work: f64, x: &[f64; N_FEATURES]) -> f64 {
        match self.trees.get(&kind) {
            Some(t) => t.at(x),
            None => self.efficiency_of(kind).at(log_work),
        }
    }

    /// The most threads calibrated.
    pub fn max_count(&self) -> usize {
        self.counts.iter().copied().max().unwrap_or(1)
    }

    /// Whether `threads` lies within the counts timed (predictions beyond extrapolate).
    pub fn covers(&self, threads: usize) -> bool {
        threads >= 1 && threads <= self.max_count()
    }
}

/// The factor that takes a kernel's time at `from` threads to its time at `to` threads, for
/// parallel efficiency `eff`.
pub fn factor(eff: f64, from: usize, to: usize) -> f64 {
    speedup(eff, from.max(1)) / speedup(eff, to.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficiency_follows_the_fit_below_zero_and_speedups_compose() {
        let e = Efficiency {
            intercept: -1.0,
            slope: 0.25,
            samples: 10,
            error: 0.0,
        };
        // Below zero the line is followed (a small kernel slower split), down to MIN_EFFICIENCY.
        assert!((e.at(3.0) + 0.25).abs() < 1e-12);
        assert_eq!(e.at(-20.0), MIN_EFFICIENCY);
        assert!((e.at(6.0) - 0.5).abs() < 1e-12);
        assert_eq!(e.at(10.0), 1.0);
        assert_eq!(e.at(f64::NAN), 0.0);
        assert_eq!(speedup(0.5, 1), 1.0);
        assert_eq!(speedup(-1.0, 1), 1.0);
        assert_eq!(speedup(0.5, 3), 2.0);
        assert_eq!(speedup(2.0, 2), 2.0);
        assert!((speedup(-0.25, 2) - 0.75).abs() < 1e-12);
        assert_eq!(speedup(-1.0, 2), MIN_SPEEDUP);
        assert_eq!(speedup(f64::NAN, 2), 1.0);
        // 1 → 3 threads at efficiency 0.5 halves the time; 3 → 1 doubles it.
        assert!((factor(0.5, 1, 3) - 0.5).abs() < 1e-12);
        assert!((factor(0.5, 3, 1) - 2.0).abs() < 1e-12);
        assert_eq!(factor(0.7, 2, 2), 1.0);
    }

    #[test]
    fn a_kind_without_a_fit_takes_the_pooled_one() {
        let mut k = Kernel::blank("k".into(), KernelKind::Pool);
        k.flops = 1_000_000;
        let s = ThreadScaling {
            counts: vec![1, 2],
            kinds: BTreeMap::from([(KernelKind::Conv, Efficiency::constant(0.9))]),
            pooled: Efficiency::constant(0.3),
            network_error: BTreeMap::new(),
            reference_ratio: BTreeMap::new(),
            trees: BTreeMap::new(),
        };
        assert_eq!(s.efficiency(&k), 0.3);
        k.kind = KernelKind::Conv;
        assert_eq!(s.efficiency(&k), 0.9);
        assert!(s.covers(2) && !s.covers(3) && !s.covers(0));
        assert_eq!(log_work(&k), 6.0);
    }
}
