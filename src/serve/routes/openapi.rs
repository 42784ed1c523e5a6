//! `GET /v1/openapi.yaml`: the API's own description, with this daemon's bounds stated.
use super::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

pub(super) async fn get(State(app): State<AppState>) -> Response {
    let cores = app.engine().map(|e| e.predictor.max_threads());
    let doc = crate::serve::openapi::for_daemon(cores, app.cfg.limits.max_batch);
    let mut r = doc.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    r
}
