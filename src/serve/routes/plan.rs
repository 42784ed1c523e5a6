//! `POST /v1/plan`: where to run a model — here at the engine's thread count, split at a cut point
//! with a remote board, or on that board — ranked, with each option's chance of meeting a deadline;
//! for several models, the largest that meets the deadline; for several boards, where each model
//! runs fastest now.
//!
//! Remote boards are profile files the operator puts in `<state_dir>/boards/` and requests name by
//! file stem (`"boards": ["jetson"]` reads `boards/jetson.json`): a request never names a path.
//! Asking another augur daemon for its part is not supported here yet (501): a URL in a request
//! would let any client make this daemon fetch what it names, so it would need boards the operator
//! configures by URL, which do not exist yet. The command line does ask one (`augur plan --remote
//! http://…`, see `cli::remote`), and the 501's detail says so.
//!
//! What does not change between requests is cached here, beside the model store rather than in it
//! (the store keeps decompositions, a plan needs the graph too): a model's cut points and prefix
//! memory under the engine, and its decomposition and quiet-board prediction on each remote
//! board. Entries name the engine they were made with and are dropped when it is replaced; a
//! board's entry names its file's modification time and length, so an edited profile is read again.
use super::{App, Engine};
use super::{AppState, engine, json, lookup};
use crate::kernels::{Decomposition, decompose};
use crate::model::Graph;
use crate::plan::choose::{Candidate, Choice, Fastest, choose};
use crate::plan::{
    Ask, CutOptions, Link, Local, Plan, PlanError, PlanOption, Prepared, RankBy, Remote, Source,
};
use crate::predict::{BasePrediction, Predictor};
use crate::profile::{Profile, Roofline};
use crate::serve::body;
use crate::serve::error::ApiError;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use lru::LruCache;
use serde::{Deserialize, Serialize};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

/// The most models and boards one request may plan.
const MAX_MODELS: usize = 64;
const MAX_BOARDS: usize = 16;
/// Cached prepared models and remote-board entries.
const CACHED: usize = 256;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanRequest {
    model: Option<String>,
    models: Option<Vec<String>>,
    /// One remote board: its options carry no `board`.
    remote: Option<String>,
    /// Several remote boards: each option names its board.
    boards: Option<Vec<String>>,
    link_mbps: Option<f64>,
    rtt_ms: Option<f64>,
    deadline_ms: Option<f64>,
    by: Option<String>,
    threads: Option<usize>,
    max_crossing: Option<usize>,
}

#[derive(Serialize)]
struct ModelPlan {
    model: String,
    macs: u64,
    options: Vec<PlanOption>,
}

#[derive(Serialize)]
struct PlanAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<Vec<PlanOption>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    models: Option<Vec<ModelPlan>>,
    /// Present (possibly null) when several models and a deadline were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    choice: Option<Option<Choice>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fastest: Option<Vec<Fastest>>,
}

/// A model prepared for planning under one engine.
struct PreparedEntry {
    engine: Weak<Engine>,
    graph: Graph,
    prepared: Prepared,
}

/// A model on a remote board: its decomposition under that board's rules and its base there.
struct BoardEntry {
    engine: Weak<Engine>,
    stamp: (std::time::SystemTime, u64),
    board: Arc<BoardProfile>,
    d: Decomposition,
    base: BasePrediction,
}

/// A remote board's profile, with the predictor made from it.
struct BoardProfile {
    stamp: (std::time::SystemTime, u64),
    predictor: Predictor,
    fusion: crate::kernels::FusionRules,
    threads: usize,
}

type Cache<T> = LazyLock<Mutex<LruCache<String, Arc<T>>>>;

fn new_cache<T>() -> Mutex<LruCache<String, Arc<T>>> {
    Mutex::new(LruCache::new(NonZeroUsize::MIN.saturating_add(CACHED - 1)))
}

