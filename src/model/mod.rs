//! Model import: ONNX files and nn-Meter IR JSON, both into one graph IR with static shapes.
mod blocks;
mod branches;
pub mod builder;
pub mod export;
pub mod families;
pub mod generate;
pub mod graph;
pub mod nnmeter;
pub mod onnx;
pub mod shape;

pub use graph::{Attr, DType, Graph, Node, Tensor, TensorId};
pub use shape::parse_shape;

use std::path::Path;

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

/// The format of a model file, told from its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Onnx,
    NnMeterIr,
}

/// Tells ONNX from nn-Meter IR JSON: the IR is a JSON object, ONNX a protobuf (never starts with `{`).
pub fn sniff(bytes: &[u8]) -> Format {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Format::NnMeterIr,
        _ => Format::Onnx,
    }
}

/// Imports a model from bytes of either format.
pub fn import_bytes(
    bytes: &[u8],
    source: &str,
    input_shape: Option<&[usize]>,
) -> Result<Graph, ImportError> {
    match sniff(bytes) {
        Format::Onnx => onnx::import(bytes, source, input_shape),
        Format::NnMeterIr => nnmeter::import(bytes, source, input_shape),
    }
}

/// Imports a model file of either format.
pub fn import_path(path: &Path, input_shape: Option<&[usize]>) -> Result<Graph, ImportError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        file: file.clone(),
        source,
    })?;
    import_bytes(&bytes, &file, input_shape)
}
