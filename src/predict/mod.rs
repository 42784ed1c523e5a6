//! Prediction: base latency from the device profile (sum of per-kernel predictions), scaled by a
//! slowdown computed from the live state of the board.
//!
//! Entry points: [`Predictor::base`] (cacheable per model and profile), [`Predictor::predict`] (the
//! live state applied), and [`Predictor::predict_live`] / [`Predictor::observe`] (with the online
//! learner: predict, and learn from what was observed).
//!
//! The base describes the profile's thread count; [`Predictor::predict`] scales it to the asked
//! count per kernel with the profile's fitted thread scaling ([`crate::profile::threads`]).
pub mod deadline;
pub mod energy;
pub mod learner;
mod live;
pub mod parallel;
pub mod slowdown;

pub use learner::Learner;
pub use live::{Job, Pending};
pub use slowdown::Slowdown;

use crate::kernels::{Decomposition, Kernel, KernelKind};
use crate::profile::threads::UNCALIBRATED_EFFICIENCY;
use crate::profile::{CacheBytes, CacheCurve, Profile, Roofline};
use crate::sense::Snapshot;
use serde::{Deserialize, Serialize};

/// The static part of a prediction, which depends only on the model and the profile.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BasePrediction {
    pub latency_ms: f64,
    /// Per kernel: predicted ms and whether the roofline fallback gave it.
    pub kernels: Vec<(f64, bool)>,
    /// Per kernel: the share of its time that is memory traffic (0 compute-bound … 1 memory-bound).
    pub memory_share: Vec<f64>,
    pub fallback_kernels: usize,
    pub peak_memory_bytes: u64,
    pub calibrated: bool,
    /// Share of the base time per kernel kind (index as in [`KernelKind::ALL`]).
    #[serde(default)]
    pub kind_shares: learner::KindShares,
    /// Per kernel: the part of its ms that is the cost of the model's working set outgrowing the
    /// caches (see [`Predictor::cache_ms`]); empty where the profile has no cache curve.
    #[serde(default)]
    pub cache_ms: Vec<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KernelPrediction {
    pub name: String,
    pub kind: KernelKind,
    pub latency_ms: f64,
    /// True when no regressor covers the kind and the roofline fallback gave the figure.
    pub fallback: bool,
    /// Energy above idle, J, where the profile has power figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_joules: Option<f64>,
    /// The first and last graph node the kernel runs (indices in the imported graph's order), so
    /// that another board planning a split can tell where this board's kernels begin and end;
    /// absent where the decomposition has no node lists (one read back from JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<[usize; 2]>,
    /// Live ms of this kernel and every one after it run as a model of their own (the suffix of a
    /// split at this kernel's start, its working set its own), for another board planning a split
    /// with this one; filled by `plan::suffixes` where the profile has a cache curve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Prediction {
    pub latency_ms: f64,
    pub interval_ms: [f64; 2],
    pub peak_memory_bytes: u64,
    /// False when no device profile was loaded and every kernel came from the roofline fallback.
    pub calibrated: bool,
    /// Static prediction (quiet board) and the factor the live state applied to it.
    pub base_ms: f64,
    pub slowdown: f64,
    pub fallback_kernels: usize,
    /// The state the prediction used, as the factors it produced.
    pub state: StateUsed,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernels: Option<Vec<KernelPrediction>>,
    /// Energy of the inference above the board's idle power, J ([`energy`]); absent with a reason
    /// where the profile has no power figures.
    #[serde(default)]
    pub energy_joules: Option<f64>,
    #[serde(default)]
    pub energy_unavailable: Option<String>,
    /// What the caller should know about how the figure was made (a thread count the profile did
    /// not calibrate …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A thread count the profile's board has no cores for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("threads must be 1..={max} (the cores of the profile's board), got {got}")]
pub struct ThreadsError {
    pub max: usize,
    pub got: usize,
}

/// How a prediction for some thread count is scaled from the profile's: a factor per kernel (its
/// time at the asked count over its time at the profile's), and what to tell about it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThreadScale {
    /// None: the profile's own count, nothing to scale.
    pub factors: Option<Vec<f64>>,
    pub notes: Vec<String>,
}

/// What the live state contributed to a prediction.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StateUsed {
    /// CPU busy fraction of other processes (0–1 of all cores), if known.
    pub others_busy: Option<f64>,
    pub memory_bandwidth_bytes_per_second: Option<f64>,
    pub freq_ratio: Option<f64>,
    pub cpu_factor: f64,
    pub memory_factor: f64,
    pub frequency_factor: f64,
    /// Speed relative to calibration from the reference workload, as applied to the prediction
    /// (1: not measured, or not applied).
    pub speed_factor: f64,
    /// The reference workload's time now over its time at calibration, applied or not (none: not
    /// read, or the profile has no reference timing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_ratio: Option<f64>,
    /// Correction learned online from observations (1 = none).
    pub learned_factor: f64,
}

/// The share of a kernel's roofline time that is memory traffic (0 compute-bound … 1 memory-bound).
pub fn memory_share_of(r: &Roofline, k: &crate::kernels::Kernel) -> f64 {
    let bytes = (k.input_bytes + k.output_bytes + k.weight_bytes + k.scratch_bytes) as f64;
    let mem = bytes / r.bytes_per_second.max(1.0);
    let comp = k.flops as f64 / r.flops_per_second.max(1.0);
    if mem + comp > 0.0 {
        mem / (mem + comp)
    } else {
        0.0
    }
}

/// The slowdown from which the load fit's residual is taken in full in a prediction's band: about
/// the smallest the calibration's load scenarios cause, so below it the residual is scaled down.
const LOAD_IN_FORCE: f64 = 1.25;

/// Seconds per weight byte a model pays because its weights and activations exceed the last-level
/// cache (`llc` bytes) and stream from DRAM at `bandwidth` bytes/s: hit share ≈ LLC / footprint under
/// cyclic reuse, the rest at DRAM bandwidth.
pub fn cold_weight_seconds_per_byte(llc: f64, bandwidth: f64, d: &Decomposition) -> f64 {
    let footprint = (d.weights_bytes + d.peak_activation_bytes) as f64;
    if llc <= 0.0 || bandwidth <= 0.0 || footprint <= llc {
        return 0.0;
    }
    (1.0 - llc / footprint) / bandwidth
}

