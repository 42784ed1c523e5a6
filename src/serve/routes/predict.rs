//! `POST /v1/predict`: latency and memory of one model, or of a batch, now or under a what-if
//! state, and the chance of meeting a deadline when one is given.
//!
//! Hot path: a prediction on a model in memory takes the newest snapshot (an `Arc`), the cached
//! decomposition and base prediction (an `Arc` out of the LRU), and scales the base by the live
//! slowdown; nothing is imported, decomposed or copied. The metrics it records go through handles
//! resolved once at start-up ([`Hot`]) rather than a registry look-up (a hash of the name and
//! labels) per request, and the content type is checked without allocating.
use super::{AppState, engine, json, lookup};
use crate::predict::Job;
use crate::sense::Snapshot;
use crate::serve::api::{
    BatchAnswer, BatchItem, PredictAnswer, PredictRequest, StateSource, StateSummary,
    valid_deadline_ms,
};
use crate::serve::body;
use crate::serve::error::ApiError;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use metrics::{Counter, Histogram};
use std::sync::{Arc, PoisonError};

/// The metric handles of the hot path, resolved once (after the recorder is installed).
pub struct Hot {
    calibrated: Counter,
    uncalibrated: Counter,
    latency: Histogram,
    cache_hit_requests: Counter,
}

impl Default for Hot {
    fn default() -> Self {
        Hot {
            calibrated: metrics::counter!("augur_predictions_total", "calibrated" => "true"),
            uncalibrated: metrics::counter!("augur_predictions_total", "calibrated" => "false"),
            latency: metrics::histogram!("augur_predicted_latency_seconds"),
            cache_hit_requests: metrics::counter!("augur_model_cache_requests_total", "result" => "hit"),
        }
    }
}

impl Hot {
    fn prediction(&self, ms: f64, calibrated: bool) {
        if calibrated {
            self.calibrated.increment(1);
        } else {
            self.uncalibrated.increment(1);
        }
        if ms.is_finite() {
            self.latency.record(ms / 1e3);
        }
    }

    pub(super) fn cache_hit(&self) {
        self.cache_hit_requests.increment(1);
    }
}

fn source(what_if: bool) -> StateSource {
    if what_if {
        StateSource::WhatIf
    } else {
        StateSource::Live
    }
}

/// A prediction no state should give: the state's figures were within their ranges, and yet the
/// product overflowed.
fn unusable(latency_ms: f64) -> Option<ApiError> {
    (!(latency_ms.is_finite() && latency_ms >= 0.0)).then(|| {
        ApiError::invalid("this state gives no finite prediction; check the what-if figures")
    })
}

/// Checks a deadline: a positive finite number of ms, else 422.
fn deadline(d: Option<f64>) -> Result<Option<f64>, ApiError> {
    match d {
        Some(v) if !valid_deadline_ms(v) => Err(ApiError::invalid(format!(
            "deadline_ms must be a positive number of ms, got {v}"
        ))),
        d => Ok(d),
    }
}

/// A thread count the profile's board has cores for (predictions beyond would extrapolate).
fn within_cores(engine: &super::Engine, threads: usize) -> Result<usize, ApiError> {
    engine
        .predictor
        .check_threads(threads)
        .map_err(|e| ApiError::invalid(e.to_string()))
}

