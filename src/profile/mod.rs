//! The device profile: what augur knows about this board and runtime — device description, fusion
//! rules, one latency regressor per kernel kind, the roofline fallback, and the measurements they were
//! fitted on. Versioned and self-describing JSON, written atomically.
pub mod cache;
pub mod device;
pub mod power;
pub mod quality;
pub mod regressor;
pub mod slowdown;
pub mod threads;

pub use cache::CacheCurve;
pub use device::DeviceInfo;
pub use power::Power;
pub use quality::{Noise, Quality};
pub use regressor::{Regressor, RegressorError, Roofline};
pub use slowdown::Slowdown;
pub use threads::{Efficiency, ThreadScaling};

use crate::kernels::{FusionRules, Kernel, KernelKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Bumped when the profile's meaning changes; older files are refused with a clear message.
pub const FORMAT_VERSION: u32 = 1;

/// One kernel measurement taken by calibration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub kernel: Kernel,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    /// The board's speed while it was taken: the reference workload's time then over the profile's
    /// [`Reference::workload_cpu_ms`]. The times above are already divided by it, so every
    /// measurement of a profile describes the board at one speed; 1 where it was not known.
    #[serde(default = "one")]
    pub speed: f64,
}

fn one() -> f64 {
    1.0
}

impl Measurement {
    /// A timing taken at the profile's speed (or where the speed was not known).
    pub fn new(kernel: Kernel, median_ms: f64, p10_ms: f64, p90_ms: f64) -> Measurement {
        Measurement {
            kernel,
            median_ms,
            p10_ms,
            p90_ms,
            speed: 1.0,
        }
    }

    /// This timing taken at `speed`, brought to the profile's speed.
    pub fn normalised(self, speed: f64) -> Measurement {
        let s = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        Measurement {
            median_ms: self.median_ms / s,
            p10_ms: self.p10_ms / s,
            p90_ms: self.p90_ms / s,
            speed: self.speed * s,
            ..self
        }
    }
}

/// In-network factors of one kernel kind: a kernel's factor is `compute·(1 − m) + memory·m`, with `m`
/// the memory share of its roofline time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Composition {
    pub compute: f64,
    pub memory: f64,
}

impl Composition {
    pub fn factor(&self, memory_share: f64) -> f64 {
        let m = memory_share.clamp(0.0, 1.0);
        self.compute * (1.0 - m) + self.memory * m
    }
}

/// Conditions at calibration time, the reference the slowdown model scales from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Reference {
    /// Compute-probe rate on the quiet board, FLOP/s.
    pub probe_flops_per_second: f64,
    /// Memory-probe bandwidth on the quiet board, bytes/s.
    pub probe_bytes_per_second: f64,
    /// Mean CPU frequency, Hz (0 when the board does not expose it).
    pub cpu_frequency_hertz: f64,
    /// What the reference workload was ([`crate::workload::reference::identity`]); empty: none.
    #[serde(default)]
    pub workload: String,
    /// CPU milliseconds of one pass of the reference workload, median over the calibration.
    #[serde(default)]
    pub workload_cpu_ms: f64,
    /// Whether those readings were taken as the live probe takes its own (after its warm-up).
    /// False in profiles made before: their three bare passes after each measurement read slower
    /// than the probe on the same board, so a live reading took a quiet board for a faster one.
    #[serde(default)]
    pub workload_warm: bool,
    /// What a byte costs to stream by working-set size (empty in profiles made before it was
    /// swept: those predict with the nominal cache size, as they were fitted).
    #[serde(default)]
    pub cache: CacheCurve,
    /// How far each kernel kind's time followed the reference reading while calibrating (the
    /// exponent of the reading's ratio; 1 follows it fully). Empty in profiles made before: every
    /// kind then follows the reading alike, as they were fitted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub following: BTreeMap<KernelKind, f64>,
    /// The same for the calibration's networks as a whole, their kinds weighted by time (0: none).
    #[serde(default)]
    pub following_mix: f64,
}

