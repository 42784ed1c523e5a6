//! Configuration: `config/augur.toml`, overridden by `AUGUR_…` environment variables, then by flags.
//!
//! Every key can be overridden the same way: the key's path in upper case with `.` as `_`, behind
//! `AUGUR_` (`limits.request_timeout_ms` → `AUGUR_LIMITS_REQUEST_TIMEOUT_MS`), or by
//! `--set limits.request_timeout_ms=500` on the command line. Overrides are applied to the TOML
//! table before it is deserialised, so a typo or a wrong type fails with the key named, whatever
//! layer it came from.
//!
//! The file is `--config`/`AUGUR_CONFIG` if given (it must exist), else `config/augur.toml` under the
//! working directory, else `/etc/augur/augur.toml`, else the built-in defaults. Relative paths in
//! it are relative to the working directory.
//!
//! What augur learns about a board (the device profile, imported models, the observation journal,
//! the learner) lives in [`data_dir`] unless configured elsewhere, never under `target/`: a
//! `cargo clean` must not delete a calibration that took a quarter of an hour.
use crate::sense::SenseConfig;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The data directory of a system service, and the last resort when there is no home directory.
pub const SERVICE_DATA_DIR: &str = "/var/lib/augur";

/// Where augur keeps its data when no path is configured: `$XDG_DATA_HOME/augur`, else
/// `~/.local/share/augur`, else [`SERVICE_DATA_DIR`]. The systemd unit names `/var/lib/augur`
/// itself (its `StateDirectory`).
pub fn data_dir() -> PathBuf {
    data_dir_from(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"))
}

/// [`data_dir`] for given values of `XDG_DATA_HOME` and `HOME`. Written out rather than taken from
/// a crate such as `dirs`: it is the XDG rule and one fallback, and `dirs` would send macOS users to
/// `~/Library` while the fallback for a user-less service is augur's own.
fn data_dir_from(xdg_data_home: Option<OsString>, home: Option<OsString>) -> PathBuf {
    // The XDG base directory specification: a relative value is invalid and must be ignored.
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(xdg) = absolute(xdg_data_home) {
        return xdg.join("augur");
    }
    if let Some(home) = absolute(home) {
        return home.join(".local/share/augur");
    }
    PathBuf::from(SERVICE_DATA_DIR)
}

/// The device profile when none is configured: `profile.json` in [`data_dir`].
pub fn default_profile_path() -> PathBuf {
    data_dir().join("profile.json")
}

/// The offline learner of `augur observe` when none is named: `offline-learner.json` in
/// [`data_dir`] (the daemon's own learner is `learner.json` in its state directory).
pub fn default_learner_path() -> PathBuf {
    data_dir().join("offline-learner.json")
}

/// Where a configuration file is looked for when none is named, in order.
pub const SEARCH_PATH: [&str; 2] = ["config/augur.toml", "/etc/augur/augur.toml"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on; port 0 picks a free port (printed on start-up).
    pub listen: SocketAddr,
    /// Device profile written by `augur calibrate`; missing means "serve uncalibrated".
    pub profile: PathBuf,
    /// Where imported models, the observation journal and the learned state are kept.
    pub state_dir: PathBuf,
    /// Run a quick calibration in the background when there is no profile.
    pub calibrate_in_background: bool,
    pub cache: CacheConfig,
    pub limits: Limits,
    pub auth: AuthConfig,
    pub observe: ObserveConfig,
    pub sense: SenseConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Memory the decomposed models kept in memory may take, bytes (least recently used go first;
    /// they stay on disk in the state directory).
    pub model_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest model body `POST /v1/models` accepts, bytes.
    pub model_body_bytes: u64,
    /// Largest nn-Meter IR (JSON) model body, bytes: a JSON graph takes several times its size
    /// in memory while it is decoded, and real IR files are far smaller than ONNX ones (nn-Meter's
    /// MobileNetV3-Small is 240 KB).
    pub ir_body_bytes: u64,
    /// Largest JSON body of the other routes, bytes.
    pub json_body_bytes: u64,
    /// Largest graph, in nodes, that is decomposed.
    pub max_graph_nodes: usize,
    /// Time a request may take from its headers to its answer, milliseconds.
    pub request_timeout_ms: u64,
    /// Most predictions in one batch.
    pub max_batch: usize,
    /// Model imports run at once (each takes a core and the model's size in memory).
    pub concurrent_imports: usize,
    /// Bytes of model uploads being received at once, all connections together; an upload waits
    /// (within the request time limit) for room, so memory stays bounded whatever clients send.
    /// Never below `model_body_bytes`, so that one upload of the largest size always fits.
    pub upload_bytes_in_flight: u64,
    /// Time a connection may wait for a request's headers, milliseconds: from the connection's
    /// start or the end of its previous answer (so it bounds idle keep-alive connections too)
    /// until the last header line.
    pub header_timeout_ms: u64,
    /// Longest silence while a request body is being received, milliseconds.
    pub body_timeout_ms: u64,
    /// Connections served at once; past it the oldest connections are asked to close (an idle
    /// one closes at once, a busy one after its answer).
    pub max_connections: usize,
    /// Largest body `POST /v1/observe` accepts, bytes.
    pub observe_body_bytes: u64,
    /// Observations accepted per second, all clients together (a burst of one second's worth is
    /// allowed); more are answered 429.
    pub observations_per_second: f64,
}

/// Who may use the API. Off loopback a bearer token is required: without `token_file` augur
/// refuses to listen anywhere but on a loopback address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// File holding the bearer token (its first line, surrounding blanks trimmed). With one,
    /// every route but `/live` and `/ready` requires `Authorization: Bearer <token>`.
    pub token_file: Option<PathBuf>,
    /// Serve `/metrics` without the token (for a Prometheus that cannot send one).
    pub metrics_public: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObserveConfig {
    /// How often the learned state is checkpointed while observations come in, seconds.
    pub checkpoint_seconds: f64,
    /// Size past which the journal is rotated (after a checkpoint that covers it), bytes.
    pub journal_max_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9747)),
            profile: default_profile_path(),
            state_dir: data_dir(),
            calibrate_in_background: false,
            cache: CacheConfig::default(),
            limits: Limits::default(),
            auth: AuthConfig::default(),
            observe: ObserveConfig::default(),
            sense: SenseConfig::default(),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            model_bytes: 64 << 20,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // The largest zoo model (AlexNet) is 233 MiB of ONNX.
            model_body_bytes: 256 << 20,
            ir_body_bytes: 16 << 20,
            json_body_bytes: 1 << 20,
            max_graph_nodes: 20_000,
            request_timeout_ms: 30_000,
            max_batch: 1_000,
            concurrent_imports: 1,
            upload_bytes_in_flight: 512 << 20,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            max_connections: 512,
            observe_body_bytes: 256 << 10,
            observations_per_second: 2_000.0,
        }
    }
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            checkpoint_seconds: 10.0,
            journal_max_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Parse { path: String, detail: String },
    #[error("{origin}: `{key}` is not a configuration key")]
    UnknownKey { origin: String, key: String },
    #[error("{origin}: `{key}`: cannot read `{value}` as {kind}")]
    BadValue {
        origin: String,
        key: String,
        value: String,
        kind: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("`{0}` is not key=value")]
    NotKeyValue(String),
}