static PREPARED: Cache<PreparedEntry> = LazyLock::new(new_cache);
static BOARD_MODELS: Cache<BoardEntry> = LazyLock::new(new_cache);
static BOARDS: Cache<BoardProfile> = LazyLock::new(new_cache);

fn cached<T>(cache: &Cache<T>, key: &str) -> Option<Arc<T>> {
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(key)
        .cloned()
}

fn keep<T>(cache: &Cache<T>, key: String, v: Arc<T>) -> Arc<T> {
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .put(key, Arc::clone(&v));
    v
}

fn same(w: &Weak<Engine>, e: &Arc<Engine>) -> bool {
    w.upgrade().is_some_and(|x| Arc::ptr_eq(&x, e))
}

fn plan_error(e: PlanError) -> ApiError {
    match e {
        PlanError::Invalid(d) => ApiError::invalid(d),
        PlanError::NotYet(d) => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_yet",
            format!("not yet: {d}"),
        ),
        // The request is sound; what it needs is missing on this board (a profile made where
        // a power counter could be read), so the conflict is with the daemon's state.
        PlanError::Unavailable(d) => ApiError::new(StatusCode::CONFLICT, "unavailable", d),
    }
}

/// A board name: a file stem of `boards/`, never a path.
fn valid_board(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn board_path(app: &App, name: &str) -> PathBuf {
    app.cfg
        .state_dir
        .join("boards")
        .join(format!("{name}.json"))
}

/// A remote board's profile, read again when its file changed.
async fn board_profile(app: &AppState, name: &str) -> Result<Arc<BoardProfile>, ApiError> {
    if name.starts_with("http://") || name.starts_with("https://") {
        return Err(plan_error(PlanError::NotYet(
            "this daemon asking another augur daemon for its part (`augur plan --remote URL` asks \
             one from the command line); put its profile in the state directory's boards/ instead"
                .into(),
        )));
    }
    if !valid_board(name) {
        return Err(ApiError::invalid(format!(
            "board `{}`: a name of letters, digits, `_`, `-` and `.` (a profile in boards/)",
            name.chars().take(64).collect::<String>()
        )));
    }
    let path = board_path(app, name);
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_board",
            format!(
                "no board `{name}`: put its profile at boards/{name}.json in the state directory"
            ),
        )
    };
    let meta = tokio::fs::metadata(&path).await.map_err(|_| unknown())?;
    let stamp = (meta.modified().unwrap_or(std::time::UNIX_EPOCH), meta.len());
    if let Some(b) = cached(&BOARDS, name)
        && b.stamp == stamp
    {
        return Ok(b);
    }
    let load =
        tokio::task::spawn_blocking(move || Profile::load(&path, &crate::profile::tract_runtime()))
            .await
            .map_err(ApiError::internal)?;
    let (p, _) = load.map_err(|e| {
        tracing::warn!("board {name}: {e}");
        ApiError::invalid(format!(
            "board `{name}`: its profile cannot be used (the daemon's log says why)"
        ))
    })?;
    let b = BoardProfile {
        stamp,
        fusion: p.fusion.clone(),
        threads: p.threads.max(1),
        predictor: Predictor::new(Some(p), Roofline::default()),
    };
    Ok(keep(&BOARDS, name.to_string(), Arc::new(b)))
}

/// A model's graph, cut points and prefix memory under `engine`.
async fn prepared(
    app: &AppState,
    engine: &Arc<Engine>,
    id: &str,
    d: &Decomposition,
    opts: CutOptions,
) -> Result<Arc<PreparedEntry>, ApiError> {
    let key = format!("{id}/{}", opts.max_tensors);
    if let Some(p) = cached(&PREPARED, &key)
        && same(&p.engine, engine)
    {
        return Ok(p);
    }
    let (store, id_owned, d) = (Arc::clone(&app.store), id.to_string(), d.clone());
    let weak = Arc::downgrade(engine);
    let entry = tokio::task::spawn_blocking(move || {
        let g = store.read(&id_owned).ok().flatten()?;
        let prepared = Prepared::new(&g, &d, opts);
        Some(PreparedEntry {
            engine: weak,
            graph: g,
            prepared,
        })
    })
    .await
    .map_err(ApiError::internal)?
    .ok_or_else(|| ApiError::unknown_model(id))?;
    Ok(keep(&PREPARED, key, Arc::new(entry)))
}

