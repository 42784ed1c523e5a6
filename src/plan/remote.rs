//! Asking another running `augur serve` for its part of a plan (`augur plan --remote http://…`, and
//! a daemon's `POST /v1/plan` for a board the operator named by its address in `boards/NAME.url`):
//! its `GET /v1/state` first (a refusal is told before any bytes are sent), then the model's bytes
//! are posted to its `POST /v1/models`, and its `POST /v1/predict` answers its live prediction
//! kernel by kernel, with the graph nodes each kernel runs ([`crate::plan::Answered`]).
//!
//! Blocking and one request at a time: a command line waits for the answer anyway, and the daemon
//! calls it on a blocking thread. Plain HTTP only
//! (the client is built without TLS); a daemon behind TLS is reached through the operator's own
//! tunnel or proxy. Every failure is one [`RemoteError`] line naming the daemon.
use super::{Answered, AnsweredKernel};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// A refused connection is told quickly; a whole call may import a large model on a slow board.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most bytes an answer may have: a per-kernel prediction of a large model is some hundreds
/// of KiB, and anything far beyond is not an augur daemon's answer.
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// Why the other daemon's part could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote daemon {url}: {what}")]
    Url { url: String, what: String },
    #[error("remote daemon {url}: {call}: {why}")]
    Call {
        url: String,
        call: &'static str,
        why: String,
    },
    #[error("remote daemon {url}: {call} answered {status}: {detail}")]
    Status {
        url: String,
        call: &'static str,
        status: u16,
        detail: String,
    },
    #[error("token file {path}: {why}")]
    Token { path: String, why: String },
    #[error(
        "remote daemon {url}: its import of the model differs from this one ({there} MACs there, {here} here); both must import the same model the same way"
    )]
    Mismatch { url: String, there: u64, here: u64 },
}

/// Another augur daemon, by its base URL.
pub struct Daemon {
    url: String,
    agent: ureq::Agent,
    token: Option<String>,
}

/// What the daemon answered: its prediction of the model, and the threads it was made for.
#[derive(Debug)]
pub struct Part {
    pub answered: Answered,
    pub threads: usize,
}

#[derive(Deserialize)]
struct ModelAnswer {
    id: String,
    macs: u64,
}

#[derive(Deserialize)]
struct PredictAnswer {
    latency_ms: f64,
    interval_ms: [f64; 2],
    threads: usize,
    kernels: Option<Vec<KernelAnswer>>,
}

#[derive(Deserialize)]
struct KernelAnswer {
    latency_ms: f64,
    nodes: Option<[usize; 2]>,
    suffix_ms: Option<f64>,
}

#[derive(Deserialize)]
struct StateAnswer {
    snapshot: crate::sense::Snapshot,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    detail: String,
}

impl Daemon {
    /// A daemon at `url` (`http://host:port`, a trailing `/` or none), with the bearer token read
    /// from `token_file` where the daemon wants one.
    pub fn new(url: &str, token_file: Option<&Path>) -> Result<Daemon, RemoteError> {
        let base = url.trim_end_matches('/');
        let refuse = |what: &str| RemoteError::Url {
            url: url.to_string(),
            what: what.to_string(),
        };
        if base.starts_with("https://") {
            return Err(refuse(
                "https is not supported (augur's client has no TLS); give the daemon's http:// address or a tunnel's",
            ));
        }
        let Some(rest) = base.strip_prefix("http://") else {
            return Err(refuse("give the daemon's address as http://host:port"));
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
            return Err(refuse(
                "give the daemon's address as http://host:port, without a path",
            ));
        }
        let token = token_file.map(read_token).transpose()?;
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            // A refusal's status and JSON `detail` are read here rather than turned into an error.
            .http_status_as_error(false)
            // A board's daemon is on the local network or a tunnel: a proxy set in the environment
            // for the internet would not reach it, so none is read.
            .proxy(None)
            .build();
        Ok(Daemon {
            url: base.to_string(),
            agent: config.into(),
            token,
        })
    }

