//! The daemon's Prometheus metrics: the recorder (installed once per process), the HTTP middleware
//! that counts and times every request, and the scrape itself. Sensor metrics come from
//! [`crate::sense::metrics::record`], called at scrape time with the newest snapshot.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `augur_http_requests_total` | counter | `route`, `status` |
//! | `augur_http_request_duration_seconds` | histogram | `route` |
//! | `augur_predictions_total` | counter | `calibrated` |
//! | `augur_predicted_latency_seconds` | histogram | |
//! | `augur_observations_total` | counter | `result` (`accepted`, `rejected`, `failed`) |
//! | `augur_observed_latency_seconds` | histogram | |
//! | `augur_observation_error_ratio` | histogram: (predicted − observed) / observed | |
//! | `augur_observation_abs_error_ratio` | histogram: \|predicted − observed\| / observed | |
//! | `augur_model_cache_requests_total` | counter | `result` (`hit`, `disk`, `miss`) |
//! | `augur_model_cache_entries`, `augur_model_cache_bytes`, `augur_models_stored` | gauge | |
//! | `augur_model_imports_total` | counter | `result` (`ok`, `rejected`) |
//! | `augur_model_import_duration_seconds` | histogram | |
//! | `augur_journal_sync_seconds` | histogram | |
//! | `augur_journal_bytes` | gauge | |
//! | `augur_learner_observations_total`, `augur_learner_rejected_total` | counter | |
//! | `augur_learner_models`, `augur_learner_last_seq` | gauge | |
//! | `augur_learner_weight` | gauge: coefficient of the shared correction | `term` (`bias`, `cpu`, `memory`, `frequency`) |
//! | `augur_learner_checkpoint_timestamp_seconds` | gauge | |
//! | `augur_ready`, `augur_calibrated` | gauge (0/1) | |
//! | `augur_build_info` | gauge (1) | `version` |
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::error::ApiError;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Request and prediction times: from 50 µs (a cached prediction) to 30 s (a large import).
const SECONDS: [f64; 16] = [
    5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];
/// Signed relative error of predictions.
const ERROR_RATIO: [f64; 13] = [
    -0.9, -0.5, -0.3, -0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0,
];
const ABS_ERROR_RATIO: [f64; 10] = [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0];

/// Installs the recorder on first use; `None` if another recorder was installed first (metrics are
/// then not exported, but nothing else changes).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("augur_observation_error_ratio".into()),
                        &ERROR_RATIO,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("augur_observation_abs_error_ratio".into()),
                        &ABS_ERROR_RATIO,
                    )
                });
            match builder.map(PrometheusBuilder::install_recorder) {
                Ok(Ok(h)) => {
                    describe();
                    metrics::gauge!("augur_build_info", "version" => env!("CARGO_PKG_VERSION"))
                        .set(1.0);
                    Some(h)
                }
                Ok(Err(e)) | Err(e) => {
                    tracing::warn!("metrics are not exported: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// HELP for every family the daemon exports (promtool and Grafana show it); the sensor families
/// are described beside the code that records them.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "augur_http_requests_total",
        "HTTP requests answered, by route template and status."
    );
    describe_histogram!(
        "augur_http_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's headers to its answer, by route template."
    );
    describe_counter!(
        "augur_predictions_total",
        "Predictions made, by whether a device profile was loaded."
    );
    describe_histogram!(
        "augur_predicted_latency_seconds",
        Unit::Seconds,
        "Predicted latencies."
    );
    describe_counter!(
        "augur_observations_total",
        "Observed latencies received, by outcome: accepted, rejected (a client error), failed."
    );
    describe_histogram!(
        "augur_observed_latency_seconds",
        Unit::Seconds,
        "Observed latencies accepted."
    );
    describe_histogram!(
        "augur_observation_error_ratio",
        "(predicted - observed) / observed, at the time of the observation."
    );
    describe_histogram!(
        "augur_observation_abs_error_ratio",
        "|predicted - observed| / observed, at the time of the observation."
    );
    describe_counter!(
        "augur_model_cache_requests_total",
        "Model look-ups: hit (memory), disk (reloaded from the state directory), miss."
    );
    describe_gauge!(
        "augur_model_cache_entries",
        "Decomposed models kept in memory."
    );
    describe_gauge!(
        "augur_model_cache_bytes",
        Unit::Bytes,
        "Estimated memory of the models kept in memory."
    );
    describe_gauge!("augur_models_stored", "Models kept in the state directory.");
    describe_counter!(
        "augur_model_imports_total",
        "Model imports, by result: ok, rejected."
    );
    describe_histogram!(
        "augur_model_import_duration_seconds",
        Unit::Seconds,
        "Time to import and decompose a posted model."
    );
    describe_histogram!(
        "augur_journal_sync_seconds",
        Unit::Seconds,
        "Time to append and fsync one group of observations."
    );
    describe_gauge!(
        "augur_journal_bytes",
        Unit::Bytes,
        "Size of the observation journal since its last rotation."
    );
    describe_counter!(
        "augur_learner_observations_total",
        "Observations the learner has learned from, journal replay included."
    );
    describe_counter!(
        "augur_learner_rejected_total",
        "Observations the learner refused (outliers), though journalled."
    );
    describe_gauge!(
        "augur_learner_models",
        "Models with a learned per-model residual."
    );
    describe_gauge!(
        "augur_learner_last_seq",
        "Sequence number of the newest journalled observation."
    );
    describe_gauge!(
        "augur_learner_weight",
        "Coefficients of the learner's shared correction, ln(observed/predicted) = w . phi."
    );
    describe_gauge!(
        "augur_learner_checkpoint_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last checkpoint of the learned state."
    );
    describe_gauge!(
        "augur_ready",
        "1 once the profile (or fallback) is loaded and the sensors run."
    );
    describe_gauge!(
        "augur_calibrated",
        "1 when predictions come from a device profile, 0 on the roofline fallback."
    );
    describe_gauge!(
        "augur_build_info",
        "Always 1; the version of the running augur is in the label."
    );
    crate::sense::metrics::describe();
}

/// Runs histogram upkeep, so that samples recorded between scrapes do not pile up unbounded.
pub async fn upkeep() {
    let Some(h) = handle() else { return };
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        h.run_upkeep();
    }
}

/// Counts and times every request by route template, with a time limit and a panic guard around
/// the handler: a handler runs as its own task, so a panic becomes a 500 and never a dropped
/// connection, and a request over the limit is cut off with a 503.
pub async fn track(timeout: Duration, req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let mut task = tokio::spawn(next.run(req));
    let response = match tokio::time::timeout(timeout, &mut task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!(route = %route, "handler failed: {e}");
            ApiError::internal("the request failed inside augur; this is a bug").into_response()
        }
        Err(_) => {
            task.abort();
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request took longer than limits.request_timeout_ms ({} ms)",
                    timeout.as_millis()
                ),
            )
            .into_response()
        }
    };
    let status = response.status().as_u16().to_string();
    metrics::counter!("augur_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("augur_http_request_duration_seconds", "route" => route)
        .record(t0.elapsed().as_secs_f64());
    response
}