/// One override: a dotted key, its value as text, and where it came from (for messages).
#[derive(Debug, Clone)]
pub struct Override {
    pub key: String,
    pub value: String,
    pub origin: String,
}

impl Override {
    /// Parses `key=value` (the form of `--set`).
    pub fn parse(s: &str) -> Result<Override, ConfigError> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| ConfigError::NotKeyValue(s.into()))?;
        Ok(Override {
            key: k.trim().to_string(),
            value: v.trim().to_string(),
            origin: format!("--set {}", k.trim()),
        })
    }
}

/// The file chosen, if any: the named one, or the first of [`SEARCH_PATH`] that exists.
pub fn find_file(named: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = named {
        return Some(p.to_path_buf());
    }
    SEARCH_PATH.iter().map(PathBuf::from).find(|p| p.is_file())
}

impl Config {
    /// Loads the file (if any), then applies the environment, then `flags`, in that order.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[Override],
    ) -> Result<Config, ConfigError> {
        let (mut table, origin) = match file {
            Some(path) => {
                let p = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                let t: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.clone(),
                    detail: e.to_string(),
                })?;
                (t, p)
            }
            None => (toml::Table::new(), "built-in defaults".to_string()),
        };
        let mut overrides = env_overrides(env);
        overrides.extend(flags.iter().cloned());
        let keys = leaf_kinds();
        for o in &overrides {
            apply(&mut table, &keys, o)?;
        }
        let cfg: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: origin,
                detail: e.to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_string()));
        if l.request_timeout_ms == 0 {
            return bad("limits.request_timeout_ms must be above 0");
        }
        if l.json_body_bytes == 0 || l.model_body_bytes == 0 || l.ir_body_bytes == 0 {
            return bad("limits.*_body_bytes must be above 0");
        }
        if l.max_batch == 0 || l.concurrent_imports == 0 || l.max_graph_nodes == 0 {
            return bad(
                "limits.max_batch, limits.concurrent_imports and limits.max_graph_nodes must be above 0",
            );
        }
        if l.header_timeout_ms == 0 || l.body_timeout_ms == 0 {
            return bad("limits.header_timeout_ms and limits.body_timeout_ms must be above 0");
        }
        if l.max_connections == 0 || l.observe_body_bytes == 0 {
            return bad("limits.max_connections and limits.observe_body_bytes must be above 0");
        }
        if !(l.observations_per_second.is_finite() && l.observations_per_second > 0.0) {
            return bad("limits.observations_per_second must be a positive number");
        }
        if !(self.observe.checkpoint_seconds.is_finite() && self.observe.checkpoint_seconds > 0.0) {
            return bad("observe.checkpoint_seconds must be a positive number");
        }
        Ok(())
    }
}