/// The bytes of a kernel whose cost grows when a run's working set (weights and activations) outgrows
/// the caches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheBytes {
    /// Its weights, its output and its scratch: the rule of profiles made before the choice was
    /// recorded.
    #[default]
    WeightsAndWrites,
    /// Its weights alone. A layer's weights are read once a run and come back only on the next run,
    /// after the whole working set has gone through the caches, so where they come from depends on
    /// that set; its activations are written and read again a kernel or two later, so what they cost
    /// depends on their own size, which the regressors learn inside networks. Halves of generated
    /// networks timed alone beside their in-network node times fit this rule better than the other
    /// (docs/evaluation.md, d41): a part past the stem runs alone as its kernels ran inside.
    Weights,
    /// Its weights; and for a model's first kernel also what it reads and writes — the model's
    /// input once, its output and scratch twice. The first kernel of a run touches the input and
    /// its output's lines a whole run after they were last used, after the rest of the working set
    /// went through the caches, where a later kernel reads what the kernel before it just wrote:
    /// stems of generated networks ran a median 0.91× their node time when timed alone as the
    /// start of a prefix, where later parts ran as inside (docs/evaluation.md, d54).
    WeightsAndEntry,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Profile {
    pub format_version: u32,
    pub augur_version: String,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    pub device: DeviceInfo,
    /// Runtime name and version the measurements were taken with (`tract 0.23.9`).
    pub runtime: String,
    /// The thread count the regressors describe (other counts are scaled by `thread_scaling`).
    pub threads: usize,
    pub budget: String,
    pub fusion: FusionRules,
    pub roofline: Roofline,
    #[serde(default)]
    pub reference: Reference,
    pub regressors: BTreeMap<KernelKind, Regressor>,
    pub measurements: Vec<Measurement>,
    /// Whether predictions add the cost of streaming weights that do not stay in the last-level cache.
    #[serde(default)]
    pub cache_model: bool,
    /// Which bytes of a kernel pay for a run's working set outgrowing the caches: the rule its
    /// regressors were fitted under, so that prediction adds back what fitting took out (profiles
    /// made before the rule was recorded used [`CacheBytes::WeightsAndWrites`]).
    #[serde(default)]
    pub cache_bytes: CacheBytes,
    /// Per kind: how much slower a kernel runs inside a network than timed alone (fitted on synthetic
    /// networks; 1 when absent), for its compute-bound and its memory-bound share.
    #[serde(default)]
    pub composition: BTreeMap<KernelKind, Composition>,
    /// Coefficients of the slowdown model, fitted under controlled load (absent until fitted).
    #[serde(default)]
    pub slowdown: Option<Slowdown>,
    /// How good the calibration came out (absent in profiles made before it was reported).
    #[serde(default)]
    pub quality: Option<Quality>,
    /// Power above idle per kernel kind, or why calibration could not measure it (absent in
    /// profiles made before power was measured).
    #[serde(default)]
    pub power: Option<Power>,
    /// How each kind speeds up with more threads (absent in profiles made before it was measured,
    /// which predict their own thread count only; see [`threads`]).
    #[serde(default)]
    pub thread_scaling: Option<ThreadScaling>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{path}: cannot read the profile: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: cannot write the profile: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid augur profile: {detail}")]
    Invalid { path: String, detail: String },
    #[error(
        "{path}: profile format {found} is not supported (this augur reads format {FORMAT_VERSION}); run `augur calibrate` again"
    )]
    Version { path: String, found: u32 },
}

impl Profile {
    /// Predicted latency of one kernel, and whether the roofline fallback gave it (no regressor).
    pub fn kernel_ms(&self, k: &Kernel) -> (f64, bool) {
        self.kernel_ms_with(k, &crate::kernels::features(k))
    }

    /// As [`Profile::kernel_ms`], with the kernel's features already computed.
    pub fn kernel_ms_with(&self, k: &Kernel, x: &[f64; crate::kernels::N_FEATURES]) -> (f64, bool) {
        match self.regressors.get(&k.kind) {
            Some(r) => (r.predict_with(&self.roofline, k, x), false),
            None => (self.roofline.kernel_ms(k), true),
        }
    }

    /// Loads and checks a profile; warnings (another board, another runtime version) come back beside it.
    pub fn load(path: &Path, runtime_now: &str) -> Result<(Profile, Vec<String>), ProfileError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ProfileError::Read {
            path: p.clone(),
            source,
        })?;
        let head: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ProfileError::Invalid {
                path: p.clone(),
                detail: e.to_string(),
            })?;
        let found = head
            .get("format_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as u32;
        if found != FORMAT_VERSION {
            return Err(ProfileError::Version { path: p, found });
        }
        // The path of what is malformed (`slowdown.cpu_weight: invalid type …`): a profile edited by
        // hand or written by another version says which field is wrong.
        let mut profile: Profile =
            serde_path_to_error::deserialize(head).map_err(|e| ProfileError::Invalid {
                path: p.clone(),
                detail: e.to_string(),
            })?;
        profile.regressors.values_mut().for_each(Regressor::compile);
        if let Some(s) = profile.thread_scaling.as_mut() {
            s.compile();
        }
        let mut warnings = Vec::new();
        let here = DeviceInfo::detect(&crate::util::roots::Roots::default());
        if !profile.device.same_board(&here) {
            warnings.push(format!(
                "{p}: profile was made on another board ({}, {} cores); this is {} with {} cores — predictions may be off; run `augur calibrate`",
                profile.device.cpu_model, profile.device.cores, here.cpu_model, here.cores
            ));
        }
        if profile.reference.workload_cpu_ms > 0.0 && !profile.reference.workload_warm {
            warnings.push(format!(
                "{p}: its reference readings were taken without the live probe's warm-up, so the live speed term takes a quiet board for one about 15 % faster and predicts low; run `augur calibrate` again"
            ));
        }
        if profile.runtime != runtime_now {
            warnings.push(format!(
                "{p}: profile was made with {}, this augur runs {runtime_now}; run `augur calibrate`",
                profile.runtime
            ));
        }
        Ok((profile, warnings))
    }

    /// Writes the profile atomically (temp file, fsync, rename), so a crash never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<(), ProfileError> {
        let p = path.display().to_string();
        let json = serde_json::to_vec(self).map_err(|e| ProfileError::Invalid {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        crate::util::write_atomic(path, &json)
            .map_err(|source| ProfileError::Write { path: p, source })
    }
}

/// The runtime string for the built-in backend (the version a test keeps in step with Cargo.lock).
pub fn tract_runtime() -> String {
    format!("tract {}", crate::kernels::fusion::TRACT_VERSION)
}
