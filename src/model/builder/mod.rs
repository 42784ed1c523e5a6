//! Graph builder: small graphs (single kernels for calibration, test models) made op by op, with ONNX op
//! and attribute names and the static output shapes ONNX defines, so a built [`Graph`] looks like an
//! imported one and can be exported with [`super::export`].
//!
//! Constant operands that opset 17 takes as inputs (Clip bounds, Slice starts/ends …) are weight inputs
//! here as in an imported graph; their values, which a [`Graph`] does not store, ride along as the
//! attributes of the same name that older opsets had, and the exporter turns them back into inputs.
mod dense;
mod layout;

use super::broadcast::broadcast;
use super::graph::{Attr, Attrs, DType, Graph, Node, ShapeTable, Tensor, TensorId};

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
    shapes: ShapeTable,
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
            shapes: ShapeTable::default(),
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
            .map(|t| &*t.shape)
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
        let shape = self.shapes.get(&shape);
        self.g.tensors.push(Tensor {
            name: name.into_boxed_str(),
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
        attrs: Attrs,
        out_shape: Vec<usize>,
    ) -> TensorId {
        let name = self.next_name(op);
        let out = self.tensor(format!("{name}.out"), out_shape, DType::F32, false);
        self.g.nodes.push(Node {
            name: name.into(),
            op: op.to_string(),
            attrs,
            inputs: inputs.into(),
            outputs: Box::new([out]),
        });
        out
    }

    fn unary(&mut self, op: &str, x: TensorId) -> Result<TensorId, BuildError> {
        let s = self.operand(op, x, None)?;
        Ok(self.push(op, vec![x], Attrs::new(), s))
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

    /// The Gauss error function, the core of GELU as exporters write it (x·½·(1 + erf(x/√2))).
    pub fn erf(&mut self, x: TensorId) -> Result<TensorId, BuildError> {
        self.unary("Erf", x)
    }

    /// `clip(x/6 + ½, 0, 1)`, the gate of hard squeeze-excitation (MobileNetV3, LCNet, GhostNet).
    pub fn hard_sigmoid(&mut self, x: TensorId) -> Result<TensorId, BuildError> {
        const OP: &str = "HardSigmoid";
        let s = self.operand(OP, x, None)?;
        let attrs = Attrs::from([
            ("alpha".into(), Attr::Float(1.0 / 6.0)),
            ("beta".into(), Attr::Float(0.5)),
        ]);
        Ok(self.push(OP, vec![x], attrs, s))
    }

    /// Layer normalisation over the last axis, with a scale and a bias (ConvNeXt's norm, applied to
    /// a channels-last tensor).
    pub fn layer_norm(&mut self, x: TensorId) -> Result<TensorId, BuildError> {
        const OP: &str = "LayerNormalization";
        let s = self.operand(OP, x, None)?;
        let Some(&c) = s.last() else {
            return Err(self.invalid(OP, "needs an input of rank 1 or more"));
        };
        let name = self.next_name(OP);
        let scale = self.const_weight(&name, "scale", vec![c], DType::F32);
        let bias = self.const_weight(&name, "bias", vec![c], DType::F32);
        let attrs = Attrs::from([
            ("axis".into(), Attr::Int(-1)),
            ("epsilon".into(), Attr::Float(1e-6)),
        ]);
        Ok(self.push(OP, vec![x, scale, bias], attrs, s))
    }

    /// Nearest-neighbour resize of an NCHW input to `size` ([H, W]), as upsampling layers export.
    pub fn resize(&mut self, x: TensorId, size: [usize; 2]) -> Result<TensorId, BuildError> {
        const OP: &str = "Resize";
        let s = self.operand(OP, x, Some(4))?;
        if size.contains(&0) {
            return Err(self.invalid(OP, format!("target size {size:?} is empty")));
        }
        let attrs = Attrs::from([("mode".into(), Attr::Str("nearest".into()))]);
        Ok(self.push(OP, vec![x], attrs, vec![s[0], s[1], size[0], size[1]]))
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
        let attrs = Attrs::from([
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
        Ok(self.push(op, vec![a, b], Attrs::new(), out))
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
        Ok(self.push(op, vec![x, c], Attrs::new(), s))
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
        let attrs = Attrs::from([("epsilon".into(), Attr::Float(1e-5))]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::node_macs;
    use crate::model::broadcast::broadcast;

    fn out_shape(b: &GraphBuilder, t: TensorId) -> Vec<usize> {
        b.shape(t).map(|s| s.to_vec()).unwrap_or_default()
    }

    #[test]
    fn conv_shapes_follow_onnx() {
        let mut b = GraphBuilder::new("t");
        let x = b.input(&[1, 3, 224, 224]);
        let y = b
            .conv(x, 64, [7, 7], [2, 2], [3, 3, 3, 3], [1, 1], 1, false)
            .unwrap();
        assert_eq!(out_shape(&b, y), vec![1, 64, 112, 112]);
        let z = b
            .conv(y, 64, [3, 3], [1, 1], [2, 2, 2, 2], [2, 2], 64, true)
            .unwrap();
        assert_eq!(out_shape(&b, z), vec![1, 64, 112, 112]);
        // Asymmetric padding, stride 2, odd input: TF "SAME"-style.
        let mut b = GraphBuilder::new("t");
        let x = b.input(&[1, 8, 15, 15]);
        let y = b
            .conv(x, 16, [3, 3], [2, 2], [0, 0, 1, 1], [1, 1], 2, true)
            .unwrap();
        assert_eq!(out_shape(&b, y), vec![1, 16, 7, 7]);
        let g = b.finish(&[y]).unwrap();
        assert_eq!(
            g.tensor(g.nodes[0].inputs[1]).shape.to_vec(),
            vec![16, 4, 3, 3]
        );
        assert_eq!(g.tensor(g.nodes[0].inputs[2]).shape.to_vec(), vec![16]);
        assert_eq!(node_macs(&g, &g.nodes[0]), 16 * 7 * 7 * 4 * 9);
    }

    #[test]
    fn bad_convs_are_refused() {
        let mut b = GraphBuilder::new("t");
        let x = b.input(&[1, 6, 8, 8]);
        let e = b.conv(x, 8, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 4, false);
        assert!(e.unwrap_err().to_string().contains("divisible"));
        let e = b.conv(x, 8, [9, 9], [1, 1], [0, 0, 0, 0], [1, 1], 1, false);
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("larger than the padded input")
        );
        // Dilation makes a 3×3 kernel 9 wide.
        assert!(
            b.conv(x, 8, [3, 3], [1, 1], [0; 4], [4, 4], 1, false)
                .is_err()
        );
        assert!(
            b.conv(x, 8, [3, 3], [0, 1], [0; 4], [1, 1], 1, false)
                .is_err()
        );
        let v = b.input(&[1, 6]);
        assert!(
            b.conv(v, 8, [1, 1], [1, 1], [0; 4], [1, 1], 1, false)
                .is_err()
        );
        assert!(b.relu(999).is_err());
        // Nothing was added by the failures.
        assert!(b.graph().nodes.is_empty());
    }

    #[test]
    fn elementwise_and_broadcasting() {
        let mut b = GraphBuilder::new("t");
        let x = b.input(&[2, 16, 8, 8]);
        let s = b.global_avg_pool(x).unwrap();
        assert_eq!(out_shape(&b, s), vec![2, 16, 1, 1]);
        let s = b.sigmoid(s).unwrap();
        let y = b.mul(x, s).unwrap();
        assert_eq!(out_shape(&b, y), vec![2, 16, 8, 8]);
        let c = b.add_const(y).unwrap();
        assert_eq!(
            b.graph()
                .tensor(b.graph().nodes[3].inputs[1])
                .shape
                .to_vec(),
            vec![1, 16, 1, 1]
        );
        let c = b.clip(c, 0.0, 6.0).unwrap();
        let c = b.hardswish(c).unwrap();
        let c = b.batchnorm(c).unwrap();
        let c = b.mul_const(c).unwrap();
        assert_eq!(out_shape(&b, c), vec![2, 16, 8, 8]);
        let other = b.input(&[1, 8, 8, 8]);
        assert!(b.add(x, other).is_err());
        assert!(b.clip(x, 1.0, 0.0).is_err());
        assert_eq!(broadcast(&[3, 1, 5], &[4, 1]), Some(vec![3, 4, 5]));
        assert_eq!(broadcast(&[], &[2, 3]), Some(vec![2, 3]));
        assert_eq!(broadcast(&[2, 3], &[3, 3]), None);
    }

    #[test]
    fn matmul_and_gemm_shapes() {
        let mut b = GraphBuilder::new("t");
        let x = b.input(&[4, 512]);
        let y = b.gemm(x, 1000, true).unwrap();
        assert_eq!(out_shape(&b, y), vec![4, 1000]);
        let a = b.input(&[2, 1, 8, 32]);
        let w = b.weight(&[3, 32, 16]);
        let m = b.matmul(a, w).unwrap();
        assert_eq!(out_shape(&b, m), vec![2, 3, 8, 16]);
        let v = b.weight(&[16]);
        let mv = b.matmul(m, v).unwrap();
        assert_eq!(out_shape(&b, mv), vec![2, 3, 8]);
        assert!(b.matmul(a, v).is_err());
        let t = b.input(&[2, 3, 4]);
        assert!(b.gemm(t, 8, false).is_err());
        let g = b.finish(&[y, mv]).unwrap();
        assert_eq!(node_macs(&g, &g.nodes[0]), 4 * 1000 * 512);
        assert_eq!(node_macs(&g, &g.nodes[1]), 2 * 3 * 8 * 16 * 32);
    }

    #[test]
    fn pools() {
        let mut b = GraphBuilder::new("t");
        let x = b.input(&[1, 64, 112, 112]);
        let p = b.maxpool(x, [3, 3], [2, 2], [1, 1, 1, 1]).unwrap();
        assert_eq!(out_shape(&b, p), vec![1, 64, 56, 56]);
        let a = b.avgpool(p, [2, 2], [2, 2], [0; 4]).unwrap();
        assert_eq!(out_shape(&b, a), vec![1, 64, 28, 28]);
        assert!(b.maxpool(x, [3, 3], [1, 1], [3, 0, 0, 0]).is_err());
        let small = b.input(&[1, 1, 2, 2]);
        assert!(b.avgpool(small, [3, 3], [1, 1], [0; 4]).is_err());
    }

    #[test]
    fn data_movement_shapes() {
        let mut b = GraphBuilder::new("t");
        let x = b.input(&[1, 24, 28, 28]);
        let y = b.input(&[1, 8, 28, 28]);
        let c = b.concat(&[x, y], 1).unwrap();
        assert_eq!(out_shape(&b, c), vec![1, 32, 28, 28]);
        assert!(b.concat(&[x, y], 2).is_err());
        let r = b.reshape(c, &[0, 2, 16, -1]).unwrap();
        assert_eq!(out_shape(&b, r), vec![1, 2, 16, 784]);
        assert!(b.reshape(c, &[5, -1]).is_err());
        assert!(b.reshape(c, &[-1, -1]).is_err());
        let t = b.transpose(r, &[0, 2, 1, 3]).unwrap();
        assert_eq!(out_shape(&b, t), vec![1, 16, 2, 784]);
        assert!(b.transpose(r, &[0, 1, 1, 3]).is_err());
        let s = b.slice(c, &[1, 3], &[0, 1], &[16, 100], &[1, 2]).unwrap();
        assert_eq!(out_shape(&b, s), vec![1, 16, 28, 14]);
        assert!(b.slice(c, &[1], &[20], &[10], &[1]).is_err());
        let f = b.flatten(s, 1).unwrap();
        assert_eq!(out_shape(&b, f), vec![1, 16 * 28 * 14]);
        let sm = b.softmax(f, 1).unwrap();
        let g = b.finish(&[sm]).unwrap();
        assert_eq!(g.outputs, vec![sm]);
        assert_eq!(g.inputs.len(), 2);
    }

    #[test]
    fn finish_checks_outputs() {
        let mut b = GraphBuilder::new("t");
        let x = b.input(&[1, 4]);
        assert!(b.clone().finish(&[x]).is_err(), "a graph without nodes");
        let y = b.relu(x).unwrap();
        let w = b.weight(&[4]);
        for bad in [vec![], vec![x], vec![w], vec![y, y], vec![99]] {
            assert!(b.clone().finish(&bad).is_err(), "outputs {bad:?}");
        }
        let g = b.finish(&[y]).unwrap();
        assert_eq!(g.outputs, vec![y]);
    }
}