/// Bytes of a kernel's traffic whose cost follows the run's working set, under `rule`: its weights
/// read; under the older rule also what it writes — its output and its scratch (im2col, packing) —
/// twice, since a write first reads the line it lands in and the line is written back when evicted;
/// under [`CacheBytes::WeightsAndEntry`] that and the model's input too, for a run's `first` kernel
/// only.
pub fn recycled_bytes(k: &Kernel, rule: CacheBytes, first: bool) -> f64 {
    let writes = (2 * k.output_bytes + 2 * k.scratch_bytes) as f64;
    match rule {
        CacheBytes::Weights => k.weight_bytes as f64,
        CacheBytes::WeightsAndWrites => k.weight_bytes as f64 + writes,
        CacheBytes::WeightsAndEntry if first => (k.weight_bytes + k.input_bytes) as f64 + writes,
        CacheBytes::WeightsAndEntry => k.weight_bytes as f64,
    }
}

/// The memory a run of `kernels` (a model, or a part of one run by itself) cycles through: their
/// weights, every tensor they write (each run writes them afresh and the allocator does not hand
/// back the same lines in the same order, so their sum rather than the peak of live ones), the
/// largest scratch, and the first kernel's input.
pub fn footprint_of(kernels: &[Kernel]) -> f64 {
    let written: u64 = kernels
        .iter()
        .map(|k| k.weight_bytes + k.output_bytes)
        .sum();
    let scratch = kernels.iter().map(|k| k.scratch_bytes).max().unwrap_or(0);
    let input = kernels.first().map(|k| k.input_bytes).unwrap_or(0);
    (written + scratch + input) as f64
}

/// The cache curve the board streams now, from the memory probe's live points (sense's
/// `cache_curve`); None with fewer than two, which say nothing of where the knee is.
pub fn live_cache_curve(s: &Snapshot) -> Option<CacheCurve> {
    let mut points: Vec<[f64; 2]> = s
        .probe
        .cache_curve
        .iter()
        .filter(|p| p.bytes > 0 && p.seconds_per_byte.is_finite() && p.seconds_per_byte > 0.0)
        .map(|p| [p.bytes as f64, p.seconds_per_byte])
        .collect();
    points.sort_by(|a, b| a[0].total_cmp(&b[0]));
    monotone(&mut points);
    (points.len() >= 2).then_some(CacheCurve { points })
}

/// Makes the costs non-decreasing in size by pooling adjacent points that break the order into
/// their mean (pool-adjacent-violators, unweighted), rather than raising each to the largest
/// before it as calibration's best-of-several sweeps are: one slow live reading must not lift
/// every larger size with it. A dozen points; written out rather than a crate for one loop.
fn monotone(points: &mut [[f64; 2]]) {
    let mut blocks: Vec<(f64, usize)> = Vec::with_capacity(points.len());
    for p in points.iter() {
        blocks.push((p[1], 1));
        while let [.., (a, n), (b, m)] = blocks[..] {
            if a <= b {
                break;
            }
            blocks.truncate(blocks.len() - 2);
            blocks.push(((a * n as f64 + b * m as f64) / (n + m) as f64, n + m));
        }
    }
    let costs = blocks.iter().flat_map(|&(c, n)| std::iter::repeat_n(c, n));
    for (p, c) in points.iter_mut().zip(costs) {
        p[1] = c;
    }
}

/// [`footprint_of`] a whole model.
pub fn footprint(d: &Decomposition) -> f64 {
    footprint_of(&d.kernels)
}

/// Predicts from a profile (or, without one, from the roofline alone).
#[derive(Clone, Debug)]
pub struct Predictor {
    pub profile: Option<Profile>,
    pub roofline: Roofline,
    pub slowdown: Slowdown,
    /// Half-width in the log of the static model's own 90 % band (see [`Predictor::band`]), taken
    /// once from the profile's quality report rather than per prediction; None without one.
    static_half: Option<f64>,
    /// The profile's expected parallel ratio of the reference networks by thread count, worked out
    /// on first use ([`parallel`]); shared by clones, which hold the same profile.
    parallel_expected: ParallelExpected,
}

/// Each kernel kind's live speed term at one reading ([`Predictor::kind_speeds`]).
#[derive(Clone, Debug)]
struct KindSpeeds {
    measured: std::collections::BTreeMap<KernelKind, f64>,
    unmeasured: f64,
}

impl KindSpeeds {
    fn of(&self, kind: KernelKind) -> f64 {
        self.measured.get(&kind).copied().unwrap_or(self.unmeasured)
    }
}

type ParallelExpected =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<usize, Option<f64>>>>;

impl Predictor {
    pub fn new(profile: Option<Profile>, fallback: Roofline) -> Predictor {
        let roofline = profile.as_ref().map(|p| p.roofline).unwrap_or(fallback);
        let slowdown = profile
            .as_ref()
            .map(Slowdown::from_profile)
            .unwrap_or_default();
        let static_half = profile
            .as_ref()
            .and_then(|p| p.quality.as_ref())
            .and_then(|q| q.composition_error)
            .filter(|e| e.is_finite() && *e > 0.0)
            // The 90 % point of a Laplace error from its median (the error model of `deadline`).
            .map(|median| (1.0 + median).ln() * std::f64::consts::LN_10 / std::f64::consts::LN_2);
        Predictor {
            profile,
            roofline,
            slowdown,
            static_half,
            parallel_expected: Default::default(),
        }
    }

    /// Extra seconds per weight byte because the model's weights are not in the last-level cache when
    /// a layer runs again: calibration times each kernel alone, with its weights cached, but a model
    /// whose weights and activations exceed the LLC streams a share of its weights from DRAM on every
    /// inference. Hit share ≈ LLC / footprint (cyclic reuse), the rest at the probe's DRAM bandwidth.
    pub fn cold_weight_seconds_per_byte(&self, d: &Decomposition) -> f64 {
        let Some(p) = &self.profile else { return 0.0 };
        if !p.cache_model {
            return 0.0;
        }
        cold_weight_seconds_per_byte(
            p.device.llc_bytes() as f64,
            p.reference.probe_bytes_per_second,
            d,
        )
    }

    fn llc_bytes(&self) -> f64 {
        self.profile
            .as_ref()
            .map(|p| p.device.llc_bytes() as f64)
            .unwrap_or(0.0)
    }

    fn in_network(&self, kind: KernelKind) -> bool {
        self.profile
            .as_ref()
            .and_then(|p| p.regressors.get(&kind))
            .is_some_and(|r| r.in_network)
    }

    pub fn calibrated(&self) -> bool {
        self.profile.is_some()
    }