/// The model on a remote board: decomposed by its rules, its base predicted by its profile.
async fn on_board(
    engine: &Arc<Engine>,
    id: &str,
    name: &str,
    board: &Arc<BoardProfile>,
    m: &Arc<PreparedEntry>,
) -> Result<Arc<BoardEntry>, ApiError> {
    let key = format!("{id}@{name}");
    if let Some(e) = cached(&BOARD_MODELS, &key)
        && same(&e.engine, engine)
        && e.stamp == board.stamp
    {
        return Ok(e);
    }
    let (b, m2, weak) = (Arc::clone(board), Arc::clone(m), Arc::downgrade(engine));
    let entry = tokio::task::spawn_blocking(move || {
        let d = decompose(&m2.graph, &b.fusion)?;
        let base = b.predictor.base(&d);
        Ok::<_, crate::kernels::DecomposeError>(BoardEntry {
            engine: weak,
            stamp: b.stamp,
            board: b,
            d,
            base,
        })
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::invalid(format!("board `{name}` cannot decompose this model: {e}")))?;
    Ok(keep(&BOARD_MODELS, key, Arc::new(entry)))
}

/// A request checked against the daemon: what `post` plans.
struct Checked {
    models: Vec<String>,
    /// `models` was given (the answer lists each model's plan).
    several: bool,
    boards: Vec<String>,
    /// `boards` was given (each option names its board).
    named: bool,
    ask: Ask,
    max_tensors: usize,
    threads: [usize; 1],
}

impl PlanRequest {
    /// Checks the request's combinations and numbers against the daemon's engine.
    fn check(self, engine: &Engine) -> Result<Checked, ApiError> {
        let (models, several) = match (self.model, self.models) {
            (Some(m), None) => (vec![m], false),
            (None, Some(ms)) if !ms.is_empty() && ms.len() <= MAX_MODELS => (ms, true),
            (None, Some(_)) => {
                return Err(ApiError::invalid(format!(
                    "`models` needs 1 to {MAX_MODELS} model ids"
                )));
            }
            _ => return Err(ApiError::invalid("give `model` or `models`, one of them")),
        };
        let (boards, named) = match (self.remote, self.boards) {
            (Some(b), None) => (vec![b], false),
            (None, Some(bs)) if bs.len() <= MAX_BOARDS => (bs, true),
            (None, Some(_)) => {
                return Err(ApiError::invalid(format!(
                    "`boards` takes at most {MAX_BOARDS} boards"
                )));
            }
            (None, None) => (Vec::new(), false),
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("give `remote` or `boards`, not both"));
            }
        };
        let by = self
            .by
            .as_deref()
            .unwrap_or("latency")
            .parse::<RankBy>()
            .and_then(|by| crate::plan::check_by(by, &engine.predictor))
            .map_err(plan_error)?;
        let link = match (self.link_mbps, boards.is_empty()) {
            (Some(b), _) => Some(Link::new(b, self.rtt_ms.unwrap_or(0.0)).map_err(plan_error)?),
            (None, false) => {
                return Err(ApiError::invalid(
                    "a remote board needs `link_mbps` (and `rtt_ms`, 0 if left out)",
                ));
            }
            (None, true) => None,
        };
        if let Some(d) = self.deadline_ms {
            crate::plan::check_deadline(d).map_err(plan_error)?;
        }
        let max_tensors = self.max_crossing.unwrap_or(1);
        if !(1..=crate::plan::cuts::MAX_CROSSING).contains(&max_tensors) {
            return Err(ApiError::invalid(format!(
                "`max_crossing` is 1 or {}",
                crate::plan::cuts::MAX_CROSSING
            )));
        }
        Ok(Checked {
            models,
            several,
            boards,
            named,
            ask: Ask {
                link,
                deadline_ms: self.deadline_ms,
                by,
            },
            max_tensors,
            threads: [body::threads(self.threads, engine.threads)?],
        })
    }
}

