//! The shapes of requests and answers, how bodies are read (content type, size limit, JSON), and
//! the what-if state: a partial state merged over the live one.
use super::error::ApiError;
use crate::kernels::Decomposition;
use crate::predict::{KernelPrediction, Prediction};
use crate::sense::Snapshot;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictItem {
    pub model: String,
    pub threads: Option<usize>,
    pub state: Option<Map<String, Value>>,
    pub kernels: Option<bool>,
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

/// The state a prediction was made under, in brief.
#[derive(Debug, Clone, Serialize)]
pub struct StateSummary {
    /// `live`, or `what_if` when the request changed it.
    pub source: &'static str,
    pub seq: u64,
    pub timestamp: f64,
    /// Busy fraction of all CPUs not caused by augur.
    pub others_busy: Option<f64>,
    pub freq_ratio: Option<f64>,
    pub compute_ratio: Option<f64>,
    pub memory_ratio: Option<f64>,
}

impl StateSummary {
    pub fn of(s: &Snapshot, what_if: bool) -> StateSummary {
        StateSummary {
            source: if what_if { "what_if" } else { "live" },
            seq: s.seq,
            timestamp: s.timestamp,
            others_busy: s.others_busy(),
            freq_ratio: s.freq_ratio,
            compute_ratio: s.probe.compute_ratio,
            memory_ratio: s.probe.memory_ratio,
        }
    }
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
    pub state: &'a StateSummary,
    pub factors: Factors,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernels: Option<Vec<KernelPrediction>>,
}

/// The factors a prediction applied to the quiet-board base: their product is `slowdown`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Factors {
    pub cpu: f64,
    pub memory: f64,
    pub frequency: f64,
    /// Board speed against calibration, from the reference workload (1 when not measured).
    pub speed: f64,
    /// Correction learned online from observations (1 until there are some).
    pub learned: f64,
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
            state,
            factors: Factors {
                cpu: p.state.cpu_factor,
                memory: p.state.memory_factor,
                frequency: p.state.frequency_factor,
                speed: p.state.speed_factor,
                learned: p.state.learned_factor,
            },
            kernels: p.kernels,
        }
    }
}

/// An item of a batch answer: a prediction or the error of that item alone.
#[derive(Serialize)]
#[serde(untagged)]
pub enum BatchItem<'a> {
    Ok(PredictAnswer<'a>),
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

/// The media type of a request, lower-cased, without parameters.
pub fn media_type(h: &HeaderMap) -> Option<String> {
    let v = h.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// Requires a JSON content type.
pub fn require_json(h: &HeaderMap) -> Result<(), ApiError> {
    match media_type(h) {
        Some(m) if is_json(&m) => Ok(()),
        Some(m) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected application/json, got {m}"),
        )),
        None => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        )),
    }
}

/// Reads the whole body. One announced over the limit is refused by its Content-Length before a
/// byte is read (so a client that sent `Expect: 100-continue` never sends it); one that only turns
/// out too long is cut off by the route's `DefaultBodyLimit`, which must be `limit` too.
pub async fn read_body(req: Request, limit: u64) -> Result<Bytes, ApiError> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let over = || ApiError::too_large(format!("the body is over the limit of {limit} bytes"));
    if announced.is_some_and(|n| n > limit) {
        return Err(over());
    }
    Bytes::from_request(req, &())
        .await
        .map_err(|e: BytesRejection| match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => over(),
            e => ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                format!("cannot read the body: {e}"),
            ),
        })
}

/// Parses a JSON body: syntax errors are 400, a valid document of the wrong shape is 422.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::invalid(e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::malformed_json(e.to_string())
            }
        }
    })
}

/// Validates a thread count.
pub fn threads(t: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match t {
        None => Ok(default),
        Some(t) if (1..=1024).contains(&t) => Ok(t),
        Some(t) => Err(ApiError::invalid(format!(
            "threads must be 1..=1024, got {t}"
        ))),
    }
}

/// The state to predict under: the live one, or the live one with `patch` applied.
///
/// `patch` is a partial [`Snapshot`] merged over the live one (objects merge key by key, anything
/// else replaces), plus two shorthands applied after the merge:
/// `others_busy` (0..=1: the busy fraction of all CPUs taken by other work) and
/// `extra_busy_cores` (≥ 0: cores' worth of work added to what is running now, as in "if another
/// job took one core").
pub fn what_if(
    live: &Arc<Snapshot>,
    patch: Option<&Map<String, Value>>,
    cores: f64,
) -> Result<(Arc<Snapshot>, bool), ApiError> {
    let Some(patch) = patch.filter(|p| !p.is_empty()) else {
        return Ok((Arc::clone(live), false));
    };
    let number = |key: &str| -> Result<Option<f64>, ApiError> {
        match patch.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(ApiError::invalid(format!("state.{key} must be a number"))),
            },
        }
    };
    let others = number("others_busy")?;
    let extra = number("extra_busy_cores")?;
    if others.is_some_and(|o| !(0.0..=1.0).contains(&o)) {
        return Err(ApiError::invalid("state.others_busy must be within 0..=1"));
    }
    if extra.is_some_and(|x| !(0.0..=1024.0).contains(&x)) {
        return Err(ApiError::invalid(
            "state.extra_busy_cores must be within 0..=1024",
        ));
    }
    let rest: Map<String, Value> = patch
        .iter()
        .filter(|(k, _)| *k != "others_busy" && *k != "extra_busy_cores")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut s = if rest.is_empty() {
        (**live).clone()
    } else {
        let mut v = serde_json::to_value(&**live)
            .map_err(|e| ApiError::internal(format!("cannot serialise the live state: {e}")))?;
        merge(&mut v, Value::Object(rest));
        serde_json::from_value::<Snapshot>(v)
            .map_err(|e| ApiError::invalid(format!("state: {e}")))?
    };
    let others = match (others, extra) {
        (_, Some(x)) => Some(others.or(s.others_busy()).unwrap_or(0.0) + x / cores.max(1.0)),
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
            let e = what_if(&live, Some(&map(bad)), 2.0).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        }
    }

    #[test]
    fn json_errors_are_classified() {
        let e = parse_json::<PredictRequest>(b"{\"model\": ").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_json::<PredictRequest>(b"{\"modle\": \"x\"}").unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
