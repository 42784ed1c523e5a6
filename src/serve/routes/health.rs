//! `GET /live` and `GET /ready`: the probes a supervisor polls (open without a token).
use super::{AppState, json};
use crate::serve::error::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub(super) async fn live() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "live"}))
}

pub(super) async fn ready(State(app): State<AppState>) -> Response {
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
