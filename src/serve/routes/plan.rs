//! `POST /v1/plan`: where to run a model — here at the engine's thread count, split at a cut point
//! with a remote board, or on that board — ranked, with each option's chance of meeting a deadline;
//! for several models, the largest that meets the deadline; for several boards, where each model
//! runs fastest now.
//!
//! Remote boards are what the operator puts in `<state_dir>/boards/`, and requests name them by
//! file stem: a profile (`"boards": ["jetson"]` reads `boards/jetson.json`), or another augur
//! daemon by its address (`boards/jetson.url`: the daemon's `http://host:port` on the first line,
//! optionally `token_file = PATH` on another), which is asked for its live per-kernel prediction
//! ([`crate::plan::remote`]) with the model exported from its stored graph. A request never names
//! a path or an address: a daemon that fetched any URL a client gave would be a proxy for it.
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

/// A named board: its profile, or another augur daemon to ask.
enum Board {
    Profile(Arc<BoardProfile>),
    Daemon {
        url: String,
        token_file: Option<PathBuf>,
    },
}

/// A remote board's part of one model's plan.
enum There {
    Profile(Arc<BoardEntry>),
    Daemon(crate::plan::remote::Part),
}

/// The daemon a `boards/NAME.url` file names: its address on the first line that is not blank or a
/// `#` comment, and optionally `token_file = PATH` on a later one.
fn daemon_board(text: &str) -> Result<Board, String> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let url = lines
        .next()
        .ok_or("it is empty; give the daemon's http://host:port on its first line")?;
    let mut token_file = None;
    for l in lines {
        match l.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("token_file", v)) if !v.is_empty() => token_file = Some(PathBuf::from(v)),
            _ => {
                return Err(format!(
                    "`{}`: after the address, only `token_file = PATH` is understood",
                    l.chars().take(64).collect::<String>()
                ));
            }
        }
    }
    // Checked here so that a bad file is told when it is named, not after an upload.
    crate::plan::remote::Daemon::new(url, None).map_err(|e| e.to_string())?;
    Ok(Board::Daemon {
        url: url.to_string(),
        token_file,
    })
}

/// A remote board: its profile (read again when its file changed), or the daemon its `.url` names.
async fn board(app: &AppState, name: &str) -> Result<Board, ApiError> {
    if name.starts_with("http://") || name.starts_with("https://") {
        return Err(ApiError::invalid(
            "a request names a board, never an address: put the daemon's address in the state \
             directory's boards/NAME.url and name NAME",
        ));
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
                "no board `{name}`: put its profile at boards/{name}.json, or its daemon's address \
                 in boards/{name}.url, in the state directory"
            ),
        )
    };
    let Ok(meta) = tokio::fs::metadata(&path).await else {
        let url_file = path.with_extension("url");
        let text = tokio::fs::read_to_string(&url_file)
            .await
            .map_err(|_| unknown())?;
        return daemon_board(&text)
            .map_err(|why| ApiError::invalid(format!("board `{name}`: boards/{name}.url: {why}")));
    };
    let stamp = (meta.modified().unwrap_or(std::time::UNIX_EPOCH), meta.len());
    if let Some(b) = cached(&BOARDS, name)
        && b.stamp == stamp
    {
        return Ok(Board::Profile(b));
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
    Ok(Board::Profile(keep(&BOARDS, name.to_string(), Arc::new(b))))
}

/// Another augur daemon's live prediction of the model, asked with the model exported from its
/// stored graph (the daemon keeps graphs, not the bytes they were posted as). Its node indices are
/// this graph's: the export writes the nodes in the graph's order and an import keeps file order,
/// and [`crate::plan::remote::Daemon::predict`] refuses an import whose MACs differ.
async fn ask_daemon(
    name: &str,
    url: &str,
    token_file: Option<&std::path::Path>,
    m: &Arc<PreparedEntry>,
    macs: u64,
) -> Result<crate::plan::remote::Part, ApiError> {
    let (m, url, token_file) = (
        Arc::clone(m),
        url.to_string(),
        token_file.map(std::path::Path::to_path_buf),
    );
    let asked = tokio::task::spawn_blocking(move || {
        let bytes = crate::model::export::to_onnx_bytes(&m.graph).map_err(|e| e.to_string())?;
        let daemon = crate::plan::remote::Daemon::new(&url, token_file.as_deref())
            .map_err(|e| e.to_string())?;
        daemon
            .predict(&bytes, None, macs, None)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(ApiError::internal)?;
    asked.map_err(|why| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "remote_board",
            format!("board `{name}`: {why}"),
        )
    })
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
    let mut boards = Vec::with_capacity(c.boards.len());
    for b in &c.boards {
        boards.push(board(&app, b).await?);
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
        for (name, b) in c.boards.iter().zip(&boards) {
            there.push(match b {
                Board::Profile(p) => {
                    There::Profile(on_board(&engine, &entry.id, name, p, &m).await?)
                }
                Board::Daemon { url, token_file } => There::Daemon(
                    ask_daemon(
                        name,
                        url,
                        token_file.as_deref(),
                        &m,
                        entry.decomposition.macs,
                    )
                    .await?,
                ),
            });
        }
        // The learner's correction of this model, as `/v1/predict` answers it.
        let learner = app
            .journal
            .learner()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let local = Local {
            predictor: &engine.predictor,
            d: &entry.decomposition,
            base: &entry.base,
            state: &state,
            threads: &c.threads,
            learned: Some((&learner, &entry.learn_key)),
        };
        let remotes: Vec<Remote> = there
            .iter()
            .zip(&c.boards)
            .map(|(t, name)| match t {
                There::Profile(e) => Remote {
                    name: c.named.then_some(name.as_str()),
                    source: Source::Profile {
                        predictor: &e.board.predictor,
                        d: &e.d,
                        base: &e.base,
                    },
                    threads: e.board.threads,
                },
                There::Daemon(part) => Remote {
                    name: c.named.then_some(name.as_str()),
                    source: Source::Answered(&part.answered),
                    threads: part.threads,
                },
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
        assert_eq!(
            plan_error(PlanError::Unavailable("x".into())).status,
            StatusCode::CONFLICT
        );
    }
}