/// `AUGUR_X_Y=v` for every configuration key `x.y`; other `AUGUR_` variables (`AUGUR_LOG`,
/// `AUGUR_CONFIG`) are not keys and are left alone.
fn env_overrides(env: impl IntoIterator<Item = (String, String)>) -> Vec<Override> {
    let keys = leaf_kinds();
    let mut out: Vec<Override> = env
        .into_iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix("AUGUR_")?;
            let key = keys
                .iter()
                .find(|(k, _)| k.replace('.', "_").eq_ignore_ascii_case(rest))?
                .0
                .clone();
            Some(Override {
                key,
                value,
                origin: name,
            })
        })
        .collect();
    // The environment has no order; sorting keeps the result independent of it.
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
    List,
}

/// Every settable key and its type, read off the defaults (so a new field is settable at once).
/// Optional fields without a default (`None`) are added by name.
fn leaf_kinds() -> Vec<(String, Kind)> {
    fn walk(prefix: &str, t: &toml::Table, out: &mut Vec<(String, Kind)>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let kind = match v {
                toml::Value::Table(sub) => {
                    walk(&key, sub, out);
                    continue;
                }
                toml::Value::Integer(_) => Kind::Int,
                toml::Value::Float(_) => Kind::Float,
                toml::Value::Boolean(_) => Kind::Bool,
                toml::Value::Array(_) => Kind::List,
                _ => Kind::Str,
            };
            out.push((key, kind));
        }
    }
    let mut out = Vec::new();
    if let Ok(t) = toml::Table::try_from(Config::default()) {
        walk("", &t, &mut out);
    }
    // Optional keys whose default is `None` do not show in the defaults' table.
    for (key, kind) in [
        ("auth.token_file", Kind::Str),
        ("sense.counter_trace", Kind::Str),
    ] {
        if !out.iter().any(|(k, _)| k == key) {
            out.push((key.to_string(), kind));
        }
    }
    out
}

