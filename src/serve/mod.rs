//! `augur serve`: the daemon. An HTTP/JSON API on axum/tokio that answers how long a model will take
//! on this board right now, fed by the live sampler, with Prometheus metrics and systemd integration.
//!
//! Routes (described in `src/serve/openapi.yaml`, served at `/v1/openapi.yaml`):
//!
//! * `POST /v1/models` — import an ONNX model or nn-Meter IR graph; answers its id and size.
//! * `GET /v1/models/{id}` — what is known of an imported model.
//! * `POST /v1/predict` — latency and memory of one model, or a batch, now or under a what-if state.
//! * `POST /v1/plan` — here, split with another board, or there: ranked, with deadline odds.
//! * `POST /v1/observe` — an observed latency, journalled for the online learner.
//! * `GET /v1/state` — the live state of the board.
//! * `GET /metrics` — Prometheus text.
//! * `GET /live` — 200 while the process serves; `GET /ready` — 503 until the profile (or the
//!   roofline fallback) is loaded and the sensors run, and again while shutting down.
//!
//! Every route but `/live` and `/ready` requires a bearer token when one is configured, and one
//! must be to listen off loopback ([`auth`]).
//!
//! Modules: [`listen`] (connections: cap, header and idle timeouts), [`routes`] (one file per
//! resource), [`auth`], [`body`] (reading and checking requests), [`api`] (request and answer
//! shapes), [`store`] (model cache and state directory), [`journal`] (observations and learned
//! state), [`error`], [`metrics`], [`lifecycle`] (start-up, readiness, signals), [`notify`]
//! (systemd), [`openapi`].
pub mod api;
pub mod auth;
pub mod body;
pub mod error;
pub mod journal;
pub mod lifecycle;
pub mod listen;
pub mod metrics;
pub mod notify;
pub mod openapi;
pub mod routes;
pub mod store;

pub use error::{ApiError, ServeError};

use crate::config::Config;
use crate::kernels::FusionRules;
use crate::predict::Predictor;
use crate::sense::{Sampler, Snapshot};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, PoisonError, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;

/// What predictions are made with: the predictor and the fusion rules models are decomposed by.
#[derive(Debug)]
pub struct Engine {
    pub predictor: Predictor,
    pub rules: FusionRules,
    /// Threads a model runs with unless a request says otherwise (the profile's, else 1).
    pub threads: usize,
    /// Changes whenever the engine is replaced, so that cached base predictions are recomputed.
    pub generation: u64,
    /// Where the engine came from, for `/v1/state` and the logs.
    pub source: String,
}

/// Everything the handlers share.
pub struct App {
    pub cfg: Config,
    pub store: Arc<store::ModelStore>,
    pub journal: journal::Journal,
    pub notifier: Arc<notify::Notifier>,
    engine: RwLock<Option<Arc<Engine>>>,
    sampler: OnceLock<Sampler>,
    ready: AtomicBool,
    draining: AtomicBool,
    imports: tokio::sync::Semaphore,
    /// Bytes of model uploads being received, all connections together.
    uploads: Arc<tokio::sync::Semaphore>,
    observe_rate: routes::RateLimit,
    auth: Option<Arc<auth::Auth>>,
    hot: routes::Hot,
}

static EMPTY: LazyLock<Arc<Snapshot>> = LazyLock::new(|| Arc::new(Snapshot::default()));

impl App {
    /// The engine, once loaded.
    pub fn engine(&self) -> Option<Arc<Engine>> {
        self.engine
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_engine(&self, e: Engine) {
        *self.engine.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(e));
    }

    /// The newest live state (an empty one before the sampler runs).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.sampler.get() {
            Some(s) => s.snapshot_arc(),
            None => Arc::clone(&EMPTY),
        }
    }

    pub fn sampler(&self) -> Option<&Sampler> {
        self.sampler.get()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// What `/ready` is still waiting for.
    pub fn waiting_for(&self) -> Vec<&'static str> {
        let mut w = Vec::new();
        if self.draining.load(Ordering::Acquire) {
            w.push("nothing: shutting down");
            return w;
        }
        if self.engine().is_none() {
            w.push("the profile or the roofline probe");
        }
        if self.snapshot().seq == 0 {
            w.push("the first sample of the sensors");
        }
        w
    }
}

