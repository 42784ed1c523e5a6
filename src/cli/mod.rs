//! The `augur` command line: one module per subcommand, each with its clap `Args` and a `run`.
pub mod bench;
pub mod calibrate;
pub mod eval;
pub mod inspect;
pub mod load;
pub mod observe;
pub mod plan;
pub mod predict;
pub mod prior;
pub mod scenarios;
pub mod serve;
pub mod state;

pub use crate::model::parse_shape;

/// A tensor shape on the command line. An alias, not `Vec<usize>` spelled out: clap's derive reads
/// `Option<Vec<T>>` as a list of `T` values and panics handing `parse_shape`'s `Vec` to that type.
pub type Shape = Vec<usize>;

/// The profile path of the configuration (config/augur.toml or its search path, then `AUGUR_…`);
/// without one, `profile.json` in the data directory ([`crate::config::data_dir`]).
pub fn default_profile_path() -> anyhow::Result<std::path::PathBuf> {
    let file = crate::config::find_file(None);
    let cfg = crate::config::Config::load(
        file.as_deref(),
        // Variables that are not UTF-8 cannot be augur's; skip them rather than panic.
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        &[],
    )?;
    Ok(cfg.profile)
}

/// Where a command takes the board's live state from.
#[derive(clap::Args, Debug, Default)]
pub struct StateFrom {
    /// Take the live state from this board's running augur daemon, http://host:port, instead of
    /// reading it here: an answer in milliseconds where the command's own reading takes about
    /// 5 s. The daemon's speed readings come at its probe budget (about one a minute at 5 %), the
    /// command's own four back to back just before it predicts; on a host whose speed moves within
    /// seconds the latter follows it better (docs/plan.md).
    #[arg(long, conflicts_with = "static")]
    pub state_from: Option<String>,
    /// File holding the bearer token of the --state-from daemon, where it wants one.
    #[arg(long, requires = "state_from")]
    pub state_token_file: Option<std::path::PathBuf>,
}

impl StateFrom {
    /// The state a prediction is made under: a quiet board (`quiet`), the named daemon's live
    /// state, or a one-off reading here ([`crate::sense::read_once`]).
    pub fn snapshot(&self, quiet: bool) -> anyhow::Result<crate::sense::Snapshot> {
        if quiet {
            return Ok(crate::sense::Snapshot::default());
        }
        match &self.state_from {
            Some(url) => crate::plan::remote::Daemon::new(url, self.state_token_file.as_deref())
                .and_then(|d| d.state())
                .map_err(|e| anyhow::anyhow!("--state-from: {e}")),
            None => Ok(crate::sense::read_once(
                &crate::sense::SenseConfig::default(),
            )),
        }
    }
}