    /// The board's cache curve, where the profile has one and models the cache at all.
    pub fn cache_curve(&self) -> Option<&CacheCurve> {
        self.profile
            .as_ref()
            .filter(|p| p.cache_model && !p.reference.cache.is_empty())
            .map(|p| &p.reference.cache)
    }

    /// Milliseconds kernel `k` pays inside a run whose working set is `footprint` bytes because that
    /// set outgrows the caches, over what its regressor learned: kinds learned inside networks had
    /// that cost taken out of their targets (so they learned a hot cache); kinds timed alone paid
    /// what their own working set cost then. `first`: `k` is the run's first kernel. None without
    /// a cache curve.
    pub fn cache_ms(&self, k: &Kernel, footprint: f64, first: bool) -> Option<f64> {
        let curve = self.cache_curve()?;
        let timed = if self.in_network(k.kind) {
            0.0
        } else {
            (k.weight_bytes + k.input_bytes + k.output_bytes + k.scratch_bytes) as f64
        };
        let rule = self.profile.as_ref()?.cache_bytes;
        Some(recycled_bytes(k, rule, first) * curve.extra_seconds_per_byte(footprint, timed) * 1e3)
    }

    /// Kernel `i` of `d`'s base figure re-priced for a run whose working set is `footprint` bytes
    /// (a part of the model run by itself): what the model's own working set cost it is replaced by
    /// what `footprint` costs. None without a cache curve or where `i` is out of range.
    pub fn repriced_ms(
        &self,
        d: &Decomposition,
        base: &BasePrediction,
        i: usize,
        footprint: f64,
    ) -> Option<f64> {
        let (ms, _) = *base.kernels.get(i)?;
        let cache = *base.cache_ms.get(i)?;
        Some(ms - cache + self.cache_ms(d.kernels.get(i)?, footprint, i == 0)?)
    }

    /// The speed term of each kernel kind when the whole reads `reading`: a kind that followed the
    /// reference reading more than the calibration's networks did follows a live reading more too,
    /// in the same proportion, so that a network of the usual mix moves as it did before and its
    /// parts move each by their own kinds. Worked out once per prediction, not per kernel. None
    /// where the profile did not measure it (every kind follows alike) or the reading is the
    /// calibration's own.
    fn kind_speeds(&self, reading: f64) -> Option<KindSpeeds> {
        let r = &self.profile.as_ref()?.reference;
        let usable = |x: f64| x.is_finite() && x > 0.0;
        if r.following.is_empty() || !usable(r.following_mix) || !usable(reading) || reading == 1.0
        {
            return None;
        }
        let at = |own: f64| reading.powf((own / r.following_mix).min(4.0));
        Some(KindSpeeds {
            measured: r.following.iter().map(|(&k, &own)| (k, at(own))).collect(),
            // A kind too rare to measure was brought to the nominal speed by the whole reading.
            unmeasured: at(1.0),
        })
    }

    /// Sums per-kernel predictions; cache the result per (model, profile).
    pub fn base(&self, d: &Decomposition) -> BasePrediction {
        let mut kernels = Vec::with_capacity(d.kernels.len());
        let mut memory_share = Vec::with_capacity(d.kernels.len());
        let mut cache_ms = Vec::new();
        let cold = self.cold_weight_seconds_per_byte(d);
        let per_kernel = self.kernel_predictions(d);
        // The model's working set, once: every kernel of a run shares it.
        let run_footprint = self.cache_curve().map(|_| footprint(d));
        for (i, (k, &(ms, fb))) in d.kernels.iter().zip(&per_kernel).enumerate() {
            let ms = if let Some(f) = run_footprint {
                let c = self.cache_ms(k, f, i == 0).unwrap_or(0.0);
                cache_ms.push(c);
                ms + c
            } else {
                // A profile without a curve was fitted with the nominal LLC's hit share: weights
                // that do not fit in the LLC with the kernel's activations were streamed from DRAM
                // when the kernel was timed alone already, and kernels timed inside networks had
                // the cold-weight time taken out of their targets.
                let cached_alone =
                    (k.weight_bytes + k.input_bytes + k.output_bytes) as f64 <= self.llc_bytes();
                if cached_alone || self.in_network(k.kind) {
                    ms + k.weight_bytes as f64 * cold * 1e3
                } else {
                    ms
                }
            };
            kernels.push((ms, fb));
            memory_share.push(memory_share_of(&self.roofline, k));
        }
        let latency_ms: f64 = kernels.iter().map(|k| k.0).sum();
        let mut kind_shares = [0.0; learner::KINDS];
        if latency_ms > 0.0 {
            for (k, &(ms, _)) in d.kernels.iter().zip(&kernels) {
                if let Some(i) = KernelKind::ALL.iter().position(|&x| x == k.kind) {
                    kind_shares[i] += ms / latency_ms;
                }
            }
        }
        BasePrediction {
            latency_ms,
            kind_shares,
            fallback_kernels: kernels.iter().filter(|k| k.1).count(),
            kernels,
            memory_share,
            peak_memory_bytes: d.peak_memory_bytes,
            calibrated: self.profile.is_some(),
            cache_ms,
        }
    }

