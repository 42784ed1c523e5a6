//! The graph IR every importer produces: ops with ONNX names and attributes, tensors with static shapes
//! and dtypes, and which tensors are weights. Layout of 4-D activations is always NCHW.
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

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

/// A tensor's dimensions, shared between the tensors that have them: a large graph has hundreds of
/// thousands of tensors but a few dozen distinct shapes (see [`ShapeTable`]).
pub type Shape = Arc<[usize]>;

/// The distinct shapes of a graph being built, so that each is held once.
#[derive(Clone, Debug, Default)]
pub struct ShapeTable(HashSet<Shape>);

impl ShapeTable {
    /// The shared copy of `dims`.
    pub fn get(&mut self, dims: &[usize]) -> Shape {
        if let Some(s) = self.0.get(dims) {
            return Arc::clone(s);
        }
        let s: Shape = dims.into();
        self.0.insert(Arc::clone(&s));
        s
    }
}

/// Names and shapes are boxed and shared rather than `String` and `Vec`: a large upload has
/// hundreds of thousands of tensors, and the spare capacity and headers of growable buffers made
/// its graph several times its JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tensor {
    pub name: Box<str>,
    pub shape: Shape,
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

/// A node's attributes by name, kept in name order (serialised as a JSON object, as a map would be).
///
/// A sorted vector rather than a `BTreeMap`: a node has a handful of attributes, and a map allocates
/// a tree node of several hundred bytes for even one, which made the graph of a large upload
/// several times its JSON. Names are `Cow`: the importers' fixed ONNX names need no allocation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attrs(Vec<(Cow<'static, str>, Attr)>);

impl Attrs {
    pub fn new() -> Attrs {
        Attrs(Vec::new())
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&Attr> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    /// Sets `key`; returns the value it replaced.
    pub fn insert(&mut self, key: Cow<'static, str>, value: Attr) -> Option<Attr> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                // Grown one at a time: most nodes have one to five attributes, and the usual
                // doubling would leave a third of the space unused.
                self.0.reserve_exact(1);
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// The attributes in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Attr)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

impl<K: Into<Cow<'static, str>>> FromIterator<(K, Attr)> for Attrs {
    fn from_iter<I: IntoIterator<Item = (K, Attr)>>(items: I) -> Attrs {
        let mut a = Attrs::new();
        for (k, v) in items {
            a.insert(k.into(), v);
        }
        a
    }
}

impl<const N: usize> From<[(Cow<'static, str>, Attr); N]> for Attrs {
    fn from(items: [(Cow<'static, str>, Attr); N]) -> Attrs {
        items.into_iter().collect()
    }
}

impl Serialize for Attrs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Attrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Attrs, D::Error> {
        Ok(BTreeMap::<String, Attr>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

/// An operator application. Its name and operand lists are boxed, not growable, for the same
/// reason as [`Tensor`]'s; they serialise as before.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub name: Box<str>,
    /// ONNX operator type (`Conv`, `Gemm`, `Relu` …); importers of other formats map onto these.
    pub op: String,
    pub attrs: Attrs,
    pub inputs: Box<[TensorId]>,
    pub outputs: Box<[TensorId]>,
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
