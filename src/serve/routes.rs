//! The HTTP routes and their handlers. [`ROUTES`] is the one list of them: the router is built from
//! it, and a test holds it equal to the OpenAPI document.
//!
//! Hot path: `POST /v1/predict` on a model in memory takes the newest snapshot (an `Arc`), the
//! cached decomposition and base prediction (an `Arc` out of the LRU), and scales the base by the
//! live slowdown; nothing is imported, decomposed or copied.
use super::api::{
    self, BatchItem, ModelInfo, ObserveRequest, PredictAnswer, PredictRequest, StateSummary,
};
use super::error::ApiError;
use super::journal::Observation;
use super::store::{self, ModelEntry};
use super::{App, Engine};
use crate::model::{Format, ImportError, sniff};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::Serialize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

type AppState = Arc<App>;

/// Every route: method and path template.
pub const ROUTES: [(&str, &str); 9] = [
    ("POST", "/v1/models"),
    ("GET", "/v1/models/{id}"),
    ("POST", "/v1/predict"),
    ("POST", "/v1/observe"),
    ("GET", "/v1/state"),
    ("GET", "/v1/openapi.yaml"),
    ("GET", "/metrics"),
    ("GET", "/live"),
    ("GET", "/ready"),
];

fn handler(
    method: &str,
    path: &str,
    json_limit: usize,
    model_limit: usize,
) -> Option<MethodRouter<AppState>> {
    Some(match (method, path) {
        ("POST", "/v1/models") => post(post_model).layer(DefaultBodyLimit::max(model_limit)),
        ("GET", "/v1/models/{id}") => get(get_model),
        ("POST", "/v1/predict") => post(predict).layer(DefaultBodyLimit::max(json_limit)),
        ("POST", "/v1/observe") => post(observe).layer(DefaultBodyLimit::max(json_limit)),
        ("GET", "/v1/state") => get(state),
        ("GET", "/v1/openapi.yaml") => get(openapi),
        ("GET", "/metrics") => get(metrics),
        ("GET", "/live") => get(live),
        ("GET", "/ready") => get(ready),
        _ => return None,
    })
}

/// The router over [`ROUTES`], with the metrics, time-limit and panic-guard middleware around it.
pub fn router(app: AppState, timeout: Duration) -> Router {
    let limits = &app.cfg.limits;
    let json_limit = usize::try_from(limits.json_body_bytes).unwrap_or(usize::MAX);
    let model_limit = usize::try_from(limits.model_body_bytes).unwrap_or(usize::MAX);
    let mut r = Router::new();
    for (method, path) in ROUTES {
        match handler(method, path, json_limit, model_limit) {
            Some(h) => r = r.route(path, h),
            None => tracing::error!("no handler for {method} {path}; this is a bug"),
        }
    }
    r.fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(move |req: Request, next| {
            super::metrics::track(timeout, req, next)
        }))
        .with_state(app)
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(b) => {
            let mut r = (status, b).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => ApiError::internal(format!("cannot serialise the answer: {e}")).into_response(),
    }
}

async fn no_route(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!(
            "no route {} {}; see /v1/openapi.yaml",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

async fn live() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "live"}))
}

async fn ready(State(app): State<AppState>) -> Response {
    if app.is_ready() {
        let calibrated = app.engine().is_some_and(|e| e.predictor.calibrated());
        json(
            StatusCode::OK,
            &serde_json::json!({"status": "ready", "calibrated": calibrated}),
        )
    } else {
        ApiError::not_ready(format!("waiting for {}", app.waiting_for().join(", "))).into_response()
    }
}

async fn openapi() -> Response {
    let mut r = super::openapi::DOCUMENT.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    r
}

async fn state(State(app): State<AppState>) -> Response {
    let engine = app.engine();
    let snap = app.snapshot();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "ready": app.is_ready(),
            "calibrated": engine.as_ref().is_some_and(|e| e.predictor.calibrated()),
            "engine": engine.as_ref().map(|e| e.source.as_str()),
            "roofline": engine.as_ref().map(|e| e.predictor.roofline),
            "default_threads": engine.as_ref().map(|e| e.threads),
            "others_busy": snap.others_busy(),
            "snapshot": &*snap,
        }),
    )
}

