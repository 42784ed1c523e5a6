//! `GET /v1/state`: the live state of the board and the engine predictions are made with.
use super::{AppState, json};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

pub(super) async fn get(State(app): State<AppState>) -> Response {
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
