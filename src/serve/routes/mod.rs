//! The HTTP routes, one file per resource, and the router over them. [`ROUTES`] is the one list
//! of them: the router is built from it, and a test holds it equal to the OpenAPI document.
//!
//! Around every handler, from the outside in: the metrics, time-limit and panic guard
//! ([`super::metrics::track`]), the bearer-token check ([`super::auth`]), and the body
//! timeout (a body that stalls longer than `limits.body_timeout_ms` is cut off).
mod health;
mod metrics;
mod models;
mod observe;
mod openapi;
mod plan;
mod predict;
mod state;

pub use observe::RateLimit;
pub use predict::Hot;

use super::auth::Auth;
use super::error::ApiError;
use super::store::{self, ModelEntry, StoreError};
use super::{App, Engine};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

type AppState = Arc<App>;

/// Every route: method and path template.
pub const ROUTES: [(&str, &str); 10] = [
    ("POST", "/v1/models"),
    ("GET", "/v1/models/{id}"),
    ("POST", "/v1/predict"),
    ("POST", "/v1/plan"),
    ("POST", "/v1/observe"),
    ("GET", "/v1/state"),
    ("GET", "/v1/openapi.yaml"),
    ("GET", "/metrics"),
    ("GET", "/live"),
    ("GET", "/ready"),
];

/// Body limits of the routes that read one, bytes.
#[derive(Clone, Copy)]
struct BodyLimits {
    json: usize,
    model: usize,
    observe: usize,
}

fn handler(method: &str, path: &str, l: BodyLimits) -> Option<MethodRouter<AppState>> {
    Some(match (method, path) {
        ("POST", "/v1/models") => post(models::post).layer(DefaultBodyLimit::max(l.model)),
        ("GET", "/v1/models/{id}") => get(models::get),
        ("POST", "/v1/predict") => post(predict::post).layer(DefaultBodyLimit::max(l.json)),
        ("POST", "/v1/plan") => post(plan::post).layer(DefaultBodyLimit::max(l.json)),
        ("POST", "/v1/observe") => post(observe::post).layer(DefaultBodyLimit::max(l.observe)),
        ("GET", "/v1/state") => get(state::get),
        ("GET", "/v1/openapi.yaml") => get(openapi::get),
        ("GET", "/metrics") => get(metrics::get),
        ("GET", "/live") => get(health::live),
        ("GET", "/ready") => get(health::ready),
        _ => return None,
    })
}

/// The largest body `POST /v1/observe` reads: its own limit, never above the JSON routes' one.
fn observe_limit(app: &App) -> u64 {
    let l = &app.cfg.limits;
    l.observe_body_bytes.min(l.json_body_bytes)
}

/// The router over [`ROUTES`], with the middleware described above.
pub fn router(app: AppState, timeout: Duration) -> Router {
    let limits = &app.cfg.limits;
    let size = |b: u64| usize::try_from(b).unwrap_or(usize::MAX);
    let l = BodyLimits {
        json: size(limits.json_body_bytes),
        model: size(limits.model_body_bytes),
        observe: size(observe_limit(&app)),
    };
    let body_timeout = Duration::from_millis(limits.body_timeout_ms);
    let mut r = Router::new();
    for (method, path) in ROUTES {
        match handler(method, path, l) {
            Some(h) => r = r.route(path, h),
            None => tracing::error!("no handler for {method} {path}; this is a bug"),
        }
    }
    let auth = app.auth.clone();
    r.fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .layer(axum::middleware::from_fn(move |req: Request, next| {
            authorize(auth.clone(), req, next)
        }))
        .layer(axum::middleware::from_fn(move |req: Request, next| {
            super::metrics::track(timeout, req, next)
        }))
        .with_state(app)
}

/// Answers 401 to a request the token check does not admit.
async fn authorize(auth: Option<Arc<Auth>>, req: Request, next: Next) -> Response {
    match auth {
        Some(a) if !a.admits(&req) => ApiError::unauthorized(
            "this route needs `Authorization: Bearer <token>` (the token of auth.token_file)",
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// A JSON answer.
fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut buf = Vec::with_capacity(512);
    match serde_json::to_writer(&mut buf, body) {
        Ok(()) => {
            let mut r = (status, buf).into_response();
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
            req.uri().path().chars().take(200).collect::<String>()
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

fn engine(app: &App) -> Result<Arc<Engine>, ApiError> {
    app.engine().ok_or_else(|| {
        ApiError::not_ready("the profile or the roofline probe is still loading; retry shortly")
    })
}

/// A model ready to predict: from memory, else from the state directory, else unknown (a damaged
/// stored file is quarantined and unknown too).
async fn lookup(
    app: &AppState,
    engine: &Arc<Engine>,
    id: &str,
) -> Result<Arc<ModelEntry>, ApiError> {
    if let Some(e) = app.store.cached(id, engine.generation) {
        app.hot.cache_hit();
        return Ok(e);
    }
    let miss = || {
        ::metrics::counter!("augur_model_cache_requests_total", "result" => "miss").increment(1);
        ApiError::unknown_model(id)
    };
    if !store::valid_id(id) {
        return Err(miss());
    }
    match reload(app, engine, id).await? {
        Some(e) => {
            ::metrics::counter!("augur_model_cache_requests_total", "result" => "disk")
                .increment(1);
            Ok(e)
        }
        None => Err(miss()),
    }
}

/// A stored model, decomposed under `engine` and kept in memory; `None` when not stored.
async fn reload(
    app: &AppState,
    engine: &Arc<Engine>,
    id: &str,
) -> Result<Option<Arc<ModelEntry>>, ApiError> {
    let (store, eng, key) = (Arc::clone(&app.store), Arc::clone(engine), id.to_string());
    let entry = tokio::task::spawn_blocking(move || store.reload(&key, &eng))
        .await
        .map_err(ApiError::internal)?
        .map_err(store_error)?;
    Ok(entry.map(|e| app.store.insert(e)))
}

/// What a store that failed answers: the client may retry once there is room (507) or the store
/// is back (503). The paths stay in the log.
fn store_error(e: StoreError) -> ApiError {
    tracing::error!("model store: {e}");
    match e {
        StoreError::Full { .. } => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            "the state directory is full; the model was not kept",
        ),
        StoreError::Unwritable { .. } | StoreError::Io { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the state directory cannot be used; the daemon's log has the details",
        ),
        StoreError::Decompose(d) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unparsable_model", d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_handler_and_is_documented_and_nothing_else_is() {
        let l = BodyLimits {
            json: 1,
            model: 1,
            observe: 1,
        };
        for (m, p) in ROUTES {
            assert!(handler(m, p, l).is_some(), "{m} {p}");
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