/// Runs the daemon on `listener` until `shutdown` resolves, then drains in-flight requests (for
/// at most the request time limit), flushes the learned state and returns.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    metrics::handle();
    let addr = listener.local_addr().map_err(ServeError::Http)?;
    let auth = auth::Auth::load(&cfg.auth, addr)?;
    let state_dir = cfg.state_dir.clone();
    store::create_private_dir(&state_dir).map_err(|source| ServeError::StateDir {
        path: state_dir.display().to_string(),
        source,
    })?;
    let store =
        store::ModelStore::open(&state_dir.join("models"), cfg.cache.model_bytes).map_err(|e| {
            ServeError::StateDir {
                path: state_dir.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
    let (checkpoint, max_bytes) = (
        Duration::from_secs_f64(cfg.observe.checkpoint_seconds),
        cfg.observe.journal_max_bytes,
    );
    let jdir = state_dir.clone();
    let (journal, recovery) =
        tokio::task::spawn_blocking(move || journal::Journal::open(&jdir, checkpoint, max_bytes))
            .await
            .map_err(|e| ServeError::Runtime(std::io::Error::other(e)))??;
    if recovery.replayed > 0 || recovery.cut_bytes > 0 {
        tracing::warn!(
            replayed = recovery.replayed,
            cut_bytes = recovery.cut_bytes,
            "recovered the observation journal after an unclean stop"
        );
    }
    let l = &cfg.limits;
    let timeout = Duration::from_millis(l.request_timeout_ms);
    let conn_limits = listen::ConnLimits {
        max_connections: l.max_connections,
        header_timeout: Duration::from_millis(l.header_timeout_ms),
    };
    let upload_budget = usize::try_from(l.upload_bytes_in_flight.max(l.model_body_bytes))
        .unwrap_or(usize::MAX)
        .min(tokio::sync::Semaphore::MAX_PERMITS);
    let app = Arc::new(App {
        imports: tokio::sync::Semaphore::new(l.concurrent_imports),
        uploads: Arc::new(tokio::sync::Semaphore::new(upload_budget)),
        observe_rate: routes::RateLimit::new(l.observations_per_second),
        auth,
        hot: routes::Hot::default(),
        cfg,
        store: Arc::new(store),
        journal,
        notifier: Arc::new(notify::Notifier::from_env()),
        engine: RwLock::new(None),
        sampler: OnceLock::new(),
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
    });

    let background = [
        tokio::spawn(lifecycle::start(Arc::clone(&app))),
        tokio::spawn(lifecycle::heartbeat(Arc::clone(&app.notifier))),
        tokio::spawn(metrics::upkeep()),
    ];
    let (fired_tx, fired) = tokio::sync::watch::channel(false);
    let drain_app = Arc::clone(&app);
    tokio::spawn(async move {
        shutdown.await;
        drain_app.draining.store(true, Ordering::Release);
        drain_app.notifier.stopping();
        let _ = fired_tx.send(true);
    });
    // The accept loop runs as a task of the runtime, on a worker thread: run on the thread that
    // blocks on this future (which is none of the runtime's workers), every connection it
    // spawned and every eviction it asked for woke a worker through the kernel, a few context
    // switches per connection that a burst of reopened connections turns into a queue in front
    // of a fresh client.
    let mut server = tokio::spawn(listen::serve(
        listener,
        routes::router(Arc::clone(&app), timeout),
        conn_limits,
        fired.clone(),
    ));
    let mut fired = fired;
    let drain_limit = async move {
        while !*fired.borrow() {
            if fired.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        tokio::time::sleep(timeout + Duration::from_secs(1)).await;
    };
    tokio::select! {
        r = &mut server => {
            if let Err(e) = r {
                tracing::error!("the accept loop ended abnormally: {e}");
            }
        }
        () = drain_limit => {
            tracing::warn!("connections still open after the drain limit; closing them");
            server.abort();
        }
    }
    for t in background {
        t.abort();
    }
    let closing = Arc::clone(&app);
    let _ = tokio::task::spawn_blocking(move || closing.journal.close()).await;
    Ok(())
}
