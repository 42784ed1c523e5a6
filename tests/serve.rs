//! End-to-end tests of `augur serve`: the real binary on port 0 (loopback only), every route and
//! every error status, restart and `kill -9` recovery of the state directory, the systemd
//! notify/watchdog protocol against a fake `NOTIFY_SOCKET`, the unit file, and the Grafana
//! dashboard against the metrics actually exported.
//!
//! These tests talk HTTP to a child process and do not link the library, so they build fast.
mod common;

#[path = "serve/http.rs"]
mod http;

#[path = "serve/daemon.rs"]
mod daemon;

#[path = "serve/routes.rs"]
mod routes;

#[path = "serve/plan.rs"]
mod plan;

#[path = "serve/recovery.rs"]
mod recovery;

#[path = "serve/ops.rs"]
mod ops;

#[path = "serve/hardening.rs"]
mod hardening;

#[path = "serve/auth.rs"]
mod auth;