fn apply(
    table: &mut toml::Table,
    keys: &[(String, Kind)],
    o: &Override,
) -> Result<(), ConfigError> {
    let Some(&(_, kind)) = keys.iter().find(|(k, _)| *k == o.key) else {
        return Err(ConfigError::UnknownKey {
            origin: o.origin.clone(),
            key: o.key.clone(),
        });
    };
    let bad = |kind: &'static str| ConfigError::BadValue {
        origin: o.origin.clone(),
        key: o.key.clone(),
        value: o.value.clone(),
        kind,
    };
    let v = o.value.trim();
    let value = match kind {
        Kind::Str => toml::Value::String(o.value.clone()),
        Kind::Int => toml::Value::Integer(
            v.replace('_', "")
                .parse::<i64>()
                .map_err(|_| bad("an integer"))?,
        ),
        Kind::Float => toml::Value::Float(v.parse::<f64>().map_err(|_| bad("a number"))?),
        Kind::Bool => toml::Value::Boolean(match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(bad("true or false")),
        }),
        Kind::List => toml::Value::Array(
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
    };
    let mut parts: Vec<&str> = o.key.split('.').collect();
    let leaf = parts.pop().unwrap_or_default();
    let mut t = table;
    for p in parts {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(sub) = entry else {
            return Err(bad("a table"));
        };
        t = sub;
    }
    t.insert(leaf.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn the_shipped_file_parses_and_layers_apply_in_order() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/augur.toml");
        let c = Config::load(Some(&file), env(&[]), &[]).unwrap();
        assert_eq!(c.listen.port(), 9747);
        let c = Config::load(
            Some(&file),
            env(&[
                ("AUGUR_LISTEN", "127.0.0.1:0"),
                ("AUGUR_SENSE_SAMPLE_HZ", "5"),
                ("AUGUR_LIMITS_MAX_BATCH", "7"),
                ("AUGUR_LOG", "debug"),
            ]),
            &[Override::parse("limits.max_batch=9").unwrap()],
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.sense.sample_hz, 5.0);
        assert_eq!(c.limits.max_batch, 9);
    }

    #[test]
    fn data_lives_in_the_xdg_data_home_then_home_then_var_lib() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            data_dir_from(os("/data"), os("/home/u")),
            PathBuf::from("/data/augur")
        );
        assert_eq!(
            data_dir_from(None, os("/home/u")),
            PathBuf::from("/home/u/.local/share/augur")
        );
        // Relative values are not XDG paths (the specification says to ignore them).
        assert_eq!(
            data_dir_from(os("rel"), os("/home/u")),
            PathBuf::from("/home/u/.local/share/augur")
        );
        assert_eq!(data_dir_from(None, None), PathBuf::from(SERVICE_DATA_DIR));
        assert_eq!(
            data_dir_from(os(""), os("")),
            PathBuf::from(SERVICE_DATA_DIR)
        );
    }

    #[test]
    fn the_default_paths_are_outside_the_build_directory() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/augur.toml");
        for c in [
            Config::default(),
            Config::load(Some(&file), env(&[]), &[]).unwrap(),
        ] {
            assert_eq!(c.profile, default_profile_path());
            assert_eq!(c.state_dir, data_dir());
        }
    }

    #[test]
    fn typos_and_bad_values_name_the_key() {
        let e = Config::load(
            None,
            env(&[]),
            &[Override::parse("limits.max_btach=3").unwrap()],
        )
        .unwrap_err();
        assert!(e.to_string().contains("limits.max_btach"), "{e}");
        let e = Config::load(None, env(&[("AUGUR_LIMITS_MAX_BATCH", "many")]), &[]).unwrap_err();
        assert!(e.to_string().contains("AUGUR_LIMITS_MAX_BATCH"), "{e}");
        let e = Config::load(None, env(&[("AUGUR_LISTEN", "nowhere")]), &[]).unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let c = Config::load(None, env(&[("AUGUR_SENSE_DISABLE", "perf, power")]), &[]).unwrap();
        assert_eq!(c.sense.disable, vec!["perf", "power"]);
        // An optional key without a default is settable by the environment and flags too.
        let c = Config::load(
            None,
            env(&[("AUGUR_AUTH_TOKEN_FILE", "/etc/augur/token")]),
            &[],
        )
        .unwrap();
        assert_eq!(
            c.auth.token_file.as_deref(),
            Some(Path::new("/etc/augur/token"))
        );
        let e = Config::load(None, env(&[("AUGUR_LIMITS_MAX_CONNECTIONS", "0")]), &[]).unwrap_err();
        assert!(e.to_string().contains("max_connections"), "{e}");
    }
}