async fn metrics(State(app): State<AppState>) -> Response {
    let Some(h) = super::metrics::handle() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "another metrics recorder was installed in this process",
        )
        .into_response();
    };
    let snap = app.snapshot();
    if snap.seq > 0 {
        crate::sense::metrics::record(&snap);
    }
    let (entries, bytes) = app.store.usage();
    metrics::gauge!("augur_model_cache_entries").set(entries as f64);
    metrics::gauge!("augur_model_cache_bytes").set(bytes as f64);
    let store = Arc::clone(&app.store);
    let stored = tokio::task::spawn_blocking(move || store.stored_count())
        .await
        .unwrap_or(0);
    metrics::gauge!("augur_models_stored").set(stored as f64);
    metrics::gauge!("augur_ready").set(if app.is_ready() { 1.0 } else { 0.0 });
    let mut r = h.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn engine(app: &App) -> Result<Arc<Engine>, ApiError> {
    app.engine().ok_or_else(|| {
        ApiError::not_ready("the profile or the roofline probe is still loading; retry shortly")
    })
}

/// A model ready to predict: from memory, else from the state directory, else unknown.
async fn lookup(
    app: &AppState,
    engine: &Arc<Engine>,
    id: &str,
) -> Result<Arc<ModelEntry>, ApiError> {
    if let Some(e) = app.store.cached(id, engine.generation) {
        metrics::counter!("augur_model_cache_requests_total", "result" => "hit").increment(1);
        return Ok(e);
    }
    let miss = || {
        metrics::counter!("augur_model_cache_requests_total", "result" => "miss").increment(1);
        ApiError::unknown_model(id)
    };
    if !store::valid_id(id) {
        return Err(miss());
    }
    let (store, eng, key) = (Arc::clone(&app.store), Arc::clone(engine), id.to_string());
    let entry = tokio::task::spawn_blocking(move || match store.read(&key) {
        Ok(Some(g)) => store::prepare(&key, &g, &eng).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(format!("cannot reload stored model {id}: {e}")))?;
    match entry {
        Some(e) => {
            metrics::counter!("augur_model_cache_requests_total", "result" => "disk").increment(1);
            Ok(app.store.insert(e))
        }
        None => Err(miss()),
    }
}

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

fn input_shape(req: &Request) -> Result<Option<Vec<usize>>, ApiError> {
    let Some(q) = req.uri().query() else {
        return Ok(None);
    };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "input_shape" => {
                let v = v.replace("%2C", ",").replace("%2c", ",");
                return crate::model::parse_shape(&v)
                    .map(Some)
                    .map_err(ApiError::invalid);
            }
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

async fn post_model(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let media = api::media_type(req.headers());
    let want_json = match media.as_deref() {
        Some("application/octet-stream" | "application/onnx" | "application/x-onnx") => false,
        Some("application/json") => true,
        m => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "expected application/octet-stream (ONNX) or application/json (nn-Meter IR), got {}",
                    m.unwrap_or("no Content-Type")
                ),
            ));
        }
    };
    let shape = input_shape(&req)?;
    let engine = engine(&app)?;
    // Uploads and imports hold the model's size in memory (and an import a core): a few at a time,
    // the rest queue within the request time limit, so memory stays under
    // concurrent_imports × model_body_bytes whatever the clients do.
    let _permit = app
        .imports
        .acquire()
        .await
        .map_err(|_| ApiError::not_ready("shutting down"))?;
    let bytes = api::read_body(req, app.cfg.limits.model_body_bytes).await?;
    let unparsable =
        |d: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unparsable_model", d);
    if bytes.is_empty() {
        return Err(unparsable("the body is empty"));
    }
    if want_json && sniff(&bytes) != Format::NnMeterIr {
        return Err(unparsable(
            "a JSON body must be an nn-Meter IR graph (a JSON object)",
        ));
    }
    let id = store::digest(&bytes, shape.as_deref());
    if app.store.cached(&id, engine.generation).is_some() || app.store.stored(&id) {
        let e = lookup(&app, &engine, &id).await?;
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
        if let Err(e) = store.write(&key, &g) {
            // Still served from memory; only a restart would need it posted again.
            tracing::error!("cannot keep model {key} in the state directory: {e}");
        }
        metrics::histogram!("augur_model_import_duration_seconds")
            .record(t0.elapsed().as_secs_f64());
        Ok(entry)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let result = if entry.is_ok() { "ok" } else { "rejected" };
    metrics::counter!("augur_model_imports_total", "result" => result).increment(1);
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

async fn get_model(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let engine = engine(&app)?;
    let e = lookup(&app, &engine, &id).await?;
    Ok(model_answer(StatusCode::OK, &e))
}

fn record_prediction(ms: f64, calibrated: bool) {
    metrics::counter!("augur_predictions_total", "calibrated" => if calibrated { "true" } else { "false" })
        .increment(1);
    metrics::histogram!("augur_predicted_latency_seconds").record(ms / 1e3);
}

async fn predict(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    api::require_json(req.headers())?;
    let bytes = api::read_body(req, app.cfg.limits.json_body_bytes).await?;
    let r: PredictRequest = api::parse_json(&bytes)?;
    let engine = engine(&app)?;
    let live = app.snapshot();
    let cores = engine.predictor.slowdown.cores;
    let Some(items) = r.batch else {
        let model = r
            .model
            .ok_or_else(|| ApiError::invalid("`model` (or `batch`) is required"))?;
        let threads = api::threads(r.threads, engine.threads)?;
        let (state, changed) = api::what_if(&live, r.state.as_ref(), cores)?;
        let entry = lookup(&app, &engine, &model).await?;
        let p = {
            let learner = app
                .journal
                .learner()
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            engine.predictor.predict_learned(
                &entry.decomposition,
                &entry.base,
                &state,
                threads,
                r.kernels,
                &learner,
                &entry.id,
            )
        };
        record_prediction(p.latency_ms, p.calibrated);
        let summary = StateSummary::of(&state, changed);
        return Ok(json(
            StatusCode::OK,
            &PredictAnswer::new(&entry.id, threads, &summary, p),
        ));
    };
    if r.model.is_some() {
        return Err(ApiError::invalid(
            "give either `model` or `batch`, not both",
        ));
    }
    if items.is_empty() {
        return Err(ApiError::invalid("`batch` is empty"));
    }
    let max = app.cfg.limits.max_batch;
    if items.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("{} items, over limits.max_batch ({max})", items.len()),
        ));
    }
    // The batch's state is resolved once; an item's own `state` replaces it for that item.
    let (shared, changed) = api::what_if(&live, r.state.as_ref(), cores)?;
    let mut summaries = vec![StateSummary::of(&shared, changed)];
    // Resolved first (look-ups may read the disk), predicted after under one read of the learner.
    let mut resolved = Vec::with_capacity(items.len());
    for item in &items {
        let one = async {
            let threads = api::threads(item.threads.or(r.threads), engine.threads)?;
            let (state, ix) = match &item.state {
                None => (Arc::clone(&shared), 0),
                Some(s) => {
                    let (st, ch) = api::what_if(&live, Some(s), cores)?;
                    summaries.push(StateSummary::of(&st, ch));
                    (st, summaries.len() - 1)
                }
            };
            let entry = lookup(&app, &engine, &item.model).await?;
            Ok::<_, ApiError>((entry, state, threads, ix))
        };
        resolved.push(one.await);
    }
    let learner = app
        .journal
        .learner()
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    let results: Vec<BatchItem> = resolved
        .into_iter()
        .zip(&items)
        .map(|(d, item)| match d {
            Ok((entry, state, threads, ix)) => {
                let p = engine.predictor.predict_learned(
                    &entry.decomposition,
                    &entry.base,
                    &state,
                    threads,
                    item.kernels.unwrap_or(r.kernels),
                    &learner,
                    &entry.id,
                );
                record_prediction(p.latency_ms, p.calibrated);
                BatchItem::Ok(PredictAnswer::new(&item.model, threads, &summaries[ix], p))
            }
            Err(e) => {
                let mut v = e.to_json();
                if let Some(o) = v.as_object_mut() {
                    o.insert("model".into(), item.model.clone().into());
                }
                BatchItem::Err(v)
            }
        })
        .collect();
    drop(learner);
    Ok(json(StatusCode::OK, &api::BatchAnswer { results }))
}

