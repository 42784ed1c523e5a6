//! The graph IR every importer produces: ops with ONNX names and attributes, tensors with static shapes
//! and dtypes, and which tensors are weights. Layout of 4-D activations is always NCHW.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    F64,
    I64,
    I32,
    I8,
    U8,
    Bool,
    Other,
}

impl DType {
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::I8 | DType::U8 | DType::Bool | DType::Other => 1,
        }
    }
}

/// Index of a tensor in [`Graph::tensors`].
pub type TensorId = usize;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// True for initializers and constants: stored with the model, not computed per run.
    pub is_weight: bool,
}

impl Tensor {
    pub fn elements(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
    pub fn bytes(&self) -> u64 {
        self.elements() * self.dtype.size_bytes() as u64
    }
}

/// An attribute value, as ONNX has them (TF attributes are mapped onto these).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Str(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// ONNX operator type (`Conv`, `Gemm`, `Relu` …); importers of other formats map onto these.
    pub op: String,
    pub attrs: BTreeMap<String, Attr>,
    pub inputs: Vec<TensorId>,
    pub outputs: Vec<TensorId>,
}

impl Node {
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attrs.get(key) {
            Some(Attr::Int(v)) => Some(*v),
            _ => None,
        }
    }
    pub fn ints(&self, key: &str) -> Option<&[i64]> {
        match self.attrs.get(key) {
            Some(Attr::Ints(v)) => Some(v),
            _ => None,
        }
    }
    pub fn float(&self, key: &str) -> Option<f32> {
        match self.attrs.get(key) {
            Some(Attr::Float(v)) => Some(*v),
            _ => None,
        }
    }
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attrs.get(key) {
            Some(Attr::Str(v)) => Some(v),
            _ => None,
        }
    }
}

/// A model as a DAG of nodes in a valid execution (topological) order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Graph {
    pub name: String,
    pub tensors: Vec<Tensor>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<TensorId>,
    pub outputs: Vec<TensorId>,
}

impl Graph {
    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id]
    }

    /// For each tensor, the nodes that read it.
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut c = vec![Vec::new(); self.tensors.len()];
        for (ix, n) in self.nodes.iter().enumerate() {
            for &t in &n.inputs {
                if !c[t].contains(&ix) {
                    c[t].push(ix);
                }
            }
        }
        c
    }

    /// For each tensor, the node that writes it, if any.
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut p = vec![None; self.tensors.len()];
        for (ix, n) in self.nodes.iter().enumerate() {
            for &t in &n.outputs {
                p[t] = Some(ix);
            }
        }
        p
    }

    /// Weight tensors that some node reads.
    fn used_weights(&self) -> impl Iterator<Item = &Tensor> {
        let mut used = vec![false; self.tensors.len()];
        for n in &self.nodes {
            for &t in &n.inputs {
                used[t] = true;
            }
        }
        self.tensors
            .iter()
            .zip(used)
            .filter(|(t, u)| t.is_weight && *u)
            .map(|(t, _)| t)
    }

    /// Bytes of all weight tensors that some node reads.
    pub fn weight_bytes(&self) -> u64 {
        self.used_weights().map(Tensor::bytes).sum()
    }

    /// Number of weight scalars (the ONNX view of "parameters"; int64 shape constants excluded).
    pub fn params(&self) -> u64 {
        self.used_weights()
            .filter(|t| t.dtype != DType::I64)
            .map(Tensor::elements)
            .sum()
    }
}