    /// Scales a base prediction by the live (or what-if) state. `threads` is the model's thread count.
    pub fn predict(
        &self,
        d: &Decomposition,
        base: &BasePrediction,
        state: &Snapshot,
        threads: usize,
        with_kernels: bool,
    ) -> Prediction {
        let mut factors = self.slowdown.factors(state, threads);
        let parallel = self.parallel(state, threads);
        let speeds = self.kind_speeds(factors.speed);
        factors.speed *= parallel.factor;
        let scale = self.thread_scale(d, threads);
        let mut total = 0.0;
        let mut quiet = 0.0;
        let mut kernels = with_kernels.then(|| Vec::with_capacity(base.kernels.len()));
        let power = energy::power_of(self.profile.as_ref());
        let watts = power.as_ref().ok().map(|p| energy::KindWatts::new(p));
        let mut joules = 0.0;
        for (i, &(ms, fallback)) in base.kernels.iter().enumerate() {
            let share = base.memory_share.get(i).copied().unwrap_or(0.0);
            let ms = match &scale.factors {
                Some(f) => ms * f.get(i).copied().unwrap_or(1.0),
                None => ms,
            };
            quiet += ms;
            let live = match (&speeds, d.kernels.get(i)) {
                (Some(speeds), Some(k)) => {
                    ms * factors.kernel_at(share, speeds.of(k.kind) * parallel.factor)
                }
                _ => ms * factors.kernel(share),
            };
            total += live;
            let kernel_joules = match (&watts, d.kernels.get(i)) {
                (Some(w), Some(k)) => Some(w.joules(k.kind, live)),
                _ => None,
            };
            joules += kernel_joules.unwrap_or(0.0);
            if let (Some(v), Some(k)) = (kernels.as_mut(), d.kernels.get(i)) {
                v.push(KernelPrediction {
                    name: k.name.clone(),
                    kind: k.kind,
                    latency_ms: live,
                    fallback,
                    energy_joules: kernel_joules,
                    nodes: d
                        .kernel_nodes
                        .get(i)
                        .and_then(|n| Some([*n.iter().min()?, *n.iter().max()?])),
                    suffix_ms: None,
                });
            }
        }
        let (lo, hi) = self.band(
            base.calibrated,
            if quiet > 0.0 { total / quiet } else { 1.0 },
            self.slowdown.speed_spread(state).hypot(parallel.spread),
        );
        let state_used = StateUsed {
            others_busy: state.others_busy(),
            memory_bandwidth_bytes_per_second: state.probe.memory_bandwidth_bytes_per_second.ewma,
            freq_ratio: state.freq_ratio,
            cpu_factor: factors.cpu,
            memory_factor: factors.memory,
            frequency_factor: factors.frequency,
            speed_factor: factors.speed,
            speed_ratio: self.slowdown.reference_speed(state),
            learned_factor: 1.0,
        };
        Prediction {
            state: state_used,
            latency_ms: total,
            interval_ms: [total * lo, total * hi],
            peak_memory_bytes: base.peak_memory_bytes,
            calibrated: base.calibrated,
            base_ms: quiet,
            slowdown: if quiet > 0.0 { total / quiet } else { 1.0 },
            fallback_kernels: base.fallback_kernels,
            kernels,
            energy_joules: power.is_ok().then_some(joules),
            energy_unavailable: power.err().map(|e| e.0),
            notes: scale.notes,
        }
    }

    /// The 90 % band of a prediction the live state slowed by `slowdown`, as ratios to it: the
    /// static model's own error (the profile's held-out whole networks) and, as far as the state
    /// slows the board, the load fit's residual — on a quiet board the load fit's wide band would
    /// say far less than the predictions know. A profile without a quality report keeps the load
    /// fit's band. `speed_spread` (log, 90 %) is how far the board's speed may move before the job
    /// runs ([`Slowdown::speed_spread`]); the errors being independent, it adds in quadrature.
    pub fn band(&self, calibrated: bool, slowdown: f64, speed_spread: f64) -> (f64, f64) {
        let spread = if speed_spread.is_finite() {
            speed_spread.max(0.0)
        } else {
            0.0
        };
        let (lo, hi) = self.slowdown.interval(calibrated);
        let (Some(base), true) = (self.static_half, calibrated) else {
            let half = (hi / lo).ln().abs() / 2.0;
            let extra = if half.is_finite() {
                half.hypot(spread) - half
            } else {
                0.0
            };
            return (lo * (-extra).exp(), hi * extra.exp());
        };
        let load = (hi / lo).ln().abs() / 2.0;
        let slowed = slowdown.ln().abs();
        let w = if slowed.is_finite() {
            (slowed / LOAD_IN_FORCE.ln()).min(1.0)
        } else {
            1.0
        };
        let q = base.hypot(load * w).hypot(spread);
        ((-q).exp(), q.exp())
    }

    /// Whether predictions carry energy: the profile has power figures, or why not.
    pub fn energy_available(&self) -> Result<(), energy::NoEnergy> {
        energy::power_of(self.profile.as_ref()).map(|_| ())
    }

    /// The most threads a prediction is made for: the board's cores.
    pub fn max_threads(&self) -> usize {
        (self.slowdown.cores.round() as usize).max(1)
    }

    /// `threads` when it is 1 up to the board's cores; why not otherwise.
    pub fn check_threads(&self, threads: usize) -> Result<usize, ThreadsError> {
        let max = self.max_threads();
        if (1..=max).contains(&threads) {
            Ok(threads)
        } else {
            Err(ThreadsError { max, got: threads })
        }
    }

    /// The thread count the base prediction describes: the profile's (one without a profile).
    pub fn base_threads(&self) -> usize {
        self.profile.as_ref().map_or(1, |p| p.threads.max(1))
    }

    /// How kernels timed at the profile's thread count scale to `threads`: by the profile's fitted
    /// speed-ups, or, where it has none, by a conservative efficiency
    /// ([`UNCALIBRATED_EFFICIENCY`]) with a note saying so. Beyond the counts calibrated the fit is
    /// extrapolated, with a note too.
    pub fn thread_scale(&self, d: &Decomposition, threads: usize) -> ThreadScale {
        let threads = threads.max(1);
        let from = self.base_threads();
        if threads == from {
            return ThreadScale::default();
        }
        let scaling = self
            .profile
            .as_ref()
            .and_then(|p| p.thread_scaling.as_ref());
        let mut notes = Vec::new();
        // The decomposition's cached features: the trees, where a profile has them, split on them.
        let eff = |i: usize, k: &crate::kernels::Kernel| match scaling {
            Some(s) => {
                s.efficiency_at(k.kind, crate::profile::threads::log_work(k), &d.features(i))
            }
            None => UNCALIBRATED_EFFICIENCY,
        };
        match scaling {
            None => notes.push(format!(
                "the profile was calibrated for {from} thread{} only: {threads} threads assume a parallel efficiency of {:.0} % (`augur calibrate --only-threads` measures every count)",
                if from == 1 { "" } else { "s" },
                UNCALIBRATED_EFFICIENCY * 100.0
            )),
            Some(s) if !s.covers(threads) => notes.push(format!(
                "threads {threads} lie beyond the counts the profile calibrated (up to {}); its speed-ups are extrapolated",
                s.max_count()
            )),
            Some(_) => {}
        }
        let factors = d
            .kernels
            .iter()
            .enumerate()
            .map(|(i, k)| crate::profile::threads::factor(eff(i, k), from, threads))
            .collect();
        ThreadScale {
            factors: Some(factors),
            notes,
        }
    }