    /// Posts the model's bytes (`model`, as read from its file) and asks for its live per-kernel
    /// prediction at `threads` (the daemon's own count without one). `macs` is this side's import
    /// of the model, which the daemon's must match for its node indices to be this graph's.
    pub fn predict(
        &self,
        model: &[u8],
        input_shape: Option<&[usize]>,
        macs: u64,
        threads: Option<usize>,
    ) -> Result<Part, RemoteError> {
        const MODELS: &str = "POST /v1/models";
        const PREDICT: &str = "POST /v1/predict";
        // A refusal (a token missing, a wrong address) is told by a small call before the model's
        // bytes are sent: a daemon that refuses an upload closes the connection before reading it,
        // and the client would only see a broken pipe.
        const STATE: &str = "GET /v1/state";
        let r = self
            .with_auth(self.agent.get(format!("{}/v1/state", self.url)))
            .call();
        let _: serde_json::Value = self.answer(STATE, r)?;
        let mut path = format!("{}/v1/models", self.url);
        if let Some(s) = input_shape {
            let dims: Vec<String> = s.iter().map(usize::to_string).collect();
            path.push_str(&format!("?input_shape={}", dims.join(",")));
        }
        let content_type = match crate::model::sniff(model) {
            crate::model::Format::Onnx => "application/octet-stream",
            crate::model::Format::NnMeterIr => "application/json",
        };
        let m: ModelAnswer = self.call(MODELS, &path, content_type, model)?;
        if m.macs != macs {
            return Err(RemoteError::Mismatch {
                url: self.url.clone(),
                there: m.macs,
                here: macs,
            });
        }
        let mut ask = serde_json::json!({"model": m.id, "kernels": true});
        if let Some(t) = threads {
            ask["threads"] = t.into();
        }
        let body = serde_json::to_vec(&ask).map_err(|e| self.fail(PREDICT, e))?;
        let p: PredictAnswer = self.call(
            PREDICT,
            &format!("{}/v1/predict", self.url),
            "application/json",
            &body,
        )?;
        let kernels = p.kernels.unwrap_or_default();
        let mut answered = Vec::with_capacity(kernels.len());
        for k in kernels {
            let Some(nodes) = k.nodes else {
                return Err(self.fail(
                    PREDICT,
                    "its kernels do not say which graph nodes they run (a daemon older than this augur)",
                ));
            };
            answered.push(AnsweredKernel {
                latency_ms: k.latency_ms,
                nodes,
                suffix_ms: k.suffix_ms,
            });
        }
        Ok(Part {
            answered: Answered {
                kernels: answered,
                latency_ms: p.latency_ms,
                interval_ms: p.interval_ms,
            },
            threads: p.threads,
        })
    }

    /// The daemon's live state: its sensors' newest snapshot, with the speed readings its probe
    /// took over the last minutes, for a prediction made on its board by another process (`augur
    /// predict --state-from`) without a reading of its own.
    pub fn state(&self) -> Result<crate::sense::Snapshot, RemoteError> {
        const STATE: &str = "GET /v1/state";
        let r = self
            .with_auth(self.agent.get(format!("{}/v1/state", self.url)))
            .call();
        let a: StateAnswer = self.answer(STATE, r)?;
        Ok(a.snapshot)
    }

    fn fail(&self, call: &'static str, why: impl std::fmt::Display) -> RemoteError {
        RemoteError::Call {
            url: self.url.clone(),
            call,
            why: why.to_string(),
        }
    }

    fn with_auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let req = req.header("Accept", "application/json");
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// One POST, its answer read as `T`.
    fn call<T: serde::de::DeserializeOwned>(
        &self,
        call: &'static str,
        url: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<T, RemoteError> {
        let r = self
            .with_auth(self.agent.post(url))
            .header("Content-Type", content_type)
            .send(body);
        self.answer(call, r)
    }

    /// An answer read as `T`; a status other than 2xx is the daemon's `detail`.
    fn answer<T: serde::de::DeserializeOwned>(
        &self,
        call: &'static str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, RemoteError> {
        let mut resp = r.map_err(|e| match e {
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe => self.fail(
                call,
                "the daemon closed the connection before taking the whole request (over its upload limit?)",
            ),
            e => self.fail(call, e),
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| self.fail(call, format!("reading its answer: {e}")))?;
        if !(200..300).contains(&status) {
            let detail = serde_json::from_str::<ErrorAnswer>(&text)
                .map(|e| e.detail)
                .unwrap_or_else(|_| text.chars().take(200).collect());
            return Err(RemoteError::Status {
                url: self.url.clone(),
                call,
                status,
                detail: one_line(&detail),
            });
        }
        serde_json::from_str(&text)
            .map_err(|e| self.fail(call, format!("not the answer of an augur daemon: {e}")))
    }
}

/// A detail on one line, however the other side wrote it.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The bearer token: the file's one line.
fn read_token(path: &Path) -> Result<String, RemoteError> {
    let refuse = |why: String| RemoteError::Token {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(refuse(
            "give a file holding the token alone on one line".into(),
        ));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_http_host_and_port() {
        assert!(Daemon::new("http://127.0.0.1:9747", None).is_ok());
        assert!(Daemon::new("http://board:9747/", None).is_ok());
        for bad in [
            "https://board:9747",
            "http://",
            "http://board:9747/v1",
            "ftp://board",
        ] {
            let e = Daemon::new(bad, None).err().map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.contains(bad)), "{bad}");
        }
    }

    #[test]
    fn a_refused_connection_is_one_line() {
        // A port just released: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let d = Daemon::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let e = d.predict(b"x", None, 0, None).unwrap_err().to_string();
        assert!(e.contains("GET /v1/state") && !e.contains('\n'), "{e}");
    }
}
