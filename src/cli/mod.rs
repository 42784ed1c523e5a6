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
