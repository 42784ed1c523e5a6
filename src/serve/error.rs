//! Errors of the daemon: [`ServeError`] for what stops it from starting, [`ApiError`] for what a
//! request gets back — always JSON `{error, detail}` with the status that fits.
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{path}: cannot use the state directory: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Profile(#[from] crate::profile::ProfileError),
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Journal(#[from] super::journal::JournalError),
    #[error("{0}")]
    Auth(#[from] super::auth::AuthError),
}

/// A request's failure: the status, a stable machine-readable code, and a sentence for people.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    detail: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
        }
    }

    pub fn malformed_json(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", detail)
    }

    pub fn invalid(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", detail)
    }

    pub fn unknown_model(id: &str) -> ApiError {
        let shown: String = id.chars().take(80).collect();
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_model",
            format!("no model `{shown}`: POST it to /v1/models first"),
        )
    }

    pub fn too_large(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", detail)
    }

    pub fn not_ready(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", detail)
    }

    /// A failure inside augur: the detail goes to the log, the client gets a generic sentence
    /// (details name files and directories of the host, which are no business of a client).
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!("internal error: {detail}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request failed inside augur; the daemon's log has the details",
        )
    }

    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn rate_limited(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
    }

    /// The body alone, for an item of a batch answer.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.code,
            "detail": self.detail,
            "status": self.status.as_u16(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body {
            error: self.code,
            detail: &self.detail,
        })
        .unwrap_or_else(|_| br#"{"error":"internal","detail":""}"#.to_vec());
        let mut r = (self.status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_keep_their_detail_out_of_the_answer() {
        let e = ApiError::internal("/var/lib/augur/models/x.json: Permission denied");
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.detail.contains("/var/lib"), "{}", e.detail);
        assert!(!e.to_json().to_string().contains("Permission"));
    }
}
