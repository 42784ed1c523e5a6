//! Configuration: `config/augur.toml`, overridden by `AUGUR_…` environment variables, then by flags.
