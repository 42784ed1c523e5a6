//! `GET /metrics`: the Prometheus scrape, with the gauges that are read at scrape time.
use super::AppState;
use crate::serve::error::ApiError;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub(super) async fn get(State(app): State<AppState>) -> Response {
    let Some(h) = crate::serve::metrics::handle() else {
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
