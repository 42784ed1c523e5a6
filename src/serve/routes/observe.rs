//! `POST /v1/observe`: an observed latency, journalled (on disk before it is acknowledged) and
//! learned from. Bounded in body size (`limits.observe_body_bytes`) and in rate
//! (`limits.observations_per_second`, 429 past it), so that no client can fill the disk with
//! journal or the learner's time with observations.
use super::{AppState, engine, json, lookup};
use crate::predict::Job;
use crate::serve::api::ObserveRequest;
use crate::serve::body;
use crate::serve::error::ApiError;
use crate::serve::journal::Observation;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// A token bucket: `rate` per second, bursts up to one second's worth. (Written here: tower's
/// rate limit makes requests wait rather than refusing them, and holds no state shared between
/// the router's clones.)
pub struct RateLimit {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn new(per_second: f64) -> RateLimit {
        let rate = per_second.max(f64::MIN_POSITIVE);
        RateLimit {
            rate,
            state: Mutex::new((rate.max(1.0), Instant::now())),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let burst = self.rate.max(1.0);
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

pub(super) async fn post(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let r = observe(&app, req).await;
    let result = match &r {
        Ok(_) => "accepted",
        Err(e) if e.status.is_client_error() => "rejected",
        Err(_) => "failed",
    };
    ::metrics::counter!("augur_observations_total", "result" => result).increment(1);
    r
}

fn bad(d: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_observation", d)
}

fn latency_range() -> String {
    format!(
        "a finite number of milliseconds within {}..{}",
        body::MIN_LATENCY_MS,
        body::MAX_LATENCY_MS
    )
}

/// Checks an observation's kernels against the model it is of.
fn validate_kernels(
    r: &ObserveRequest,
    kernels: &[crate::kernels::Kernel],
) -> Result<(), ApiError> {
    let Some(ks) = &r.kernels else {
        return Ok(());
    };
    if ks.len() > kernels.len() {
        return Err(bad(format!(
            "{} kernel observations, but the model has {} kernels",
            ks.len(),
            kernels.len()
        )));
    }
    for k in ks {
        if !body::valid_latency_ms(k.latency_ms) {
            return Err(bad(format!(
                "kernel `{}`: latency_ms must be {}, got {}",
                k.name.chars().take(80).collect::<String>(),
                latency_range(),
                k.latency_ms
            )));
        }
        if !kernels.iter().any(|d| d.name == k.name) {
            return Err(bad(format!(
                "kernel `{}` is not a kernel of this model (POST /v1/predict with \"kernels\": true lists them)",
                k.name.chars().take(80).collect::<String>()
            )));
        }
    }
    Ok(())
}

async fn observe(app: &AppState, req: Request) -> Result<Response, ApiError> {
    body::require_json(req.headers())?;
    let bytes = body::read_body(req, super::observe_limit(app)).await?;
    let r: ObserveRequest = body::parse_json(&bytes)?;
    drop(bytes);
    // Checked before the model is looked up: a bad number is 422 whatever the model.
    if !body::valid_latency_ms(r.latency_ms) {
        return Err(bad(format!(
            "latency_ms must be {}, got {}",
            latency_range(),
            r.latency_ms
        )));
    }
    let engine = engine(app)?;
    let threads = body::threads(r.threads, engine.threads)?;
    let entry = lookup(app, &engine, &r.model).await?;
    validate_kernels(&r, &entry.decomposition.kernels)?;
    if !app.observe_rate.try_take() {
        return Err(ApiError::rate_limited(format!(
            "over limits.observations_per_second ({}); retry shortly",
            app.cfg.limits.observations_per_second
        )));
    }
    let live = app.snapshot();
    let job = Job {
        model: &entry.learn_key,
        d: &entry.decomposition,
        base: &entry.base,
        threads,
    };
    // Predicted under the same read lock the answer's correction comes from; non-finite figures are
    // journalled as 0 (JSON has no NaN), which the learner refuses now and on replay alike.
    let pending = {
        let learner = app
            .journal
            .learner()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        engine.predictor.pending(&job, &live, &learner)
    };
    let served = pending.served_ms;
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let observed = r.latency_ms;
    let (seq, learned) = app
        .journal
        .append(Observation {
            model: entry.id.clone(),
            learn_as: Some(entry.learn_key.clone()),
            latency_ms: observed,
            predicted_ms: pending.predicted_ms,
            served_ms: pending.served_ms,
            phi: pending.features.phi,
            kinds: pending.features.kinds,
            threads,
            kernels: r.kernels,
        })
        .await
        .map_err(|e| {
            tracing::error!("observation not journalled: {e}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "journal_unavailable",
                "the observation journal cannot be written; the daemon's log has the details",
            )
        })?;
    let error = (served - observed) / observed;
    ::metrics::histogram!("augur_observed_latency_seconds").record(observed / 1e3);
    // A histogram's sum is kept for the life of the process: one infinite sample would poison it.
    if error.is_finite() {
        ::metrics::histogram!("augur_observation_error_ratio").record(error);
        ::metrics::histogram!("augur_observation_abs_error_ratio").record(error.abs());
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "accepted": true,
            "seq": seq,
            "model": entry.id,
            "predicted_ms": finite(served),
            "error_ratio": finite(error),
            "learned": learned.is_ok(),
            "reason": learned.err().map(|e| e.to_string()),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_refuses_past_a_burst_and_refills() {
        let r = RateLimit::new(10.0);
        let taken = (0..50).filter(|_| r.try_take()).count();
        assert_eq!(taken, 10, "a burst of one second's worth");
        std::thread::sleep(std::time::Duration::from_millis(250));
        let more = (0..50).filter(|_| r.try_take()).count();
        assert!((1..=4).contains(&more), "{more} after 250 ms at 10/s");
    }
}
