//! The one error type of model import: every variant names the file, and the node where there is one.

/// Why a model could not be imported. Every variant names the file, and the node where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: the file is empty")]
    Empty { file: String },
    #[error("{file}: {detail}")]
    Malformed { file: String, detail: String },
    #[error("{file}: node `{node}`: unsupported operator `{op}`")]
    UnsupportedOp {
        file: String,
        node: String,
        op: String,
    },
    #[error("{file}: node `{node}`: the graph has a cycle through this node")]
    Cycle { file: String, node: String },
    #[error("{file}: node `{node}`: unresolvable shape: {detail}")]
    Shape {
        file: String,
        node: String,
        detail: String,
    },
}
