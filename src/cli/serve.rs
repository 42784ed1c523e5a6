//! `augur serve`: loads the configuration (file, then `AUGUR_…` environment, then these flags),
//! binds the listener, prints its address, and runs the daemon until SIGTERM or SIGINT.
use crate::config::{Config, Override, find_file};
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Configuration file [default: config/augur.toml, else /etc/augur/augur.toml, if present].
    #[arg(long, env = "AUGUR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:9747 (port 0: any free port).
    #[arg(long)]
    pub listen: Option<String>,
    /// Device profile (written by `augur calibrate`).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Directory for imported models, the observation journal and the learned state.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Samples per second of the fast sensors.
    #[arg(long)]
    pub sample_hz: Option<f64>,
    /// Share of one core the sampler and its probes may use.
    #[arg(long)]
    pub probe_budget: Option<f64>,
    /// Memory for decomposed models kept in memory, bytes.
    #[arg(long)]
    pub cache_bytes: Option<u64>,
    /// File holding the bearer token clients must send (required to listen off loopback).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Any configuration key, e.g. --set limits.request_timeout_ms=500 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = Override::parse)]
    pub set: Vec<Override>,
    /// Print the configuration in effect (as TOML) and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Args {
    fn overrides(&self) -> Vec<Override> {
        let flag = |key: &str, value: Option<String>, name: &str| {
            value.map(|value| Override {
                key: key.into(),
                value,
                origin: format!("--{name}"),
            })
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let mut v: Vec<Override> = [
            flag("listen", self.listen.clone(), "listen"),
            flag("profile", path(&self.profile), "profile"),
            flag("state_dir", path(&self.state_dir), "state-dir"),
            flag(
                "sense.sample_hz",
                self.sample_hz.map(|x| x.to_string()),
                "sample-hz",
            ),
            flag(
                "sense.probe_budget",
                self.probe_budget.map(|x| x.to_string()),
                "probe-budget",
            ),
            flag("auth.token_file", path(&self.token_file), "token-file"),
            flag(
                "cache.model_bytes",
                self.cache_bytes.map(|x| x.to_string()),
                "cache-bytes",
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        v.extend(self.set.iter().cloned());
        v
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let file = find_file(args.config.as_deref());
    // Variables that are not UTF-8 cannot be ours; skipping them beats refusing to start.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let cfg = Config::load(file.as_deref(), env, &args.overrides())?;
    if args.print_config {
        print!(
            "{}",
            toml::to_string(&cfg).context("cannot print the configuration")?
        );
        return Ok(());
    }
    // Refused before binding: off loopback without a token, augur does not listen at all.
    crate::serve::auth::Auth::load(&cfg.auth, cfg.listen)
        .map_err(crate::serve::ServeError::from)?;
    // The state directory and everything in it (models, journal, learned state, a background
    // calibration's profile) are the daemon's alone.
    // SAFETY: umask(2) only sets the process's file-creation mask.
    unsafe { libc::umask(0o077) };
    crate::serve::listen::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("augur-http")
        .build()
        .context("cannot start the tokio runtime")?;
    let result = rt.block_on(async {
        let listener = crate::serve::listen::bind(cfg.listen).map_err(|source| {
            crate::serve::ServeError::Bind {
                addr: cfg.listen.to_string(),
                source,
            }
        })?;
        let addr = listener
            .local_addr()
            .map_err(crate::serve::ServeError::Http)?;
        // Scripts and tests read the port from this line (listen = "…:0" picks one).
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "augur: listening on http://{addr} (config: {})",
            file.as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "built-in defaults".into())
        );
        let _ = out.flush();
        drop(out);
        crate::serve::run(cfg, listener, crate::serve::lifecycle::shutdown_signal()).await
    });
    // An import still running in the blocking pool is abandoned rather than waited for.
    rt.shutdown_timeout(Duration::from_secs(2));
    result?;
    Ok(())
}