pub(super) async fn post(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    body::require_json(req.headers())?;
    let bytes = body::read_body(req, app.cfg.limits.json_body_bytes).await?;
    let r: PlanRequest = body::parse_json(&bytes)?;
    let engine = engine(&app)?;
    let c = r.check(&engine)?;
    let mut profiles = Vec::with_capacity(c.boards.len());
    for b in &c.boards {
        profiles.push(board_profile(&app, b).await?);
    }
    let state = app.snapshot();
    let mut plans: Vec<(String, u64, Plan)> = Vec::with_capacity(c.models.len());
    for id in &c.models {
        let entry = lookup(&app, &engine, id).await?;
        let opts = CutOptions {
            max_tensors: c.max_tensors,
        };
        let m = prepared(&app, &engine, &entry.id, &entry.decomposition, opts).await?;
        let mut there = Vec::with_capacity(c.boards.len());
        for (name, b) in c.boards.iter().zip(&profiles) {
            there.push(on_board(&engine, &entry.id, name, b, &m).await?);
        }
        let local = Local {
            predictor: &engine.predictor,
            d: &entry.decomposition,
            base: &entry.base,
            state: &state,
            threads: &c.threads,
        };
        let remotes: Vec<Remote> = there
            .iter()
            .zip(&c.boards)
            .map(|(e, name)| Remote {
                name: c.named.then_some(name.as_str()),
                source: Source::Profile {
                    predictor: &e.board.predictor,
                    d: &e.d,
                    base: &e.base,
                },
                threads: e.board.threads,
            })
            .collect();
        let plan = crate::plan::plan(&m.prepared, &local, &remotes, &c.ask).map_err(plan_error)?;
        if plan.options.iter().any(|o| !o.latency_ms.is_finite()) {
            return Err(ApiError::invalid("this model gives no finite prediction"));
        }
        plans.push((entry.id.clone(), entry.decomposition.macs, plan));
    }
    let answer = answer(plans, &c);
    Ok(json(StatusCode::OK, &answer))
}

/// The answer: one model's options, or each model's with the choice among them (given a deadline);
/// where each model runs fastest when boards were named.
fn answer(plans: Vec<(String, u64, Plan)>, c: &Checked) -> PlanAnswer {
    let picked = (c.several || c.named).then(|| {
        let cands: Vec<Candidate> = plans
            .iter()
            .map(|(id, macs, plan)| Candidate {
                model: id,
                macs: *macs,
                plan,
            })
            .collect();
        choose(&cands)
    });
    if c.several {
        let picked = picked.unwrap_or_else(|| choose(&[]));
        PlanAnswer {
            options: None,
            choice: c.ask.deadline_ms.map(|_| picked.choice),
            fastest: c.named.then_some(picked.fastest),
            models: Some(
                plans
                    .into_iter()
                    .map(|(model, macs, p)| ModelPlan {
                        model,
                        macs,
                        options: p.options,
                    })
                    .collect(),
            ),
        }
    } else {
        PlanAnswer {
            fastest: picked.map(|p| p.fastest),
            options: plans.into_iter().next().map(|(_, _, p)| p.options),
            models: None,
            choice: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_names_are_file_stems_never_paths() {
        for ok in ["jetson", "rpi4-b", "x86_64.server"] {
            assert!(valid_board(ok), "{ok}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            ".hidden",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(!valid_board(bad), "{bad}");
        }
    }

    #[test]
    fn plan_errors_have_their_statuses() {
        assert_eq!(
            plan_error(PlanError::Invalid("x".into())).status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let e = plan_error(PlanError::NotYet("x".into()));
        assert_eq!(e.status, StatusCode::NOT_IMPLEMENTED);
        assert!(e.detail.starts_with("not yet"));
    }
}
