//! Model import: ONNX files and nn-Meter IR JSON, both into one graph IR with static shapes.
mod blocks;
mod branches;
mod broadcast;
pub mod builder;
mod error;
pub mod export;
pub mod families;
pub mod generate;
pub(crate) mod graph;
mod nnmeter;
mod onnx;
pub mod shape;
mod topo;

pub use error::ImportError;
pub use graph::{Attr, Attrs, DType, Graph, Node, Shape, ShapeTable, Tensor, TensorId};
pub use shape::{ShapeError, parse_shape};

use std::path::Path;

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
