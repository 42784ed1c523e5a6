//! Graph builder: small graphs (single kernels for calibration, test models) made op by op, with ONNX op
//! and attribute names and the static output shapes ONNX defines, so a built [`Graph`] looks like an
//! imported one and can be exported with [`super::export`].
//!
//! Constant operands that opset 17 takes as inputs (Clip bounds, Slice starts/ends …) are weight inputs
//! here as in an imported graph; their values, which a [`Graph`] does not store, ride along as the
//! attributes of the same name that older opsets had, and the exporter turns them back into inputs.
mod dense;
mod layout;
#[cfg(test)]
mod tests;

use super::broadcast::broadcast;
use super::graph::{Attr, DType, Graph, Node, Tensor, TensorId};
use std::collections::BTreeMap;

/// Why an op cannot be added: it names the node that would have been created.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("graph `{graph}`: no tensor #{id}")]
    UnknownTensor { graph: String, id: TensorId },
    #[error("{op} `{node}`: {detail}")]
    Invalid {
        node: String,
        op: String,
        detail: String,
    },
    #[error("graph `{graph}`: {detail}")]
    Graph { graph: String, detail: String },
}

/// Builds a [`Graph`] op by op. Every op checks its operands and computes its output shape, so a graph
/// that [`GraphBuilder::finish`] returns has consistent static shapes.
#[derive(Clone, Debug)]
pub struct GraphBuilder {
    g: Graph,
}

fn dims(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&d| d as i64).collect()
}

fn fmt_shape(s: &[usize]) -> String {
    format!("{s:?}")
}

impl GraphBuilder {
    pub fn new(name: &str) -> GraphBuilder {
        GraphBuilder {
            g: Graph {
                name: name.to_string(),
                ..Default::default()
            },
        }
    }

    /// Adds a float32 graph input.
    pub fn input(&mut self, shape: &[usize]) -> TensorId {
        let name = if self.g.inputs.is_empty() {
            "input".to_string()
        } else {
            format!("input_{}", self.g.inputs.len())
        };
        let id = self.tensor(name, shape.to_vec(), DType::F32, false);
        self.g.inputs.push(id);
        id
    }

    /// Adds a float32 weight (an initializer), for ops that take one as an ordinary operand
    /// (`matmul(x, w)`, `add(x, w)`).
    pub fn weight(&mut self, shape: &[usize]) -> TensorId {
        let name = format!("w_{}", self.g.tensors.len());
        self.tensor(name, shape.to_vec(), DType::F32, true)
    }

    /// The shape of a tensor added so far.
    pub fn shape(&self, x: TensorId) -> Result<&[usize], BuildError> {
        self.g
            .tensors
            .get(x)
            .map(|t| t.shape.as_slice())
            .ok_or_else(|| BuildError::UnknownTensor {
                graph: self.g.name.clone(),
                id: x,
            })
    }

    /// The graph built so far, for inspection before [`GraphBuilder::finish`].
    pub fn graph(&self) -> &Graph {
        &self.g
    }

    fn tensor(
        &mut self,
        name: String,
        shape: Vec<usize>,
        dtype: DType,
        is_weight: bool,
    ) -> TensorId {
        self.g.tensors.push(Tensor {
            name,
            shape,
            dtype,
            is_weight,
        });
        self.g.tensors.len() - 1
    }

    /// The name the next node will get, for weights and errors made before it exists.
    fn next_name(&self, op: &str) -> String {
        format!("{}_{}", op.to_ascii_lowercase(), self.g.nodes.len())
    }

    fn invalid(&self, op: &str, detail: impl Into<String>) -> BuildError {
        BuildError::Invalid {
            node: self.next_name(op),
            op: op.to_string(),
            detail: detail.into(),
        }
    }

    /// The shape of an operand that must be an activation of rank `rank` (any rank when `None`).
    fn operand(
        &self,
        op: &str,
        x: TensorId,
        rank: Option<usize>,
    ) -> Result<Vec<usize>, BuildError> {
        let s = self.shape(x)?.to_vec();
        if let Some(r) = rank
            && s.len() != r
        {
            return Err(self.invalid(
                op,
                format!("expects a rank-{r} input, got {}", fmt_shape(&s)),
            ));
        }
        if s.contains(&0) {
            return Err(self.invalid(
                op,
                format!("input has an empty dimension: {}", fmt_shape(&s)),
            ));
        }
        Ok(s)
    }

    fn const_weight(
        &mut self,
        node: &str,
        role: &str,
        shape: Vec<usize>,
        dtype: DType,
    ) -> TensorId {
        self.tensor(format!("{node}.{role}"), shape, dtype, true)
    }

    fn push(
        &mut self,
        op: &str,
        inputs: Vec<TensorId>,
        attrs: BTreeMap<String, Attr>,
        out_shape: Vec<usize>,
    ) -> TensorId {
        let name = self.next_name(op);
        let out = self.tensor(format!("{name}.out"), out_shape, DType::F32, false);
        self.g.nodes.push(Node {
            name,
            op: op.to_string(),
            attrs,
            inputs,
            outputs: vec![out],
        });
        out
    }

    fn unary(&mut self, op: &str, x: TensorId) -> Result<TensorId, BuildError> {
        let s = self.operand(op, x, None)?;
        Ok(self.push(op, vec![x], BTreeMap::new(), s))
    }