async fn observe(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let r = observe_inner(&app, req).await;
    let result = match &r {
        Ok(_) => "accepted",
        Err(e) if e.status.is_client_error() => "rejected",
        Err(_) => "failed",
    };
    metrics::counter!("augur_observations_total", "result" => result).increment(1);
    r
}

async fn observe_inner(app: &AppState, req: Request) -> Result<Response, ApiError> {
    api::require_json(req.headers())?;
    let bytes = api::read_body(req, app.cfg.limits.json_body_bytes).await?;
    let r: ObserveRequest = api::parse_json(&bytes)?;
    let bad = |d: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_observation", d);
    let valid_ms = |v: f64| v.is_finite() && v > 0.0 && v < 1e9;
    if !valid_ms(r.latency_ms) {
        return Err(bad(format!(
            "latency_ms must be a positive, finite number of milliseconds, got {}",
            r.latency_ms
        )));
    }
    let engine = engine(app)?;
    let threads = api::threads(r.threads, engine.threads)?;
    let entry = lookup(app, &engine, &r.model).await?;
    if let Some(ks) = &r.kernels {
        for k in ks {
            if !valid_ms(k.latency_ms) {
                return Err(bad(format!(
                    "kernel `{}`: latency_ms must be a positive, finite number, got {}",
                    k.name, k.latency_ms
                )));
            }
            if !entry.decomposition.kernels.iter().any(|d| d.name == k.name) {
                return Err(bad(format!(
                    "kernel `{}` is not a kernel of this model (POST /v1/predict with \"kernels\": true lists them)",
                    k.name.chars().take(80).collect::<String>()
                )));
            }
        }
    }
    let live = app.snapshot();
    let p = engine
        .predictor
        .predict(&entry.decomposition, &entry.base, &live, threads, false);
    // JSON has no NaN: a non-finite figure would not read back, so it is journalled as 0 (which
    // the learner refuses, now and on replay alike).
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let phi = engine.predictor.phi(&entry.base, &p).map(finite);
    let served = {
        let learner = app
            .journal
            .learner()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        p.latency_ms * learner.correction(&entry.id, &phi)
    };
    let observed = r.latency_ms;
    let (seq, learned) = app
        .journal
        .append(Observation {
            model: entry.id.clone(),
            latency_ms: observed,
            predicted_ms: finite(p.latency_ms),
            served_ms: finite(served),
            phi,
            threads,
            kernels: r.kernels,
        })
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "journal_unavailable",
                e.to_string(),
            )
        })?;
    let error = (served - observed) / observed;
    metrics::histogram!("augur_observed_latency_seconds").record(observed / 1e3);
    metrics::histogram!("augur_observation_error_ratio").record(error);
    metrics::histogram!("augur_observation_abs_error_ratio").record(error.abs());
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "accepted": true,
            "seq": seq,
            "model": entry.id,
            "predicted_ms": served,
            "error_ratio": error,
            "learned": learned.is_ok(),
            "reason": learned.err().map(|e| e.to_string()),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_handler_and_is_documented_and_nothing_else_is() {
        for (m, p) in ROUTES {
            assert!(handler(m, p, 1, 1).is_some(), "{m} {p}");
        }
        let mut documented = super::super::openapi::operations(super::super::openapi::DOCUMENT);
        let mut ours: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        ours.sort();
        assert_eq!(documented, ours);
    }
}