    /// Per kernel: quiet-board ms and whether the roofline fallback gave it. Models repeat layers
    /// (resnet50's 73 kernels are 40 configurations), so each distinct one is evaluated once, and the
    /// regressors run kind by kind over all of a model's kernels at once.
    /// A matrix-vector product (one row through a weight matrix: a classifier head at batch 1)
    /// does two FLOPs per weight it reads once, so its time is the time to stream its bytes: priced
    /// from the board's swept cost per byte at the hot end of the cache curve, with
    /// [`Predictor::cache_ms`] adding what the run's working set costs over that, as for every
    /// kind learned inside networks. The regressor of its kind learns mostly matrix products over
    /// many rows; the few heads in the calibration networks left it 30–170 % over on a head run
    /// alone (a split's suffix), while the curve's figure is the timed cost of that stream. None
    /// for other kernels, or without a curve.
    fn streamed_ms(&self, k: &Kernel) -> Option<f64> {
        let rows: usize = k.output_shape.iter().product::<usize>() / k.cout.max(1);
        if k.kind != KernelKind::MatMul
            || k.weight_bytes == 0
            || rows != 1
            || !self.in_network(k.kind)
        {
            return None;
        }
        let hot = self.cache_curve()?.seconds_per_byte(0.0)?;
        let p = self.profile.as_ref()?;
        let bytes = (k.weight_bytes + k.input_bytes + k.output_bytes) as f64;
        Some((bytes * hot + p.roofline.overhead_seconds) * 1e3)
    }

    fn kernel_predictions(&self, d: &Decomposition) -> Vec<(f64, bool)> {
        let Some(p) = &self.profile else {
            return d
                .kernels
                .iter()
                .map(|k| (self.roofline.kernel_ms(k), true))
                .collect();
        };
        let mut out = vec![(0.0, true); d.kernels.len()];
        for g in d.feature_groups().iter() {
            let ratios = p.regressors.get(&g.kind).map(|r| {
                let mut v = r.log_ratios(&g.rows);
                v.iter_mut().for_each(|x| *x = x.clamp(-20.0, 20.0).exp());
                v
            });
            let composition = p.composition.get(&g.kind);
            for &(i, row) in &g.members {
                let Some(k) = d.kernels.get(i) else { continue };
                if let Some(ms) = self.streamed_ms(k) {
                    out[i] = (ms, false);
                    continue;
                }
                let inside = composition
                    .map(|c| c.factor(memory_share_of(&p.roofline, k)))
                    .unwrap_or(1.0);
                let roof = p.roofline.kernel_ms(k);
                out[i] = match ratios.as_ref().and_then(|r| r.get(row)) {
                    Some(ratio) => (inside * roof * ratio, false),
                    None => (inside * roof, true),
                };
            }
        }
        out
    }