pub(super) async fn post(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    body::require_json(req.headers())?;
    let bytes = body::read_body(req, app.cfg.limits.json_body_bytes).await?;
    let r: PredictRequest = body::parse_json(&bytes)?;
    let engine = engine(&app)?;
    let live = app.snapshot();
    if r.batch.is_some() {
        return batch(&app, &engine, &live, r).await;
    }
    let model = r
        .model
        .as_deref()
        .ok_or_else(|| ApiError::invalid("`model` (or `batch`) is required"))?;
    let cores = engine.predictor.slowdown.cores;
    let threads = within_cores(&engine, body::threads(r.threads, engine.threads)?)?;
    let deadline_ms = deadline(r.deadline_ms)?;
    let (state, changed) = body::what_if(&live, r.state.as_ref(), cores)?;
    let entry = lookup(&app, &engine, model).await?;
    let mut p = {
        let learner = app
            .journal
            .learner()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let job = Job {
            model: &entry.learn_key,
            d: &entry.decomposition,
            base: &entry.base,
            threads,
        };
        engine
            .predictor
            .predict_live(&job, &state, &learner, r.kernels)
    };
    // Asked with its kernels, the answer carries what a board splitting the model with this one
    // needs: each suffix priced as it would run here on its own (after the learner's lock is let
    // go: it is a pass per kernel).
    if r.kernels {
        crate::plan::suffixes(
            &engine.predictor,
            &entry.decomposition,
            &entry.base,
            &mut p,
            &state,
        );
    }
    if let Some(e) = unusable(p.latency_ms) {
        return Err(e);
    }
    app.hot.prediction(p.latency_ms, p.calibrated);
    let summary = StateSummary::of(&state, source(changed));
    Ok(json(
        StatusCode::OK,
        &PredictAnswer::new(&entry.id, threads, &summary, p).with_deadline(deadline_ms),
    ))
}

async fn batch(
    app: &AppState,
    engine: &Arc<super::Engine>,
    live: &Arc<Snapshot>,
    r: PredictRequest,
) -> Result<Response, ApiError> {
    let items = r.batch.unwrap_or_default();
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
        // 422, not 413: the body is within its byte limit; it is its content that is refused.
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "batch_too_large",
            format!("{} items, over limits.max_batch ({max})", items.len()),
        ));
    }
    // A bad deadline anywhere is the request's mistake, refused whole (as the schema's bounds say).
    deadline(r.deadline_ms)?;
    for item in &items {
        deadline(item.deadline_ms)?;
    }
    let cores = engine.predictor.slowdown.cores;
    // The batch's state is resolved once; an item's own `state` replaces it for that item.
    let (shared, changed) = body::what_if(live, r.state.as_ref(), cores)?;
    let mut summaries = vec![StateSummary::of(&shared, source(changed))];
    // Resolved first (look-ups may read the disk), predicted after under one read of the learner.
    let mut resolved = Vec::with_capacity(items.len());
    for item in &items {
        let one = async {
            let threads = within_cores(
                engine,
                body::threads(item.threads.or(r.threads), engine.threads)?,
            )?;
            let (state, ix) = match &item.state {
                None => (Arc::clone(&shared), 0),
                Some(s) => {
                    let (st, ch) = body::what_if(live, Some(s), cores)?;
                    summaries.push(StateSummary::of(&st, source(ch)));
                    (st, summaries.len() - 1)
                }
            };
            let entry = lookup(app, engine, &item.model).await?;
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
        .map(|(d, item)| {
            let answered = d.and_then(|(entry, state, threads, ix)| {
                let job = Job {
                    model: &entry.learn_key,
                    d: &entry.decomposition,
                    base: &entry.base,
                    threads,
                };
                let p = engine.predictor.predict_live(
                    &job,
                    &state,
                    &learner,
                    item.kernels.unwrap_or(r.kernels),
                );
                if let Some(e) = unusable(p.latency_ms) {
                    return Err(e);
                }
                app.hot.prediction(p.latency_ms, p.calibrated);
                Ok(PredictAnswer::new(&item.model, threads, &summaries[ix], p)
                    .with_deadline(item.deadline_ms.or(r.deadline_ms)))
            });
            match answered {
                Ok(a) => BatchItem::Ok(Box::new(a)),
                Err(e) => {
                    let mut v = e.to_json();
                    if let Some(o) = v.as_object_mut() {
                        o.insert("model".into(), item.model.clone().into());
                    }
                    BatchItem::Err(v)
                }
            }
        })
        .collect();
    drop(learner);
    Ok(json(StatusCode::OK, &BatchAnswer { results }))
}
