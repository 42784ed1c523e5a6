//! Who may use the API: a bearer token read from a file, required on every route but the probes
//! (`/live`, `/ready`, and `/metrics` when the operator makes it public). Listening anywhere but on
//! a loopback address without a token is refused at start-up: anyone who can connect could
//! otherwise post observations into the learner every client shares.
use crate::config::AuthConfig;
use axum::extract::Request;
use axum::http::header;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "refusing to listen on {addr} without a token: anyone who can reach it could use the API; \
         set auth.token_file (or --token-file), or listen on a loopback address"
    )]
    NoTokenOffLoopback { addr: SocketAddr },
    #[error("{path}: cannot read the token file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}: the token file holds no token (want at least 16 characters on its first line)"
    )]
    Empty { path: String },
}

/// The routes that answer without a token: liveness and readiness probes.
const OPEN: [&str; 2] = ["/live", "/ready"];

/// The token check, once configured.
#[derive(Clone)]
pub struct Auth {
    /// SHA-256 of the token: comparing digests keeps the compare constant-time whatever the
    /// length of what a client sends.
    digest: [u8; 32],
    metrics_public: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("metrics_public", &self.metrics_public)
            .finish_non_exhaustive()
    }
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

impl Auth {
    /// The check for a daemon listening on `addr`: `None` (open) on loopback without a token,
    /// an error off loopback without one.
    pub fn load(cfg: &AuthConfig, addr: SocketAddr) -> Result<Option<Arc<Auth>>, AuthError> {
        let Some(path) = cfg.token_file.as_deref() else {
            if addr.ip().is_loopback() {
                return Ok(None);
            }
            return Err(AuthError::NoTokenOffLoopback { addr });
        };
        let token = read_token(path)?;
        Ok(Some(Arc::new(Auth {
            digest: digest(token.as_bytes()),
            metrics_public: cfg.metrics_public,
        })))
    }

    /// Whether `req` may pass: its route is open, or it carries the token.
    pub fn admits(&self, req: &Request) -> bool {
        self.open(req.uri().path()) || self.allows(req)
    }

    fn open(&self, path: &str) -> bool {
        OPEN.contains(&path) || (self.metrics_public && path == "/metrics")
    }

    /// Whether a request carries the token.
    fn allows(&self, req: &Request) -> bool {
        let Some(v) = req.headers().get(header::AUTHORIZATION) else {
            return false;
        };
        let Some((scheme, token)) = v.as_bytes().split_first_chunk::<7>() else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return false;
        }
        bool::from(digest(token.trim_ascii()).ct_eq(&self.digest))
    }
}

fn read_token(path: &Path) -> Result<String, AuthError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: p.clone(),
        source,
    })?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.len() < 16 {
        return Err(AuthError::Empty { path: p });
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, token: &str) -> AuthConfig {
        let p = dir.join("token");
        std::fs::write(&p, token).unwrap();
        AuthConfig {
            token_file: Some(p),
            metrics_public: false,
        }
    }

    fn req(auth: Option<&str>) -> Request {
        let mut b = Request::builder().uri("/v1/state");
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn off_loopback_needs_a_token_and_the_token_must_match() {
        let any: SocketAddr = "0.0.0.0:9747".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:9747".parse().unwrap();
        assert!(Auth::load(&AuthConfig::default(), lo).unwrap().is_none());
        assert!(matches!(
            Auth::load(&AuthConfig::default(), any),
            Err(AuthError::NoTokenOffLoopback { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Auth::load(&cfg(dir.path(), "short\n"), any),
            Err(AuthError::Empty { .. })
        ));
        let a = Auth::load(&cfg(dir.path(), "  0123456789abcdef-token \nrest\n"), any)
            .unwrap()
            .unwrap();
        assert!(a.allows(&req(Some("Bearer 0123456789abcdef-token"))));
        assert!(a.allows(&req(Some("bearer 0123456789abcdef-token"))));
        assert!(!a.allows(&req(Some("Bearer 0123456789abcdef-tokeN"))));
        assert!(!a.allows(&req(Some("Bearer "))));
        assert!(!a.allows(&req(Some("Basic 0123456789abcdef-token"))));
        assert!(!a.allows(&req(None)));
        assert!(a.open("/live") && a.open("/ready") && !a.open("/metrics"));
    }
}