    /// The features the online learner sees for this prediction.
    pub fn phi(&self, base: &BasePrediction, p: &Prediction) -> learner::Phi {
        let mem_share = if base.latency_ms > 0.0 {
            base.kernels
                .iter()
                .zip(&base.memory_share)
                .map(|(k, m)| k.0 * m)
                .sum::<f64>()
                / base.latency_ms
        } else {
            0.0
        };
        [
            1.0,
            p.state.cpu_factor - 1.0,
            (p.state.memory_factor - 1.0) * mem_share,
            p.state.frequency_factor * p.state.speed_factor - 1.0,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernels::{FusionRules, decompose};
    use crate::model::builder::GraphBuilder;
    use crate::profile::threads::speedup;
    use crate::profile::{DeviceInfo, Efficiency, Reference, ThreadScaling};
    use std::collections::BTreeMap;

    #[test]
    fn the_live_cache_curve_pools_a_slow_reading_instead_of_lifting_every_larger_size() {
        let at = |v: &[(u64, f64)]| {
            let mut s = Snapshot::default();
            s.probe.cache_curve = v
                .iter()
                .map(
                    |&(bytes, seconds_per_byte)| crate::sense::snapshot::CachePoint {
                        bytes,
                        seconds_per_byte,
                    },
                )
                .collect();
            live_cache_curve(&s)
        };
        let c = at(&[(1, 2.0), (2, 10.0), (3, 3.0), (4, 5.0), (5, 9.0)]).unwrap();
        assert_eq!(
            c.points,
            vec![[1.0, 2.0], [2.0, 6.0], [3.0, 6.0], [4.0, 6.0], [5.0, 9.0]]
        );
        // Unordered and unusable points: sorted, dropped.
        let c = at(&[(4, 5.0), (3, f64::NAN), (1, 0.0), (0, 1.0), (2, 1.0)]).unwrap();
        assert_eq!(c.points, vec![[2.0, 1.0], [4.0, 5.0]]);
        assert!(at(&[(1, 1.0)]).is_none());
        assert!(at(&[(1, 1.0), (2, f64::INFINITY)]).is_none());
    }

    /// A convolution (with its ReLU) and a max pool.
    fn model() -> Decomposition {
        let mut b = GraphBuilder::new("t");
        let x = b.input(&[1, 32, 28, 28]);
        let y = b
            .conv(x, 64, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, true)
            .unwrap();
        let y = b.relu(y).unwrap();
        let z = b.maxpool(y, [2, 2], [2, 2], [0; 4]).unwrap();
        let g = b.finish(&[z]).unwrap();
        decompose(&g, &FusionRules::tract_default()).unwrap()
    }

    /// A two-core board's profile made at `threads`, with `scaling`: convolutions at 90 %
    /// efficiency, everything else at 20 %.
    fn profile(threads: usize, scaling: bool) -> Profile {
        Profile {
            format_version: crate::profile::FORMAT_VERSION,
            augur_version: String::new(),
            created_unix: 0,
            device: DeviceInfo {
                cores: 2,
                ..DeviceInfo::default()
            },
            runtime: "tract".into(),
            threads,
            budget: "quick".into(),
            fusion: FusionRules::tract_default(),
            roofline: Roofline::default(),
            reference: Reference::default(),
            regressors: BTreeMap::new(),
            measurements: Vec::new(),
            cache_model: false,
            cache_bytes: CacheBytes::default(),
            composition: BTreeMap::new(),
            slowdown: None,
            quality: None,
            power: None,
            thread_scaling: scaling.then(|| ThreadScaling {
                counts: vec![1, 2],
                kinds: BTreeMap::from([(KernelKind::Conv, Efficiency::constant(0.9))]),
                pooled: Efficiency::constant(0.2),
                network_error: BTreeMap::new(),
                reference_ratio: BTreeMap::new(),
                trees: BTreeMap::new(),
            }),
        }
    }

    #[test]
    fn a_kind_follows_a_live_reading_by_its_own_exponent_over_the_networks_one() {
        let mut prof = profile(1, false);
        // No exponents measured (a profile made before): every kind follows the reading alike.
        let p = Predictor::new(Some(prof.clone()), Roofline::default());
        assert_eq!(p.kind_speeds(0.8).map(|s| s.of(KernelKind::Conv)), None);
        prof.reference.following =
            BTreeMap::from([(KernelKind::Conv, 1.0), (KernelKind::Pool, 0.25)]);
        prof.reference.following_mix = 0.5;
        let p = Predictor::new(Some(prof.clone()), Roofline::default());
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
        // Convolutions followed the reading twice as much as the networks did; pools half as much;
        // a kind too rare to measure was normalised by the whole reading, so it counts as 1.
        assert!(close(
            p.kind_speeds(0.8).map(|s| s.of(KernelKind::Conv)),
            0.64
        ));
        assert!(close(
            p.kind_speeds(0.8).map(|s| s.of(KernelKind::Pool)),
            0.8f64.sqrt()
        ));
        assert!(close(
            p.kind_speeds(0.8).map(|s| s.of(KernelKind::Reduce)),
            0.64
        ));
        // At the calibration's own reading, or with none, nothing to apply.
        assert_eq!(p.kind_speeds(1.0).map(|s| s.of(KernelKind::Conv)), None);
        assert_eq!(p.kind_speeds(0.0).map(|s| s.of(KernelKind::Conv)), None);
        prof.reference.following_mix = 0.0;
        let p = Predictor::new(Some(prof), Roofline::default());
        assert_eq!(p.kind_speeds(0.8).map(|s| s.of(KernelKind::Conv)), None);
    }

    #[test]
    fn a_classifier_head_is_priced_as_the_stream_of_its_weights_at_the_run_s_working_set() {
        const MIB: u64 = 1 << 20;
        // A head of 2 048 × 1 000 weights (8 MB) behind a pooled feature map, and a product of
        // many rows, which stays with its regressor.
        let mut b = GraphBuilder::new("head");
        let x = b.input(&[1, 2048, 7, 7]);
        let y = b.global_avg_pool(x).unwrap();
        let y = b.flatten(y, 1).unwrap();
        let y = b.gemm(y, 1000, true).unwrap();
        let g = b.finish(&[y]).unwrap();
        let d = decompose(&g, &FusionRules::tract_default()).unwrap();
        let head = d
            .kernels
            .iter()
            .position(|k| k.kind == KernelKind::MatMul)
            .unwrap();
        let k = &d.kernels[head];
        let mut prof = profile(1, false);
        prof.cache_model = true;
        prof.reference.cache =
            CacheCurve::from_bandwidths(&[(MIB, 100e9), (4 * MIB, 30e9), (64 * MIB, 15e9)]);
        let regressor = |in_network| crate::profile::Regressor {
            base: 0.0,
            trees: Vec::new(),
            samples: 10,
            holdout_error: None,
            in_network,
            fast: Vec::new(),
        };
        prof.regressors.insert(KernelKind::MatMul, regressor(true));
        let p = Predictor::new(Some(prof.clone()), Roofline::default());
        let bytes = (k.weight_bytes + k.input_bytes + k.output_bytes) as f64;
        let hot = (bytes / 100e9 + prof.roofline.overhead_seconds) * 1e3;
        let base = p.base(&d);
        // Hot, plus what its recycled bytes cost over hot at this run's working set (~8 MB).
        let extra = p.cache_ms(k, footprint(&d), false).unwrap();
        assert!(extra > 0.0);
        assert!((base.kernels[head].0 - (hot + extra)).abs() < 1e-12);
        // That is about its bytes at the curve's cost per byte there, and the launch.
        let at = prof
            .reference
            .cache
            .seconds_per_byte(footprint(&d))
            .unwrap();
        let streamed = (bytes * at + prof.roofline.overhead_seconds) * 1e3;
        assert!(
            (base.kernels[head].0 / streamed - 1.0).abs() < 0.01,
            "{} vs {streamed}",
            base.kernels[head].0
        );
        // A profile whose kind was fitted on kernels timed alone, or without a curve, keeps the
        // regressor's figure.
        prof.regressors.insert(KernelKind::MatMul, regressor(false));
        let alone = Predictor::new(Some(prof.clone()), Roofline::default());
        assert!(alone.streamed_ms(k).is_none());
        prof.regressors.insert(KernelKind::MatMul, regressor(true));
        prof.reference.cache = CacheCurve::default();
        assert!(
            Predictor::new(Some(prof), Roofline::default())
                .streamed_ms(k)
                .is_none()
        );
        // A product over many rows is no head.
        let mut rows = k.clone();
        rows.output_shape = vec![1, 49, 1000];
        assert!(p.streamed_ms(&rows).is_none());
    }

    #[test]
    fn a_live_parallel_reading_is_compared_with_the_ratio_calibration_measured_where_it_did() {
        let mut prof = profile(1, true);
        let fitted = Predictor::new(Some(prof.clone()), Roofline::default());
        let predicted = fitted.expected_parallel_ratio(2).unwrap();
        assert!(predicted > 0.0 && predicted < 1.0, "{predicted}");
        if let Some(s) = prof.thread_scaling.as_mut() {
            s.reference_ratio.insert(2, 0.8);
        }
        let measured = Predictor::new(Some(prof), Roofline::default());
        assert_eq!(measured.expected_parallel_ratio(2), Some(0.8));
        // A count calibration did not read falls back on the fits.
        assert_eq!(
            measured.expected_parallel_ratio(3),
            fitted.expected_parallel_ratio(3)
        );
    }

    fn eff(k: KernelKind) -> f64 {
        if k == KernelKind::Conv { 0.9 } else { 0.2 }
    }

    fn quiet() -> Snapshot {
        Snapshot::default()
    }

    #[test]
    fn the_band_is_the_static_error_on_a_quiet_board_and_widens_with_the_load() {
        let d = model();
        let mut prof = profile(1, false);
        // Without a quality report: the load fit's band alone.
        let plain = Predictor::new(Some(prof.clone()), Roofline::default());
        let (lo, hi) = plain.slowdown.interval(true);
        assert_eq!(plain.band(true, 1.0, 0.0), (lo, hi));
        prof.quality = Some(crate::profile::Quality {
            held_out_error: BTreeMap::new(),
            composition_error: Some(0.04),
            noise: Default::default(),
            problems: Vec::new(),
        });
        prof.slowdown = Some(crate::profile::Slowdown {
            interval_calibrated: [(-0.4f64).exp(), 0.4f64.exp()],
            ..Default::default()
        });
        let p = Predictor::new(Some(prof), Roofline::default());
        let half = |b: (f64, f64)| (b.1 / b.0).ln() / 2.0;
        // Quiet: the 90 % point of a Laplace error whose median is 4 %.
        let quiet_half = half(p.band(true, 1.0, 0.0));
        let expected = 1.04f64.ln() * std::f64::consts::LN_10 / std::f64::consts::LN_2;
        assert!((quiet_half - expected).abs() < 1e-9, "{quiet_half}");
        // Slowed by a quarter or more: the load fit's residual in full, beside the static error.
        let loaded = half(p.band(true, 1.6, 0.0));
        assert!((loaded - expected.hypot(0.4)).abs() < 1e-9, "{loaded}");
        let between = half(p.band(true, 1.1, 0.0));
        assert!(quiet_half < between && between < loaded);
        // Not calibrated: the uncalibrated band.
        assert_eq!(p.band(false, 1.0, 0.0), p.slowdown.interval(false));
        // The prediction carries it.
        let base = p.base(&d);
        let pr = p.predict(&d, &base, &quiet(), 1, false);
        assert!(((pr.interval_ms[1] / pr.latency_ms).ln() - expected).abs() < 1e-9);
        // A speed that may move widens it in quadrature, with a quality report or without; a
        // spread that is not a number is none.
        let moving = half(p.band(true, 1.0, 0.3));
        assert!((moving - expected.hypot(0.3)).abs() < 1e-9, "{moving}");
        let plain_half = half(plain.band(true, 1.0, 0.0));
        assert!((half(plain.band(true, 1.0, 0.3)) - plain_half.hypot(0.3)).abs() < 1e-9);
        assert_eq!(p.band(true, 1.0, f64::NAN), p.band(true, 1.0, 0.0));
    }

    #[test]
    fn several_threads_follow_the_parallel_reading_over_what_the_profile_expects() {
        let d = model();
        let mut prof = profile(1, true);
        prof.slowdown = Some(crate::profile::Slowdown {
            cores: 2.0,
            speed_live: true,
            ..Default::default()
        });
        let p = Predictor::new(Some(prof.clone()), Roofline::default());
        let base = p.base(&d);
        let expected = p.expected_parallel_ratio(2).unwrap();
        assert!(expected > 0.3 && expected < 1.0, "{expected}");
        let at = |s: &Snapshot, t: usize| p.predict(&d, &base, s, t, false);
        let plain = at(&quiet(), 2);
        // Two threads held at 1.5 × what the profile expects of them: 1.5 × slower; one thread
        // is not touched.
        let mut s = quiet();
        s.probe.reference_parallel_threads = Some(2);
        s.probe.reference_parallel_ratios = vec![expected * 1.5; 6];
        assert!((at(&s, 2).latency_ms / plain.latency_ms - 1.5).abs() < 1e-9);
        assert_eq!(at(&s, 1).latency_ms, at(&quiet(), 1).latency_ms);
        // As the profile expects: nothing changes.
        s.probe.reference_parallel_ratios = vec![expected; 6];
        assert!((at(&s, 2).latency_ms / plain.latency_ms - 1.0).abs() < 1e-9);
        // Readings that jump, each gone by the next: not followed, but the band widens.
        s.probe.reference_parallel_ratios = [expected, expected * 1.5].repeat(4);
        let jumpy = at(&s, 2);
        assert!((jumpy.latency_ms / plain.latency_ms - 1.0).abs() < 1e-9);
        let width = |p: &Prediction| p.interval_ms[1] / p.latency_ms;
        assert!(width(&jumpy) > width(&plain), "{jumpy:?}");
        // Broken readings are bounded; too few apply nothing.
        s.probe.reference_parallel_ratios = vec![f64::NAN, 0.0, 1e300, 1e300, 1e300, 1e300];
        let f = p.parallel(&s, 2).factor;
        assert!(f.is_finite() && (1.0..=4.0).contains(&f), "{f}");
        s.probe.reference_parallel_ratios = vec![expected * 1.5; 3];
        assert_eq!(p.parallel(&s, 2).factor, 1.0);
        // A profile that does not follow the speed live does not follow this either.
        prof.slowdown = Some(crate::profile::Slowdown {
            cores: 2.0,
            speed_live: false,
            ..Default::default()
        });
        let fixed = Predictor::new(Some(prof), Roofline::default());
        s.probe.reference_parallel_ratios = vec![expected * 1.5; 6];
        assert_eq!(fixed.parallel(&s, 2).factor, 1.0);
    }

    #[test]
    fn a_profile_with_thread_scaling_predicts_one_and_two_threads() {
        let d = model();
        assert!(d.kernels.iter().any(|k| k.kind == KernelKind::Conv));
        assert!(d.kernels.iter().any(|k| k.kind != KernelKind::Conv));
        let p = Predictor::new(Some(profile(1, true)), Roofline::default());
        let base = p.base(&d);
        // Its own count: the base as it is.
        let one = p.predict(&d, &base, &quiet(), 1, true);
        assert_eq!(one.base_ms, base.latency_ms);
        assert_eq!(one.latency_ms, base.latency_ms);
        assert!(one.notes.is_empty());
        // Two threads: each kernel sped up by its kind's efficiency.
        let two = p.predict(&d, &base, &quiet(), 2, true);
        assert!(two.notes.is_empty(), "{:?}", two.notes);
        let ks = two.kernels.as_ref().unwrap();
        let mut want = 0.0;
        for ((k, &(ms, _)), kp) in d.kernels.iter().zip(&base.kernels).zip(ks) {
            let expect = ms / speedup(eff(k.kind), 2);
            assert!(
                (kp.latency_ms - expect).abs() < 1e-12 * ms.max(1.0),
                "{}",
                k.name
            );
            want += expect;
        }
        assert!((two.latency_ms - want).abs() < 1e-9);
        assert_eq!(two.base_ms, two.latency_ms);
        assert!(two.latency_ms < one.latency_ms);
        // A profile made at two threads predicts one thread by the inverse.
        let p2 = Predictor::new(Some(profile(2, true)), Roofline::default());
        let base2 = p2.base(&d);
        let back = p2.predict(&d, &base2, &quiet(), 1, false);
        let want: f64 = d
            .kernels
            .iter()
            .zip(&base2.kernels)
            .map(|(k, &(ms, _))| ms * speedup(eff(k.kind), 2))
            .sum();
        assert!((back.latency_ms - want).abs() < 1e-9);
        assert_eq!(
            p2.predict(&d, &base2, &quiet(), 2, false).latency_ms,
            base2.latency_ms
        );
    }

    #[test]
    fn a_profile_without_thread_scaling_says_so_for_other_counts() {
        let d = model();
        let p = Predictor::new(Some(profile(1, false)), Roofline::default());
        let base = p.base(&d);
        let one = p.predict(&d, &base, &quiet(), 1, false);
        assert!(one.notes.is_empty());
        assert_eq!(one.latency_ms, base.latency_ms);
        let two = p.predict(&d, &base, &quiet(), 2, false);
        assert_eq!(two.notes.len(), 1);
        assert!(
            two.notes[0].contains("calibrated for 1 thread only")
                && two.notes[0].contains("--only-threads"),
            "{}",
            two.notes[0]
        );
        // The fallback: a conservative efficiency, never a faster-than-ideal figure.
        let want = base.latency_ms / speedup(UNCALIBRATED_EFFICIENCY, 2);
        assert!((two.latency_ms - want).abs() < 1e-9);
        assert!(two.latency_ms > base.latency_ms / 2.0);
    }

    #[test]
    fn thread_counts_beyond_the_board_or_the_calibration_are_told() {
        let d = model();
        let p = Predictor::new(Some(profile(1, true)), Roofline::default());
        assert_eq!(p.max_threads(), 2);
        assert_eq!(p.check_threads(2), Ok(2));
        let e = p.check_threads(3).unwrap_err().to_string();
        assert!(e.contains("1..=2") && e.contains("got 3"), "{e}");
        assert!(p.check_threads(0).is_err());
        // Asked anyway (a library caller), the fit is extrapolated with a note.
        let s = p.thread_scale(&d, 3);
        assert_eq!(s.notes.len(), 1);
        assert!(s.notes[0].contains("extrapolated"), "{}", s.notes[0]);
    }

    #[test]
    fn under_each_rule_its_bytes_pay_for_the_working_set_and_old_profiles_keep_theirs() {
        const MIB: u64 = 1 << 20;
        let mut b = GraphBuilder::new("two");
        let x = b.input(&[1, 64, 56, 56]);
        let y = b
            .conv(x, 64, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, true)
            .unwrap();
        let y = b.relu(y).unwrap();
        let g = b.finish(&[y]).unwrap();
        let d = decompose(&g, &FusionRules::tract_default()).unwrap();
        let mut prof = profile(1, false);
        prof.cache_model = true;
        prof.reference.cache =
            CacheCurve::from_bandwidths(&[(MIB, 100e9), (4 * MIB, 30e9), (64 * MIB, 15e9)]);
        let conv = d.kernels.iter().find(|k| k.weight_bytes > 0).unwrap();
        let relu = d.kernels.iter().find(|k| k.weight_bytes == 0).unwrap();
        // Both kinds learned inside networks, so both are priced from a hot cache.
        for kind in [conv.kind, relu.kind] {
            let r = crate::profile::Regressor {
                base: 0.0,
                trees: Vec::new(),
                samples: 10,
                holdout_error: None,
                in_network: true,
                fast: Vec::new(),
            };
            prof.regressors.insert(kind, r);
        }
        let footprint = 32.0 * MIB as f64;
        let extra = prof.reference.cache.extra_seconds_per_byte(footprint, 0.0);
        assert!(extra > 0.0);
        // A profile saved without the rule was fitted under the older one: writes pay too.
        let mut v = serde_json::to_value(&prof).unwrap();
        v.as_object_mut().unwrap().remove("cache_bytes");
        let old: Profile = serde_json::from_value(v).unwrap();
        assert_eq!(old.cache_bytes, CacheBytes::WeightsAndWrites);
        let p = Predictor::new(Some(old), Roofline::default());
        assert!(p.cache_ms(relu, footprint, false).unwrap() > 0.0);
        let want = (conv.weight_bytes + 2 * conv.output_bytes + 2 * conv.scratch_bytes) as f64;
        assert!((p.cache_ms(conv, footprint, false).unwrap() - want * extra * 1e3).abs() < 1e-12);
        // Under the weights rule a layer without weights pays nothing, one with weights for them.
        prof.cache_bytes = CacheBytes::Weights;
        let p = Predictor::new(Some(prof.clone()), Roofline::default());
        assert_eq!(p.cache_ms(relu, footprint, false), Some(0.0));
        let want = conv.weight_bytes as f64 * extra * 1e3;
        assert!((p.cache_ms(conv, footprint, false).unwrap() - want).abs() < 1e-12);
        assert_eq!(
            p.cache_ms(conv, footprint, true),
            p.cache_ms(conv, footprint, false)
        );
        // Under the entry rule a later kernel pays as under the weights rule; the run's first also
        // for the input it reads and for what it writes, twice.
        prof.cache_bytes = CacheBytes::WeightsAndEntry;
        let p = Predictor::new(Some(prof), Roofline::default());
        assert_eq!(p.cache_ms(relu, footprint, false), Some(0.0));
        assert!((p.cache_ms(conv, footprint, false).unwrap() - want).abs() < 1e-12);
        let entry =
            (conv.weight_bytes + conv.input_bytes + 2 * conv.output_bytes + 2 * conv.scratch_bytes)
                as f64
                * extra
                * 1e3;
        assert!((p.cache_ms(conv, footprint, true).unwrap() - entry).abs() < 1e-12);
        // A part run alone with a working set the caches hold pays none of it.
        assert_eq!(p.cache_ms(conv, 0.5 * MIB as f64, true), Some(0.0));
    }

    #[test]
    fn a_profile_saved_before_thread_scaling_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.json");
        let mut v = serde_json::to_value(profile(1, true)).unwrap();
        v.as_object_mut().unwrap().remove("thread_scaling");
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let (old, _) = Profile::load(&path, "tract").unwrap();
        assert!(old.thread_scaling.is_none());
        // And one with it round-trips.
        let path2 = dir.path().join("new.json");
        profile(1, true).save(&path2).unwrap();
        let (new, _) = Profile::load(&path2, "tract").unwrap();
        assert_eq!(new.thread_scaling, profile(1, true).thread_scaling);
    }
}
