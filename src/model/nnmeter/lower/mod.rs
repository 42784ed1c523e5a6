//! Lowering: each IR node, in execution order, onto graph IR nodes with ONNX ops, NCHW layout and
//! synthesised weights. Shapes are inferred with TensorFlow's rules in NHWC and checked against the
//! shapes the file states (see [`super::stated`] for the differences nn-Meter's own inference leaves).
mod layout;
mod window;

use super::attributes::{Attrs, Dims};
use super::decode::RawNode;
use super::stated::Rewrites;
use crate::model::broadcast::broadcast;
use crate::model::error::ImportError;
use crate::model::graph::{
    Attr, Attrs as NodeAttrs, DType, Graph, Node, ShapeTable, Tensor, TensorId,
};

/// A tensor larger than this many elements is a corrupt file, not a model: rejecting it keeps every
/// later byte count far from `u64` overflow.
const MAX_ELEMENTS: u64 = 1 << 40;

/// The TensorFlow op types this importer maps, as nn-Meter writes them (a few spellings of the newer
/// activations seen in nn-Meter's own kernel names are accepted too).
const SUPPORTED: &[&str] = &[
    "Placeholder",
    "Const",
    "Identity",
    "Reshape",
    "Squeeze",
    "Flatten",
    "ExpandDims",
    "Conv2D",
    "DepthwiseConv2dNative",
    "FusedBatchNorm",
    "FusedBatchNormV2",
    "FusedBatchNormV3",
    "BiasAdd",
    "Add",
    "AddV2",
    "AddN",
    "Sub",
    "Mul",
    "RealDiv",
    "Relu",
    "Relu6",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Sigmoid",
    "Tanh",
    "Swish",
    "swish",
    "SiLU",
    "HardSwish",
    "Hswish",
    "hswish",
    "HardSigmoid",
    "Hsigmoid",
    "hsigmoid",
    "MatMul",
    "ConcatV2",
    "Concat",
    "AvgPool",
    "MaxPool",
    "Mean",
    "Softmax",
    "Pad",
    "PadV2",
    "MirrorPad",
];

/// Whether the importer maps this TensorFlow op type.
pub(super) fn supports(op: &str) -> bool {
    SUPPORTED.contains(&op)
}

/// About how many tensors lowering a node of this op adds: its output and the weights nn-Meter
/// stripped (a batch norm's four, a convolution's or a bias's one). Sizes the graph once, so that
/// its lists are not doubled (and for a moment held three times over) as a large file is lowered.
pub(super) fn tensors_of(op: &str) -> usize {
    match op {
        "FusedBatchNorm" | "FusedBatchNormV2" | "FusedBatchNormV3" => 5,
        "Conv2D" | "DepthwiseConv2dNative" | "MatMul" | "BiasAdd" | "Swish" | "swish" | "SiLU" => 2,
        _ => 1,
    }
}

/// What a lowered IR node produced: the tensor, its shape in the file's NHWC layout, and how the
/// file's statements of that shape may differ from it.
#[derive(Clone)]
pub(super) struct Out {
    pub(super) tensor: TensorId,
    nhwc: Vec<usize>,
    rewrites: Rewrites,
}

impl Out {
    fn new(tensor: TensorId, nhwc: Vec<usize>) -> Out {
        Out {
            tensor,
            nhwc,
            rewrites: Rewrites::default(),
        }
    }
}

/// Lowers IR nodes into graph nodes; holds the graph being built.
pub(super) struct Builder {
    file: String,
    g: Graph,
    /// False when the input shape was overridden: the file's shapes were inferred for another input.
    check_stated: bool,
    /// The rewrites that may have changed the stated output of the node being lowered.
    own: Rewrites,
    shapes: ShapeTable,
}

fn show(d: &[usize]) -> String {
    format!("{d:?}")
}

