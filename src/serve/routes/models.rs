//! `POST /v1/models` (import a model) and `GET /v1/models/{id}` (what is known of it).
//!
//! An upload is answered 201 only once its graph is durably in the state directory; a full disk is
//! 507 and a store that cannot be written 503, and nothing is kept in memory then, so that what a
//! client was told is known survives a restart. The body is read first, within the byte budget of
//! all uploads together, and the import slot (a core and the graph's memory) is taken only then: a
//! client that never finishes its body holds bytes of the budget, never the slot.
use super::{AppState, engine, json, lookup, reload, store_error};
use crate::model::{Format, ImportError, sniff};
use crate::serve::api::ModelInfo;
use crate::serve::body;
use crate::serve::error::ApiError;
use crate::serve::store::{self, ModelEntry};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

/// Largest dimension, and element count, an input shape given in the query may have: beyond
/// them a shape is a mistake, and importing with it would only exhaust memory.
const MAX_DIM: usize = 1 << 16;
const MAX_ELEMENTS: u128 = 1 << 32;

fn import_error(e: ImportError) -> ApiError {
    let code = match e {
        ImportError::UnsupportedOp { .. } => "unsupported_operator",
        _ => "unparsable_model",
    };
    let hint = match e {
        ImportError::Shape { .. } => {
            "; if the input shape is dynamic, give it: ?input_shape=1,3,224,224"
        }
        _ => "",
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, format!("{e}{hint}"))
}

fn parse_shape(v: &str) -> Result<Vec<usize>, ApiError> {
    let v = v.replace("%2C", ",").replace("%2c", ",");
    let shape = crate::model::parse_shape(&v).map_err(|e| ApiError::invalid(e.to_string()))?;
    let elements = shape.iter().map(|&d| d as u128).product::<u128>();
    if shape.is_empty()
        || shape.iter().any(|&d| !(1..=MAX_DIM).contains(&d))
        || elements > MAX_ELEMENTS
    {
        return Err(ApiError::invalid(format!(
            "input_shape: every dimension must be 1..={MAX_DIM}, and the shape at most \
             {MAX_ELEMENTS} elements"
        )));
    }
    Ok(shape)
}

fn input_shape(req: &Request) -> Result<Option<Vec<usize>>, ApiError> {
    let Some(q) = req.uri().query() else {
        return Ok(None);
    };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "input_shape" => return parse_shape(v).map(Some),
            "" => {}
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{}`",
                    other.chars().take(40).collect::<String>()
                )));
            }
        }
    }
    Ok(None)
}

/// Whether the body is JSON (nn-Meter IR) rather than ONNX, by its content type.
fn wants_json(req: &Request) -> Result<bool, ApiError> {
    match body::media_type(req.headers()).as_deref() {
        Some("application/octet-stream" | "application/onnx" | "application/x-onnx") => Ok(false),
        Some("application/json") => Ok(true),
        m => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "expected application/octet-stream (ONNX) or application/json (nn-Meter IR), got {}",
                m.unwrap_or("no Content-Type")
            ),
        )),
    }
}

fn unparsable(d: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unparsable_model", d)
}

pub(super) async fn post(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let want_json = wants_json(&req)?;
    let shape = input_shape(&req)?;
    let engine = engine(&app)?;
    let l = &app.cfg.limits;
    let limit = if want_json {
        l.ir_body_bytes.min(l.model_body_bytes)
    } else {
        l.model_body_bytes
    };
    let (bytes, _budget) = body::read_budgeted(req, limit, &app.uploads).await?;
    if bytes.is_empty() {
        return Err(unparsable("the body is empty"));
    }
    if want_json && sniff(&bytes) != Format::NnMeterIr {
        return Err(unparsable(
            "a JSON body must be an nn-Meter IR graph (a JSON object)",
        ));
    }
    let id = store::digest(&bytes, shape.as_deref());
    if app.store.cached(&id, engine.generation).is_some() {
        let e = lookup(&app, &engine, &id).await?;
        return Ok(model_answer(StatusCode::OK, &e));
    }
    // Imports take a core and the graph's memory: a few at a time, the others wait (within the
    // request time limit).
    let _slot = app
        .imports
        .acquire()
        .await
        .map_err(|_| ApiError::not_ready("shutting down"))?;
    // Stored (and sound) already: known, not imported again. A damaged or older file is not.
    if let Some(e) = reload(&app, &engine, &id).await? {
        return Ok(model_answer(StatusCode::OK, &e));
    }
    let (store, max_nodes) = (Arc::clone(&app.store), app.cfg.limits.max_graph_nodes);
    let key = id.clone();
    let entry = tokio::task::spawn_blocking(move || -> Result<ModelEntry, ApiError> {
        let t0 = Instant::now();
        let g = catch_unwind(AssertUnwindSafe(|| {
            crate::model::import_bytes(&bytes, "the posted model", shape.as_deref())
        }))
        .map_err(|_| unparsable("the importer failed on this model"))?
        .map_err(import_error)?;
        drop(bytes);
        if g.nodes.len() > max_nodes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "graph_too_large",
                format!(
                    "the graph has {} nodes, over limits.max_graph_nodes ({max_nodes})",
                    g.nodes.len()
                ),
            ));
        }
        let entry = store::prepare(&key, &g, &engine).map_err(|e| unparsable(&e.to_string()))?;
        store.write(&key, &g).map_err(store_error)?;
        ::metrics::histogram!("augur_model_import_duration_seconds")
            .record(t0.elapsed().as_secs_f64());
        Ok(entry)
    })
    .await
    .map_err(ApiError::internal)?;
    let result = if entry.is_ok() { "ok" } else { "rejected" };
    ::metrics::counter!("augur_model_imports_total", "result" => result).increment(1);
    let e = app.store.insert(entry?);
    Ok(model_answer(StatusCode::CREATED, &e))
}

fn model_answer(status: StatusCode, e: &ModelEntry) -> Response {
    let mut r = json(
        status,
        &ModelInfo::new(&e.id, &e.decomposition, e.base.latency_ms),
    );
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/models/{}", e.id)) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    r
}

pub(super) async fn get(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let engine = engine(&app)?;
    let e = lookup(&app, &engine, &id).await?;
    Ok(model_answer(StatusCode::OK, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_shapes_are_bounded() {
        assert_eq!(parse_shape("1%2C3,224,224").unwrap(), vec![1, 3, 224, 224]);
        for bad in ["", "0,3,224,224", "1,3,100000,100000", "1,3,70000", "a"] {
            assert!(parse_shape(bad).is_err(), "{bad}");
        }
    }
}
