//! How requests are read: the content type, the body within its size limit and its time limits
//! (a body that stalls is cut off by the router's body timeout), model uploads within the byte
//! budget of all uploads together, JSON into typed requests, and the checks of the numbers in them.
use super::error::ApiError;
use crate::sense::Snapshot;
use crate::sense::what_if::{self, WhatIfError};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// `application/json` or `application/…+json`, compared without allocating (the hot path).
fn is_json(h: &HeaderMap) -> Option<bool> {
    let v = h.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let m = v.split(';').next().unwrap_or_default().trim().as_bytes();
    let app = b"application/";
    Some(
        m.len() > app.len()
            && m[..app.len()].eq_ignore_ascii_case(app)
            && (m[app.len()..].eq_ignore_ascii_case(b"json")
                || (m.len() > app.len() + 5 && m[m.len() - 5..].eq_ignore_ascii_case(b"+json"))),
    )
}

/// Requires a JSON content type.
pub fn require_json(h: &HeaderMap) -> Result<(), ApiError> {
    match is_json(h) {
        Some(true) => Ok(()),
        Some(false) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "expected application/json, got {}",
                media_type(h).unwrap_or_default()
            ),
        )),
        None => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        )),
    }
}

fn over(limit: u64) -> ApiError {
    ApiError::too_large(format!("the body is over the limit of {limit} bytes"))
}

/// The announced length, refused before a byte is read when over `limit` (so a client that sent
/// `Expect: 100-continue` never sends it).
fn announced(req: &Request, limit: u64) -> Result<Option<u64>, ApiError> {
    let n = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match n {
        Some(n) if n > limit => Err(over(limit)),
        n => Ok(n),
    }
}

/// Whether a body error is the body timeout (tower-http's, somewhere down the error's sources).
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

fn unreadable(e: &(dyn std::error::Error + 'static)) -> ApiError {
    if is_timeout(e) {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the body stalled longer than limits.body_timeout_ms",
        );
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "body_unreadable",
        format!("cannot read the body: {e}"),
    )
}

/// Reads the whole body. One that only turns out too long is cut off by the route's
/// `DefaultBodyLimit`, which must be `limit` too.
pub async fn read_body(req: Request, limit: u64) -> Result<Bytes, ApiError> {
    announced(&req, limit)?;
    Bytes::from_request(req, &())
        .await
        .map_err(|e: BytesRejection| match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                over(limit)
            }
            e => unreadable(&e),
        })
}

/// Reads a model upload within `limit` bytes, taking its bytes out of `budget` (the bytes all
/// uploads may hold at once) as they arrive: an announced length all at once, a chunked body
/// frame by frame. The permit returned holds them until the upload is dropped.
pub async fn read_budgeted(
    req: Request,
    limit: u64,
    budget: &Arc<Semaphore>,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), ApiError> {
    let closed = || ApiError::not_ready("shutting down");
    let take = |n: u64| {
        let budget = Arc::clone(budget);
        async move {
            let n = u32::try_from(n).map_err(|_| over(limit))?;
            budget.acquire_many_owned(n).await.map_err(|_| closed())
        }
    };
    let announced = announced(&req, limit)?;
    let mut reserved = announced.unwrap_or(0);
    let mut held = match reserved {
        0 => None,
        n => Some(take(n).await?),
    };
    let mut buf = Vec::with_capacity(usize::try_from(reserved).unwrap_or(0));
    let mut body: Body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| unreadable(&e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = buf.len() as u64 + data.len() as u64;
        if len > limit {
            return Err(over(limit));
        }
        if len > reserved {
            let more = take(len - reserved).await?;
            reserved = len;
            match held.as_mut() {
                Some(h) => h.merge(more),
                None => held = Some(more),
            }
        }
        buf.extend_from_slice(&data);
    }
    Ok((Bytes::from(buf), held))
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

/// The what-if keys that are not fields of a snapshot but shorthands applied after the merge.
const SHORTHANDS: [&str; 2] = ["others_busy", "extra_busy_cores"];

/// The state to predict under (see [`what_if::what_if`]); a refused state is 422.
///
/// Every key of the patch must be a field of the snapshot, as the document's `WhatIf` says: the
/// snapshot's serde defaults let unknown keys through silently, so a key the resulting snapshot
/// does not write back is one that was ignored (a typo the client would otherwise never hear of).
pub fn what_if(
    live: &Arc<Snapshot>,
    patch: Option<&Map<String, Value>>,
    cores: f64,
) -> Result<(Arc<Snapshot>, bool), ApiError> {
    let (s, changed) = what_if::what_if(live, patch, cores)
        .map_err(|e: WhatIfError| ApiError::invalid(e.to_string()))?;
    let Some(patch) = patch.filter(|p| p.keys().any(|k| !SHORTHANDS.contains(&k.as_str()))) else {
        return Ok((s, changed));
    };
    let back = serde_json::to_value(&*s).map_err(ApiError::internal)?;
    let fields = patch
        .iter()
        .filter(|(k, _)| !SHORTHANDS.contains(&k.as_str()));
    match unknown_key(fields, &back, "") {
        Some(key) => Err(ApiError::invalid(format!(
            "state.{key} is not a field of a snapshot, or not of its shape (or may not be null)"
        ))),
        None => Ok((s, changed)),
    }
}

/// The first key of `patch` (an object's entries) that `back` (what it became) lacks, or holds in
/// another shape, as a path.
fn unknown_key<'a>(
    patch: impl IntoIterator<Item = (&'a String, &'a Value)>,
    back: &Value,
    at: &str,
) -> Option<String> {
    patch.into_iter().find_map(|(k, v)| {
        let path = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        match back.get(k) {
            None => Some(path),
            Some(b) => reshaped(v, b, path),
        }
    })
}