fn show_dims(d: &Dims) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|x| x.map_or("?".into(), |v| v.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// NHWC → NCHW for 4-D shapes; other ranks have no layout.
fn nchw(nhwc: &[usize]) -> Vec<usize> {
    match nhwc {
        [n, h, w, c] => vec![*n, *c, *h, *w],
        s => s.to_vec(),
    }
}

/// An NHWC axis of a 4-D tensor as an NCHW axis.
fn nchw_axis(axis: usize, rank: usize) -> usize {
    if rank != 4 {
        return axis;
    }
    match axis {
        1 => 2,
        2 => 3,
        3 => 1,
        a => a,
    }
}

impl Builder {
    /// A builder for a graph named `name`; `check_stated` is false when the input shape is overridden.
    pub(super) fn new(file: &str, name: String, check_stated: bool) -> Builder {
        Builder {
            file: file.to_string(),
            g: Graph {
                name,
                ..Default::default()
            },
            check_stated,
            own: Rewrites::default(),
            shapes: ShapeTable::default(),
        }
    }

    /// Room for about this many tensors and nodes (a little more, for the estimate's misses).
    pub(super) fn reserve(&mut self, tensors: usize, nodes: usize) {
        self.g.tensors.reserve_exact(tensors + tensors / 32);
        self.g.nodes.reserve_exact(nodes + nodes / 32);
    }

    /// The graph built so far.
    pub(super) fn graph(&self) -> &Graph {
        &self.g
    }

    /// The finished graph, with these outputs.
    pub(super) fn finish_graph(mut self, outputs: Vec<TensorId>) -> Graph {
        self.g.outputs = outputs;
        self.g
    }

    fn shape_err(&self, node: &str, detail: String) -> ImportError {
        ImportError::Shape {
            file: self.file.clone(),
            node: node.to_string(),
            detail,
        }
    }

    fn tensor(&mut self, name: String, shape: Vec<usize>, is_weight: bool) -> TensorId {
        let shape = self.shapes.get(&shape);
        self.g.tensors.push(Tensor {
            name: name.into_boxed_str(),
            shape,
            dtype: DType::F32,
            is_weight,
        });
        self.g.tensors.len() - 1
    }

    fn push(
        &mut self,
        name: &str,
        op: &str,
        attrs: NodeAttrs,
        inputs: Vec<TensorId>,
        output: TensorId,
    ) {
        self.g.nodes.push(Node {
            name: name.into(),
            op: op.to_string(),
            attrs,
            inputs: inputs.into(),
            outputs: Box::new([output]),
        });
    }

    fn checked(&self, node: &str, nhwc: Vec<usize>) -> Result<Vec<usize>, ImportError> {
        let mut total: u64 = 1;
        for &d in &nhwc {
            total = total
                .checked_mul(d as u64)
                .filter(|&t| t <= MAX_ELEMENTS)
                .ok_or_else(|| {
                    self.shape_err(node, format!("shape {} is implausibly large", show(&nhwc)))
                })?;
        }
        Ok(nhwc)
    }

    /// Lowers one IR node; returns its output. `fixed` is the overriding input shape (NCHW) for a
    /// `Placeholder`; `rewrites` how the file's statements of this node's output may differ from it.
    pub(super) fn lower(
        &mut self,
        name: &str,
        n: &RawNode,
        inputs: &[Out],
        fixed: Option<&[usize]>,
        rewrites: &Rewrites,
    ) -> Result<Out, ImportError> {
        self.own = rewrites.clone();
        let mut out = self.lower_node(name, n, inputs, fixed)?;
        out.rewrites = rewrites.clone();
        Ok(out)
    }

    fn lower_node(
        &mut self,
        name: &str,
        n: &RawNode,
        inputs: &[Out],
        fixed: Option<&[usize]>,
    ) -> Result<Out, ImportError> {
        let a = n.attrs();
        let op = n.op();
        let err = |d: String| self.shape_err(name, d);
        let stated_out = n.stated_out().map_err(|e| err(e.to_string()))?;
        let stated_in = n.stated_in().map_err(|e| err(e.to_string()))?;
        let stated = stated_out.as_ref();
        match op {
            "Placeholder" => return self.placeholder(name, a, stated, fixed),
            "Const" => return self.constant(name, a, stated),
            _ => {}
        }

        // Weight constants still in the graph (nn-Meter strips most) are operands, not activations.
        let (acts, consts): (Vec<&Out>, Vec<&Out>) = inputs
            .iter()
            .partition(|o| !self.g.tensors[o.tensor].is_weight);
        let view = matches!(
            op,
            "Identity" | "Reshape" | "Squeeze" | "Flatten" | "ExpandDims"
        );
        if view && acts.is_empty() && consts.len() == 1 {
            // A view of a constant is the constant (TF reads weights through Identity).
            return Ok(consts[0].clone());
        }
        let Some(x) = acts.first().copied() else {
            return Err(ImportError::Malformed {
                file: self.file.clone(),
                detail: format!("node `{name}` ({op}) reads no activation"),
            });
        };
        self.check_inputs(name, &stated_in, &acts)?;
        let weight = consts.first().copied();
        match op {
            "Conv2D" | "DepthwiseConv2dNative" => self.conv(name, op, a, x, weight, stated),
            "AvgPool" | "MaxPool" => self.pool(name, op, a, x, stated),
            "FusedBatchNorm" | "FusedBatchNormV2" | "FusedBatchNormV3" => {
                self.batchnorm(name, a, x, stated)
            }
            "BiasAdd" => self.bias_add(name, x, stated),
            "Add" | "AddV2" | "AddN" | "Sub" | "Mul" | "RealDiv" => {
                self.elementwise(name, op, inputs, &acts, consts.is_empty(), stated)
            }
            "Relu" | "Relu6" | "LeakyRelu" | "Elu" | "Selu" | "Sigmoid" | "Tanh" | "HardSwish"
            | "Hswish" | "hswish" | "HardSigmoid" | "Hsigmoid" | "hsigmoid" | "Softmax" => {
                let (onnx, attrs) = unary(op, a, x.nhwc.len());
                self.same_shape(name, onnx, attrs, x, stated)
            }
            "Swish" | "swish" | "SiLU" => self.swish(name, x, stated),
            "MatMul" => self.matmul(name, a, x, weight, stated),
            "ConcatV2" | "Concat" => self.concat(name, a, &acts, stated),
            "Mean" => self.mean(name, a, x, stated),
            "Pad" | "PadV2" | "MirrorPad" => self.pad(name, a, x, stated),
            "Identity" => self.same_shape(name, "Identity", NodeAttrs::new(), x, stated),
            _ => self.reshape(name, a, x, stated),
        }
    }

    /// Checks the activation inputs against the shapes the file states for them.
    fn check_inputs(
        &self,
        name: &str,
        stated_in: &[Dims],
        acts: &[&Out],
    ) -> Result<(), ImportError> {
        if !self.check_stated {
            return Ok(());
        }
        for (i, (s, o)) in stated_in.iter().zip(acts).enumerate() {
            if !o.rewrites.explain(s, &o.nhwc) {
                return Err(self.shape_err(
                    name,
                    format!(
                        "input {i} is {} but the file says {}",
                        show(&o.nhwc),
                        show_dims(s)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks an output against the shape the file states for it.
    fn finish(
        &self,
        name: &str,
        tensor: TensorId,
        nhwc: Vec<usize>,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        if self.check_stated
            && let Some(s) = stated
            && !s.is_empty()
            && !self.own.explain(s, &nhwc)
        {
            return Err(self.shape_err(
                name,
                format!(
                    "the file says the output is {} but the inputs and attributes give {}",
                    show_dims(s),
                    show(&nhwc)
                ),
            ));
        }
        let nhwc = self.checked(name, nhwc)?;
        Ok(Out::new(tensor, nhwc))
    }

    fn constant(
        &mut self,
        name: &str,
        a: Attrs,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let shape = match a
            .ints("tensor_shape")
            .map_err(|e| self.shape_err(name, e.to_string()))?
        {
            Some(s) => s.iter().map(|&d| d.max(1) as usize).collect(),
            None => stated
                .map(|d| d.iter().map(|x| x.unwrap_or(1)).collect())
                .unwrap_or_default(),
        };
        let nhwc = self.checked(name, shape)?;
        let t = self.tensor(name.to_string(), nchw(&nhwc), true);
        Ok(Out::new(t, nhwc))
    }

    fn placeholder(
        &mut self,
        name: &str,
        a: Attrs,
        stated: Option<&Dims>,
        fixed: Option<&[usize]>,
    ) -> Result<Out, ImportError> {
        let nhwc: Vec<usize> = match fixed {
            // The override is NCHW, like every shape the CLI takes.
            Some([n, c, h, w]) => vec![*n, *h, *w, *c],
            Some(s) => s.to_vec(),
            None => {
                let dims: Dims = match a.dims("shape") {
                    Some(d) => d.map_err(|e| self.shape_err(name, format!("shape: {e}")))?,
                    None => stated.cloned().ok_or_else(|| {
                        self.shape_err(name, "the input has no shape; pass --input-shape".into())
                    })?,
                };
                let mut s = Vec::with_capacity(dims.len());
                for (i, d) in dims.iter().enumerate() {
                    match (i, d) {
                        (_, Some(d)) => s.push(*d),
                        // An unknown batch is one image, as nn-Meter predicts it.
                        (0, None) => s.push(1),
                        _ => {
                            return Err(self.shape_err(
                                name,
                                format!(
                                    "the input shape {} has an unknown dimension; pass --input-shape",
                                    show_dims(&dims)
                                ),
                            ));
                        }
                    }
                }
                s
            }
        };
        if nhwc.is_empty() || nhwc.contains(&0) {
            return Err(self.shape_err(name, format!("input shape {} is empty", show(&nhwc))));
        }
        let nhwc = self.checked(name, nhwc)?;
        let t = self.tensor(name.to_string(), nchw(&nhwc), false);
        self.g.inputs.push(t);
        Ok(Out::new(t, nhwc))
    }

    /// An op whose output has its input's shape.
    fn same_shape(
        &mut self,
        name: &str,
        onnx: &str,
        attrs: NodeAttrs,
        x: &Out,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let out = self.tensor(name.to_string(), nchw(&x.nhwc), false);
        self.push(name, onnx, attrs, vec![x.tensor], out);
        self.finish(name, out, x.nhwc.clone(), stated)
    }

    fn batchnorm(
        &mut self,
        name: &str,
        a: Attrs,
        x: &Out,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let xs = x.nhwc.clone();
        let c = *xs.last().unwrap_or(&1);
        let mut ins = vec![x.tensor];
        for p in ["scale", "offset", "mean", "variance"] {
            ins.push(self.tensor(format!("{name}/{p}"), vec![c], true));
        }
        let out = self.tensor(name.to_string(), nchw(&xs), false);
        let mut attrs = NodeAttrs::new();
        attrs.insert(
            "epsilon".into(),
            Attr::Float(a.float("epsilon").unwrap_or(1e-3)),
        );
        self.push(name, "BatchNormalization", attrs, ins, out);
        self.finish(name, out, xs, stated)
    }

    fn bias_add(&mut self, name: &str, x: &Out, stated: Option<&Dims>) -> Result<Out, ImportError> {
        let xs = x.nhwc.clone();
        let c = *xs.last().unwrap_or(&1);
        // Broadcasts over channels: [C,1,1] against NCHW, [C] against [N,C].
        let bshape = if xs.len() == 4 {
            vec![c, 1, 1]
        } else {
            vec![c]
        };
        let bias = self.tensor(format!("{name}/bias"), bshape, true);
        let out = self.tensor(name.to_string(), nchw(&xs), false);
        self.push(name, "Add", NodeAttrs::new(), vec![x.tensor, bias], out);
        self.finish(name, out, xs, stated)
    }

    /// Add, AddV2, AddN, Sub, Mul, RealDiv: numpy broadcasting over the activations; constant operands
    /// (scalars, per-channel vectors) broadcast into them.
    fn elementwise(
        &mut self,
        name: &str,
        op: &str,
        inputs: &[Out],
        acts: &[&Out],
        no_consts: bool,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let onnx = match op {
            "Sub" => "Sub",
            "Mul" => "Mul",
            "RealDiv" => "Div",
            _ => "Add",
        };
        let mut shape = acts[0].nhwc.clone();
        for o in &acts[1..] {
            shape = broadcast(&shape, &o.nhwc).ok_or_else(|| {
                self.shape_err(
                    name,
                    format!(
                        "operands {} and {} do not broadcast",
                        show(&shape),
                        show(&o.nhwc)
                    ),
                )
            })?;
        }
        let mut ins: Vec<TensorId> = inputs.iter().map(|o| o.tensor).collect();
        if acts.len() == 1 && no_consts {
            // nn-Meter stripped the constant operand: a scalar stands in for it.
            ins.push(self.tensor(format!("{name}/operand"), vec![1], true));
        }
        let out = self.tensor(name.to_string(), nchw(&shape), false);
        if op == "AddN" && ins.len() > 2 {
            // ONNX Add is binary: AddN of k operands is k-1 additions, as TF runs it.
            let mut acc = ins[0];
            for (i, &t) in ins[1..].iter().enumerate() {
                let last = i + 2 == ins.len();
                let o = if last {
                    out
                } else {
                    self.tensor(format!("{name}/sum{i}"), nchw(&shape), false)
                };
                self.push(
                    &format!("{name}/{i}"),
                    "Add",
                    NodeAttrs::new(),
                    vec![acc, t],
                    o,
                );
                acc = o;
            }
        } else {
            self.push(name, onnx, NodeAttrs::new(), ins, out);
        }
        self.finish(name, out, shape, stated)
    }

    fn swish(&mut self, name: &str, x: &Out, stated: Option<&Dims>) -> Result<Out, ImportError> {
        // ONNX has no Swish: exporters write x·sigmoid(x), which is what runtimes fuse.
        let xs = x.nhwc.clone();
        let sig = self.tensor(format!("{name}/sigmoid"), nchw(&xs), false);
        self.push(
            &format!("{name}/sigmoid"),
            "Sigmoid",
            NodeAttrs::new(),
            vec![x.tensor],
            sig,
        );
        let out = self.tensor(name.to_string(), nchw(&xs), false);
        self.push(name, "Mul", NodeAttrs::new(), vec![x.tensor, sig], out);
        self.finish(name, out, xs, stated)
    }
}

/// The ONNX op and attributes of a one-input TF op.
fn unary(op: &str, a: Attrs, rank: usize) -> (&'static str, NodeAttrs) {
    let mut attrs = NodeAttrs::new();
    let onnx = match op {
        "Relu" => "Relu",
        "Relu6" => {
            attrs.insert("min".into(), Attr::Float(0.0));
            attrs.insert("max".into(), Attr::Float(6.0));
            "Clip"
        }
        "LeakyRelu" => {
            attrs.insert("alpha".into(), Attr::Float(a.float("alpha").unwrap_or(0.2)));
            "LeakyRelu"
        }
        "Elu" => "Elu",
        "Selu" => "Selu",
        "Sigmoid" => "Sigmoid",
        "Tanh" => "Tanh",
        "HardSwish" | "Hswish" | "hswish" => "HardSwish",
        "HardSigmoid" | "Hsigmoid" | "hsigmoid" => "HardSigmoid",
        _ => {
            // Softmax: TF normalises over the last axis, which is channels in NHWC.
            let last = rank.saturating_sub(1);
            attrs.insert("axis".into(), Attr::Int(nchw_axis(last, rank) as i64));
            "Softmax"
        }
    };
    (onnx, attrs)
}
