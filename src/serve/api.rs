//! The shapes of requests and answers. [`PredictAnswer`] is also what `augur predict --json`
//! prints, so the command line and the HTTP API answer a prediction in one shape.
use crate::kernels::Decomposition;
use crate::predict::deadline::ErrorModel;
use crate::predict::{KernelPrediction, Prediction, StateUsed};
use crate::sense::Snapshot;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/predict`: one model, or a `batch` of items that default to the top-level fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    pub model: Option<String>,
    pub threads: Option<usize>,
    pub state: Option<Map<String, Value>>,
    #[serde(default)]
    pub kernels: bool,
    pub batch: Option<Vec<PredictItem>>,
    /// The deadline to answer the chance of meeting, ms (a batch's default for its items).
    pub deadline_ms: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictItem {
    pub model: String,
    pub threads: Option<usize>,
    pub state: Option<Map<String, Value>>,
    pub kernels: Option<bool>,
    pub deadline_ms: Option<f64>,
}

/// `POST /v1/observe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveRequest {
    pub model: String,
    pub latency_ms: f64,
    pub threads: Option<usize>,
    pub kernels: Option<Vec<super::journal::KernelObservation>>,
}

/// Where the state of a prediction came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateSource {
    /// The sensors' newest snapshot.
    Live,
    /// The live snapshot with a request's changes.
    WhatIf,
    /// A quiet board (`augur predict --static`).
    Quiet,
}

/// Which snapshot a prediction was made under, in brief.
#[derive(Debug, Clone, Serialize)]
pub struct StateSummary {
    pub source: StateSource,
    pub seq: u64,
    pub timestamp: f64,
    pub compute_ratio: Option<f64>,
    pub memory_ratio: Option<f64>,
}

impl StateSummary {
    pub fn of(s: &Snapshot, source: StateSource) -> StateSummary {
        StateSummary {
            source,
            seq: s.seq,
            timestamp: s.timestamp,
            compute_ratio: s.probe.compute_ratio,
            memory_ratio: s.probe.memory_ratio,
        }
    }
}

/// The state of one prediction as answered: the snapshot it was made under, and what that state
/// contributed (the factors whose product, with the learned correction, is `slowdown`).
#[derive(Debug, Serialize)]
pub struct StateAnswer<'a> {
    #[serde(flatten)]
    pub snapshot: &'a StateSummary,
    #[serde(flatten)]
    pub used: StateUsed,
}

/// One prediction as answered.
#[derive(Debug, Serialize)]
pub struct PredictAnswer<'a> {
    pub model: &'a str,
    pub latency_ms: f64,
    pub interval_ms: [f64; 2],
    pub peak_memory_bytes: u64,
    pub calibrated: bool,
    pub base_ms: f64,
    pub slowdown: f64,
    pub threads: usize,
    pub fallback_kernels: usize,
    #[serde(flatten)]
    pub energy: EnergyAnswer,
    pub state: StateAnswer<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernels: Option<Vec<KernelPrediction>>,
    /// The deadline asked about, ms, and the probability of meeting it (null without one).
    pub deadline_ms: Option<f64>,
    pub p_deadline: Option<f64>,
    /// How the figure was made, where the caller should know (a thread count not calibrated …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl<'a> PredictAnswer<'a> {
    pub fn new(model: &'a str, threads: usize, state: &'a StateSummary, p: Prediction) -> Self {
        PredictAnswer {
            model,
            latency_ms: p.latency_ms,
            interval_ms: p.interval_ms,
            peak_memory_bytes: p.peak_memory_bytes,
            calibrated: p.calibrated,
            base_ms: p.base_ms,
            slowdown: p.slowdown,
            threads,
            fallback_kernels: p.fallback_kernels,
            energy: EnergyAnswer {
                energy_joules: p.energy_joules,
                energy_unavailable: p.energy_unavailable,
            },
            state: StateAnswer {
                snapshot: state,
                used: p.state,
            },
            kernels: p.kernels,
            deadline_ms: None,
            p_deadline: None,
            notes: p.notes,
        }
    }

    /// The answer with the chance of finishing within `deadline_ms` (a checked positive number),
    /// from the error model of the prediction's interval.
    pub fn with_deadline(mut self, deadline_ms: Option<f64>) -> Self {
        if let Some(d) = deadline_ms {
            let error = ErrorModel::from_interval(self.latency_ms, self.interval_ms);
            self.deadline_ms = Some(d);
            self.p_deadline = Some(error.p_within(self.latency_ms, d));
        }
        self
    }
}

/// Whether `v` is a deadline a prediction may be asked about: a positive finite number of ms.
pub fn valid_deadline_ms(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

/// The energy of one prediction as answered.
#[derive(Debug, Serialize)]
pub struct EnergyAnswer {
    /// Energy above the board's idle power, J; null with `energy_unavailable` saying why.
    pub energy_joules: Option<f64>,
    pub energy_unavailable: Option<String>,
}

/// An item of a batch answer: a prediction or the error of that item alone.
#[derive(Serialize)]
#[serde(untagged)]
pub enum BatchItem<'a> {
    // Boxed: an answer is several times the size of an error, and a batch holds many.
    Ok(Box<PredictAnswer<'a>>),
    Err(Value),
}

#[derive(Serialize)]
pub struct BatchAnswer<'a> {
    pub results: Vec<BatchItem<'a>>,
}

/// What `POST /v1/models` and `GET /v1/models/{id}` answer.
#[derive(Debug, Serialize)]
pub struct ModelInfo<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub kernels: usize,
    pub macs: u64,
    pub params: u64,
    pub weights_bytes: u64,
    pub peak_memory_bytes: u64,
    pub input_shapes: &'a [Vec<usize>],
    pub runtime: &'a str,
    /// Quiet-board latency with the model's default threads, ms.
    pub base_ms: f64,
}

impl<'a> ModelInfo<'a> {
    pub fn new(id: &'a str, d: &'a Decomposition, base_ms: f64) -> Self {
        ModelInfo {
            id,
            name: &d.model,
            kernels: d.kernels.len(),
            macs: d.macs,
            params: d.params,
            weights_bytes: d.weights_bytes,
            peak_memory_bytes: d.peak_memory_bytes,
            input_shapes: &d.input_shapes,
            runtime: &d.runtime,
            base_ms,
        }
    }
}
