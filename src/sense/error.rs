//! Errors of the sensing layer, and [`Unavailable`]: why a sensor cannot work here and what would fix it.
//!
//! A missing sensor is not an error of augur: it is reported as `Unavailable` in the sensor list and the
//! sampler goes on without it, the way node_exporter treats "no data".
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a sensor is not live, and what an operator could do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub reason: String,
    pub remedy: String,
}

impl Unavailable {
    pub fn new(reason: impl Into<String>, remedy: impl Into<String>) -> Self {
        Unavailable {
            reason: reason.into(),
            remedy: remedy.into(),
        }
    }
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (remedy: {})", self.reason, self.remedy)
    }
}

/// What went wrong while reading one sensor.
#[derive(Debug, thiserror::Error)]
pub enum SenseError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot parse {what} from `{text}`", path.display())]
    Parse {
        path: PathBuf,
        what: &'static str,
        text: String,
    },
    /// Nothing new to report this time; not a failure.
    #[error("no data")]
    NoData,
    #[error("{0}")]
    Unavailable(Unavailable),
    #[error("perf_event_open({event}): {source}")]
    Perf {
        event: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sample timed out after {0:?}")]
    Timeout(Duration),
    #[error("the sensor worker thread is gone")]
    WorkerGone,
}

impl SenseError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        SenseError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn parse(path: &Path, what: &'static str, text: &str) -> Self {
        let text: String = text.chars().take(80).collect();
        SenseError::Parse {
            path: path.to_path_buf(),
            what,
            text,
        }
    }
}