/// Where `v` (as written) and `b` (as written back) differ in shape. serde reads a struct from an
/// array too (`[null, null]` for a `Stat`): the shape the document states is the one written back.
fn reshaped(v: &Value, b: &Value, path: String) -> Option<String> {
    // A null leaves an optional field unset, and the shorthands may set it after the merge (a
    // null `utilization.busy.mean` beside `others_busy`); a null where no null may go fails the
    // merge already.
    if !v.is_null() && std::mem::discriminant(v) != std::mem::discriminant(b) {
        return Some(path);
    }
    match (v, b) {
        (Value::Object(m), _) => unknown_key(m, b, &path),
        (Value::Array(items), Value::Array(backs)) => items
            .iter()
            .zip(backs)
            .enumerate()
            .find_map(|(i, (x, y))| reshaped(x, y, format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Shortest latency an observation may report, ms (1 ns): anything shorter is no measurement,
/// and dividing by it would send the error ratio to infinity.
pub const MIN_LATENCY_MS: f64 = 1e-6;
/// Longest, ms (about 11.6 days).
pub const MAX_LATENCY_MS: f64 = 1e9;

/// Whether `v` is a latency an observation may report.
pub fn valid_latency_ms(v: f64) -> bool {
    v.is_finite() && (MIN_LATENCY_MS..MAX_LATENCY_MS).contains(&v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::api::PredictRequest;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn refused_what_if_states_are_422() {
        let live = Arc::new(Snapshot::default());
        for bad in [
            serde_json::json!({"others_busy": 2}),
            serde_json::json!({"others_busy": "lots"}),
            serde_json::json!({"utilization": {"busy": {"mean": "high"}}}),
            serde_json::json!({"utilization": {"busy": {"mean": 1e308}}}),
            serde_json::json!({"bogus": -1}),
            serde_json::json!({"bogus": 1}),
            serde_json::json!({"others_busy": 0.5, "utilization": {"bsy": {"mean": 0.5}}}),
            serde_json::json!({"cpus": [{"cpu": 0}, {"cpu": 1, "speed": 2}]}),
            serde_json::json!({"sensors": [{"name": "x", "reason": null}]}),
            serde_json::json!({"probe": {"reference_cpu_ms": [null, null]}}),
            serde_json::json!({"loadavg": [1, 2, 3]}),
        ] {
            let e = what_if(&live, Some(&map(bad.clone())), 2.0).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        }
        let e = what_if(
            &live,
            Some(&map(
                serde_json::json!({"cpus": [{"cpu": 0}, {"cpu": 1, "speed": 2}]}),
            )),
            2.0,
        )
        .unwrap_err();
        assert!(e.detail.contains("state.cpus[1].speed"), "{}", e.detail);
        for good in [
            serde_json::json!({"others_busy": 0.5, "extra_busy_cores": null}),
            serde_json::json!({"utilization": {"busy": {"mean": 0.5}}, "loadavg": null}),
            serde_json::json!({"cpus": [{"cpu": 0, "governor": null, "seconds": {"user": 1}}]}),
            serde_json::json!({"sensors": [{"name": "x", "reason": "y"}]}),
            serde_json::json!({"extra_busy_cores": 1, "utilization": {"busy": {"mean": null}}}),
            serde_json::json!({"others_busy": 0.2, "own_cpu": {"mean": null}}),
            serde_json::json!({"probe": {"reference_history_cpu_ms": []}}),
            serde_json::json!({"probe": {"reference_history_cpu_ms": [20.0, 28.0, 28.0, 28.0]}}),
        ] {
            assert!(
                what_if(&live, Some(&map(good.clone())), 2.0).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn json_errors_are_classified() {
        let e = parse_json::<PredictRequest>(b"{\"model\": ").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_json::<PredictRequest>(b"{\"modle\": \"x\"}").unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn json_media_types_are_told_without_allocating() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::CONTENT_TYPE, v.parse().unwrap());
            m
        };
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
        ] {
            assert!(require_json(&h(ok)).is_ok(), "{ok}");
        }
        for bad in ["text/plain", "application/jsonx", "application/", "json"] {
            assert!(require_json(&h(bad)).is_err(), "{bad}");
        }
        assert!(require_json(&HeaderMap::new()).is_err());
        assert!(!valid_latency_ms(5e-324) && !valid_latency_ms(0.0) && valid_latency_ms(0.001));
    }
}