    pub fn relu(&mut self, x: TensorId) -> Result<TensorId, BuildError> {
        self.unary("Relu", x)
    }

    pub fn sigmoid(&mut self, x: TensorId) -> Result<TensorId, BuildError> {
        self.unary("Sigmoid", x)
    }

    pub fn hardswish(&mut self, x: TensorId) -> Result<TensorId, BuildError> {
        self.unary("HardSwish", x)
    }

    /// Clip to [lo, hi] (ReLU6 is `clip(x, 0.0, 6.0)`).
    pub fn clip(&mut self, x: TensorId, lo: f32, hi: f32) -> Result<TensorId, BuildError> {
        const OP: &str = "Clip";
        let s = self.operand(OP, x, None)?;
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(self.invalid(OP, format!("bounds [{lo}, {hi}] are not an interval")));
        }
        let name = self.next_name(OP);
        let min = self.const_weight(&name, "min", vec![], DType::F32);
        let max = self.const_weight(&name, "max", vec![], DType::F32);
        let attrs = BTreeMap::from([
            ("min".into(), Attr::Float(lo)),
            ("max".into(), Attr::Float(hi)),
        ]);
        Ok(self.push(OP, vec![x, min, max], attrs, s))
    }

    fn binary(&mut self, op: &str, a: TensorId, b: TensorId) -> Result<TensorId, BuildError> {
        let sa = self.operand(op, a, None)?;
        let sb = self.operand(op, b, None)?;
        let out = broadcast(&sa, &sb).ok_or_else(|| {
            self.invalid(
                op,
                format!(
                    "shapes {} and {} do not broadcast",
                    fmt_shape(&sa),
                    fmt_shape(&sb)
                ),
            )
        })?;
        Ok(self.push(op, vec![a, b], BTreeMap::new(), out))
    }

    /// Elementwise sum with numpy broadcasting.
    pub fn add(&mut self, a: TensorId, b: TensorId) -> Result<TensorId, BuildError> {
        self.binary("Add", a, b)
    }

    /// Elementwise product with numpy broadcasting.
    pub fn mul(&mut self, a: TensorId, b: TensorId) -> Result<TensorId, BuildError> {
        self.binary("Mul", a, b)
    }

    /// Shape of a per-channel constant for `s`: [1, C, 1, …] (channel axis 1), or [C] for a vector.
    fn per_channel(s: &[usize]) -> Vec<usize> {
        match s.len() {
            0 => vec![],
            1 => vec![s[0]],
            n => {
                let mut v = vec![1; n];
                v[1] = s[1];
                v
            }
        }
    }

    fn binary_const(&mut self, op: &str, x: TensorId) -> Result<TensorId, BuildError> {
        let s = self.operand(op, x, None)?;
        let name = self.next_name(op);
        let c = self.const_weight(&name, "const", Self::per_channel(&s), DType::F32);
        Ok(self.push(op, vec![x, c], BTreeMap::new(), s))
    }

    /// Adds a per-channel constant ([1, C, 1, 1] for NCHW): a bias.
    pub fn add_const(&mut self, x: TensorId) -> Result<TensorId, BuildError> {
        self.binary_const("Add", x)
    }

    /// Multiplies by a per-channel constant ([1, C, 1, 1] for NCHW): a scale.
    pub fn mul_const(&mut self, x: TensorId) -> Result<TensorId, BuildError> {
        self.binary_const("Mul", x)
    }

    /// Inference-mode batch normalisation over channel axis 1.
    pub fn batchnorm(&mut self, x: TensorId) -> Result<TensorId, BuildError> {
        const OP: &str = "BatchNormalization";
        let s = self.operand(OP, x, None)?;
        if s.len() < 2 {
            return Err(self.invalid(OP, format!("needs a channel axis, got {}", fmt_shape(&s))));
        }
        let name = self.next_name(OP);
        let c = s[1];
        let mut inputs = vec![x];
        for role in ["scale", "bias", "mean", "var"] {
            inputs.push(self.const_weight(&name, role, vec![c], DType::F32));
        }
        let attrs = BTreeMap::from([("epsilon".into(), Attr::Float(1e-5))]);
        Ok(self.push(OP, inputs, attrs, s))
    }

    /// The finished graph with these outputs, in this order.
    pub fn finish(self, outputs: &[TensorId]) -> Result<Graph, BuildError> {
        let mut g = self.g;
        let err = |detail: String| BuildError::Graph {
            graph: g.name.clone(),
            detail,
        };
        if g.nodes.is_empty() {
            return Err(err("has no nodes".into()));
        }
        if outputs.is_empty() {
            return Err(err("needs at least one output".into()));
        }
        let produced: Vec<TensorId> = g.nodes.iter().flat_map(|n| n.outputs.clone()).collect();
        for (i, &o) in outputs.iter().enumerate() {
            if o >= g.tensors.len() {
                return Err(BuildError::UnknownTensor {
                    graph: g.name.clone(),
                    id: o,
                });
            }
            if !produced.contains(&o) {
                return Err(err(format!(
                    "output `{}` is not computed by any node",
                    g.tensors[o].name
                )));
            }
            if outputs[..i].contains(&o) {
                return Err(err(format!(
                    "output `{}` is listed twice",
                    g.tensors[o].name
                )));
            }
        }
        g.outputs = outputs.to_vec();
        Ok(g)
    }
}
