//! nn-Meter IR import: the JSON graphs of Microsoft's nn-Meter (an object keyed by node name, each node
//! with `inbounds`, `outbounds` and `attr{name, type, input_shape, output_shape, attr{…}}`, TensorFlow op
//! types, NHWC shapes) mapped onto the graph IR's ONNX ops, NCHW layout and weight tensors.
//!
//! nn-Meter strips the weight constants from its graphs, so the weights are synthesised from the
//! attributes (`weight_shape`, `kernel_shape`, channel counts of the shapes) with the shapes ONNX would
//! give them: MACs, parameters and weight bytes come out as for the original model. Shapes are inferred
//! here with TensorFlow's rules, in NHWC, and checked against the shapes the file states.
use super::ImportError;
use super::graph::{Attr, DType, Graph, Node, Tensor, TensorId};
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

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

#[derive(Deserialize)]
struct RawNode {
    #[serde(default)]
    inbounds: Vec<String>,
    #[serde(default)]
    outbounds: Vec<String>,
    attr: RawAttr,
}

#[derive(Deserialize)]
struct RawAttr {
    #[serde(rename = "type")]
    op: String,
    #[serde(default)]
    input_shape: Value,
    #[serde(default)]
    output_shape: Value,
    #[serde(default)]
    attr: serde_json::Map<String, Value>,
}

/// The top-level object with its keys in file order: `serde_json`'s own map sorts them (nn-Meter writes
/// them sorted anyway, but a file in execution order should keep it) and would drop duplicate keys.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object keyed by node name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = m.next_entry::<String, Value>()? {
                    v.push(entry);
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// A dimension as the file gives it: `None` where unknown (`-1`, `null`, `0`, as TensorFlow writes them).
type Dims = Vec<Option<usize>>;

/// What an imported IR node produced: the tensor, and its shape in the file's NHWC layout.
#[derive(Clone)]
struct Out {
    tensor: TensorId,
    nhwc: Vec<usize>,
}

/// Imports an nn-Meter IR graph from its bytes. `source` names the file in errors; `input_shape`, when
/// given, fixes the shape of the first `Placeholder` in NCHW (as for ONNX), and then the shapes stated in
/// the file, which were inferred for another input, are no longer checked.
pub fn import(
    bytes: &[u8],
    source: &str,
    input_shape: Option<&[usize]>,
) -> Result<Graph, ImportError> {
    let file = source.to_string();
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ImportError::Empty { file });
    }
    let malformed = |detail: String| ImportError::Malformed {
        file: file.clone(),
        detail,
    };
    let Ordered(entries) = serde_json::from_slice(bytes)
        .map_err(|e| malformed(format!("not a valid nn-Meter IR JSON object ({e})")))?;
    if entries.is_empty() {
        return Err(malformed("the graph has no nodes".into()));
    }
    let mut names: Vec<String> = Vec::with_capacity(entries.len());
    let mut nodes: Vec<RawNode> = Vec::with_capacity(entries.len());
    let mut index: HashMap<String, usize> = HashMap::new();
    for (name, value) in entries {
        if index.contains_key(&name) {
            return Err(malformed(format!("node `{name}` appears twice")));
        }
        let node: RawNode = serde_json::from_value(value)
            .map_err(|e| malformed(format!("node `{name}`: not an nn-Meter IR node ({e})")))?;
        index.insert(name.clone(), names.len());
        names.push(name);
        nodes.push(node);
    }
    for (name, n) in names.iter().zip(&nodes) {
        if !SUPPORTED.contains(&n.attr.op.as_str()) {
            return Err(ImportError::UnsupportedOp {
                file,
                node: name.clone(),
                op: n.attr.op.clone(),
            });
        }
    }
    let preds = edges(&names, &nodes, &index).map_err(malformed)?;
    let order = topo_order(&preds).map_err(|ix| ImportError::Cycle {
        file: file.clone(),
        node: names[ix].clone(),
    })?;

    let mut b = Builder {
        file: file.clone(),
        g: Graph {
            name: graph_name(source),
            ..Default::default()
        },
        check_stated: input_shape.is_none(),
    };
    let mut outs: Vec<Option<Out>> = vec![None; nodes.len()];
    let mut override_shape = input_shape;
    for &ix in &order {
        let inputs: Vec<Out> = preds[ix]
            .iter()
            .map(|&p| outs[p].clone())
            .collect::<Option<_>>()
            .ok_or_else(|| malformed(format!("node `{}`: an input has no value", names[ix])))?;
        let fixed = if nodes[ix].attr.op == "Placeholder" {
            override_shape.take()
        } else {
            None
        };
        outs[ix] = Some(b.lower(&names[ix], &nodes[ix], &inputs, fixed)?);
    }
    let mut consumed = vec![false; nodes.len()];
    for p in &preds {
        for &i in p {
            consumed[i] = true;
        }
    }
    for (ix, out) in outs.iter().enumerate() {
        if let Some(o) = out
            && !consumed[ix]
            && !b.g.tensors[o.tensor].is_weight
            && !b.g.inputs.contains(&o.tensor)
        {
            b.g.outputs.push(o.tensor);
        }
    }
    if b.g.inputs.is_empty() {
        return Err(malformed(
            "no `Placeholder` node: the graph has no input".into(),
        ));
    }
    if b.g.nodes.is_empty() {
        return Err(malformed("the graph computes nothing".into()));
    }
    Ok(b.g)
}

fn graph_name(source: &str) -> String {
    std::path::Path::new(source)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Each node's predecessors (indices), from `inbounds`; `outbounds` must agree with them.
fn edges(
    names: &[String],
    nodes: &[RawNode],
    index: &HashMap<String, usize>,
) -> Result<Vec<Vec<usize>>, String> {
    let mut preds = Vec::with_capacity(nodes.len());
    for (name, n) in names.iter().zip(nodes) {
        let mut p = Vec::with_capacity(n.inbounds.len());
        for i in &n.inbounds {
            let ix = *index.get(i).ok_or_else(|| {
                format!("node `{name}` reads `{i}`, which is not a node of the file")
            })?;
            p.push(ix);
        }
        preds.push(p);
    }
    for (name, n) in names.iter().zip(nodes) {
        for o in &n.outbounds {
            let ix = *index.get(o).ok_or_else(|| {
                format!("node `{name}` lists `{o}` as an outbound, which is not a node of the file")
            })?;
            if !nodes[ix].inbounds.contains(name) {
                return Err(format!(
                    "node `{name}` lists `{o}` as an outbound, but `{o}` does not read it"
                ));
            }
        }
    }
    Ok(preds)
}

/// Kahn's algorithm, keeping file order where it is valid; on a cycle, the index of a node on it.
fn topo_order(preds: &[Vec<usize>]) -> Result<Vec<usize>, usize> {
    let n = preds.len();
    let mut indeg: Vec<usize> = preds.iter().map(Vec::len).collect();
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, p) in preds.iter().enumerate() {
        for &q in p {
            succ[q].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &s in &succ[i] {
            indeg[s] -= 1;
            if indeg[s] == 0 {
                ready.insert(s);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Nodes left over are on a cycle or downstream of one: walking predecessors that are left over
    // must come back to a node already seen, and that one is on the cycle.
    let start = (0..n).find(|&i| indeg[i] > 0).unwrap_or(0);
    let mut seen = vec![false; n];
    let mut at = start;
    while !seen[at] {
        seen[at] = true;
        match preds[at].iter().find(|&&p| indeg[p] > 0) {
            Some(&p) => at = p,
            None => break,
        }
    }
    Err(at)
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

fn dim_of(v: &Value) -> Option<Option<usize>> {
    match v {
        Value::Null => Some(None),
        Value::Number(n) => {
            let f = n.as_f64()?;
            if f.fract() != 0.0 {
                None
            } else if f <= 0.0 {
                Some(None)
            } else if f > u32::MAX as f64 {
                None
            } else {
                Some(Some(f as usize))
            }
        }
        _ => None,
    }
}

/// A list of shapes (`[[1,224,224,3]]`, as nn-Meter writes them) or a single shape.
fn shapes_of(v: &Value) -> Result<Vec<Dims>, String> {
    let Value::Array(items) = v else {
        return match v {
            Value::Null => Ok(vec![]),
            _ => Err(format!("`{v}` is not a list of shapes")),
        };
    };
    if items.iter().all(|x| !x.is_array()) && !items.is_empty() {
        return Ok(vec![dims_of(v)?]);
    }
    items.iter().map(dims_of).collect()
}

fn dims_of(v: &Value) -> Result<Dims, String> {
    match v {
        Value::Array(d) => d
            .iter()
            .map(|x| dim_of(x).ok_or_else(|| format!("`{x}` is not a dimension")))
            .collect(),
        _ => Err(format!("`{v}` is not a shape")),
    }
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

fn agrees(stated: &Dims, actual: &[usize]) -> bool {
    stated.len() == actual.len()
        && stated
            .iter()
            .zip(actual)
            .all(|(s, a)| s.is_none_or(|s| s == *a))
}

/// One integer attribute (nn-Meter writes some as one-element lists).
fn int_attr(a: &serde_json::Map<String, Value>, key: &str) -> Option<i64> {
    match a.get(key)? {
        Value::Array(v) if v.len() == 1 => v[0].as_i64(),
        v => v.as_i64(),
    }
}

fn ints_attr(a: &serde_json::Map<String, Value>, key: &str) -> Result<Option<Vec<i64>>, String> {
    let Some(v) = a.get(key) else {
        return Ok(None);
    };
    let flat: Vec<&Value> = match v {
        Value::Array(items) => items
            .iter()
            .flat_map(|x| match x {
                Value::Array(inner) => inner.iter().collect::<Vec<_>>(),
                other => vec![other],
            })
            .collect(),
        other => vec![other],
    };
    flat.iter()
        .map(|x| {
            x.as_i64()
                .ok_or_else(|| format!("attribute `{key}` = {v} is not a list of integers"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn str_attr<'a>(a: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    a.get(key)?.as_str()
}

fn float_attr(a: &serde_json::Map<String, Value>, key: &str) -> Option<f32> {
    a.get(key)?.as_f64().map(|f| f as f32)
}

/// The spatial pair of a TF window attribute: `[1, h, w, 1]` (as in the GraphDef), `[h, w]` (as nn-Meter
/// rewrites it) or one number for both.
fn spatial_pair(
    a: &serde_json::Map<String, Value>,
    key: &str,
    default: usize,
) -> Result<[usize; 2], String> {
    let v = match ints_attr(a, key)? {
        None => return Ok([default, default]),
        Some(v) => v,
    };
    let pair = match v.as_slice() {
        [_, h, w, _] => [*h, *w],
        [h, w] => [*h, *w],
        [x] => [*x, *x],
        _ => return Err(format!("attribute `{key}` = {v:?} is not a 2-D window")),
    };
    if pair.iter().any(|&x| x < 1 || x > u32::MAX as i64) {
        return Err(format!("attribute `{key}` = {v:?} must be positive"));
    }
    Ok([pair[0] as usize, pair[1] as usize])
}

/// Lowers IR nodes into graph nodes; holds the graph being built.
struct Builder {
    file: String,
    g: Graph,
    /// False when the input shape was overridden: the file's shapes were inferred for another input.
    check_stated: bool,
}

/// A window op's geometry along one spatial axis.
struct Axis {
    out: usize,
    pad_begin: usize,
    pad_end: usize,
}

impl Builder {
    fn shape_err(&self, node: &str, detail: String) -> ImportError {
        ImportError::Shape {
            file: self.file.clone(),
            node: node.to_string(),
            detail,
        }
    }

    fn tensor(&mut self, name: String, shape: Vec<usize>, is_weight: bool) -> TensorId {
        self.g.tensors.push(Tensor {
            name,
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
        attrs: BTreeMap<String, Attr>,
        inputs: Vec<TensorId>,
        output: TensorId,
    ) {
        self.g.nodes.push(Node {
            name: name.to_string(),
            op: op.to_string(),
            attrs,
            inputs,
            outputs: vec![output],
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
    /// `Placeholder`.
    fn lower(
        &mut self,
        name: &str,
        n: &RawNode,
        inputs: &[Out],
        fixed: Option<&[usize]>,
    ) -> Result<Out, ImportError> {
        let a = &n.attr.attr;
        let op = n.attr.op.as_str();
        let err = |d: String| self.shape_err(name, d);
        let stated_out = shapes_of(&n.attr.output_shape)
            .map_err(|e| err(format!("output_shape: {e}")))?
            .into_iter()
            .next();
        let stated_in =
            shapes_of(&n.attr.input_shape).map_err(|e| err(format!("input_shape: {e}")))?;

        match op {
            "Placeholder" => return self.placeholder(name, a, stated_out.as_ref(), fixed),
            "Const" => {
                let shape = match ints_attr(a, "tensor_shape").map_err(&err)? {
                    Some(s) => s.iter().map(|&d| d.max(1) as usize).collect(),
                    None => stated_out
                        .as_ref()
                        .map(|d| d.iter().map(|x| x.unwrap_or(1)).collect())
                        .unwrap_or_default(),
                };
                let nhwc = self.checked(name, shape)?;
                let t = self.tensor(name.to_string(), nchw(&nhwc), true);
                return Ok(Out { tensor: t, nhwc });
            }
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
        if self.check_stated {
            for (i, (s, o)) in stated_in.iter().zip(&acts).enumerate() {
                if !agrees(s, &o.nhwc) {
                    return Err(err(format!(
                        "input {i} is {} but the file says {}",
                        show(&o.nhwc),
                        show_dims(s)
                    )));
                }
            }
        }
        let xs = x.nhwc.clone();
        match op {
            "Conv2D" | "DepthwiseConv2dNative" => {
                self.conv(name, op, a, x, consts.first().copied(), stated_out.as_ref())
            }
            "AvgPool" | "MaxPool" => self.pool(name, op, a, x, stated_out.as_ref()),
            "FusedBatchNorm" | "FusedBatchNormV2" | "FusedBatchNormV3" => {
                let c = *xs.last().unwrap_or(&1);
                let mut ins = vec![x.tensor];
                for p in ["scale", "offset", "mean", "variance"] {
                    ins.push(self.tensor(format!("{name}/{p}"), vec![c], true));
                }
                let out = self.tensor(name.to_string(), nchw(&xs), false);
                let mut attrs = BTreeMap::new();
                attrs.insert(
                    "epsilon".into(),
                    Attr::Float(float_attr(a, "epsilon").unwrap_or(1e-3)),
                );
                self.push(name, "BatchNormalization", attrs, ins, out);
                self.finish(name, out, xs, stated_out.as_ref())
            }
            "BiasAdd" => {
                let c = *xs.last().unwrap_or(&1);
                // Broadcasts over channels: [C,1,1] against NCHW, [C] against [N,C].
                let bshape = if xs.len() == 4 {
                    vec![c, 1, 1]
                } else {
                    vec![c]
                };
                let bias = self.tensor(format!("{name}/bias"), bshape, true);
                let out = self.tensor(name.to_string(), nchw(&xs), false);
                self.push(name, "Add", BTreeMap::new(), vec![x.tensor, bias], out);
                self.finish(name, out, xs, stated_out.as_ref())
            }
            "Add" | "AddV2" | "AddN" | "Sub" | "Mul" | "RealDiv" => {
                let onnx = match op {
                    "Sub" => "Sub",
                    "Mul" => "Mul",
                    "RealDiv" => "Div",
                    _ => "Add",
                };
                let mut shape = xs.clone();
                for o in &acts[1..] {
                    shape = broadcast(&shape, &o.nhwc).ok_or_else(|| {
                        err(format!(
                            "operands {} and {} do not broadcast",
                            show(&shape),
                            show(&o.nhwc)
                        ))
                    })?;
                }
                let mut ins: Vec<TensorId> = inputs.iter().map(|o| o.tensor).collect();
                if acts.len() == 1 && consts.is_empty() {
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
                            BTreeMap::new(),
                            vec![acc, t],
                            o,
                        );
                        acc = o;
                    }
                } else {
                    self.push(name, onnx, BTreeMap::new(), ins, out);
                }
                self.finish(name, out, shape, stated_out.as_ref())
            }
            "Relu" | "Relu6" | "LeakyRelu" | "Elu" | "Selu" | "Sigmoid" | "Tanh" | "HardSwish"
            | "Hswish" | "hswish" | "HardSigmoid" | "Hsigmoid" | "hsigmoid" | "Softmax" => {
                let (onnx, attrs) = unary(op, a, xs.len());
                let out = self.tensor(name.to_string(), nchw(&xs), false);
                self.push(name, onnx, attrs, vec![x.tensor], out);
                self.finish(name, out, xs, stated_out.as_ref())
            }
            "Swish" | "swish" | "SiLU" => {
                // ONNX has no Swish: exporters write x·sigmoid(x), which is what runtimes fuse.
                let sig = self.tensor(format!("{name}/sigmoid"), nchw(&xs), false);
                self.push(
                    &format!("{name}/sigmoid"),
                    "Sigmoid",
                    BTreeMap::new(),
                    vec![x.tensor],
                    sig,
                );
                let out = self.tensor(name.to_string(), nchw(&xs), false);
                self.push(name, "Mul", BTreeMap::new(), vec![x.tensor, sig], out);
                self.finish(name, out, xs, stated_out.as_ref())
            }
            "MatMul" => self.matmul(name, a, x, consts.first().copied(), stated_out.as_ref()),
            "ConcatV2" | "Concat" => self.concat(name, a, &acts, stated_out.as_ref()),
            "Mean" => self.mean(name, a, x, stated_out.as_ref()),
            "Pad" | "PadV2" | "MirrorPad" => self.pad(name, a, x, stated_out.as_ref()),
            "Identity" => {
                let out = self.tensor(name.to_string(), nchw(&xs), false);
                self.push(name, "Identity", BTreeMap::new(), vec![x.tensor], out);
                self.finish(name, out, xs, stated_out.as_ref())
            }
            _ => self.reshape(name, a, x, stated_out.as_ref()),
        }
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
            && !agrees(s, &nhwc)
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
        Ok(Out { tensor, nhwc })
    }

    fn placeholder(
        &mut self,
        name: &str,
        a: &serde_json::Map<String, Value>,
        stated: Option<&Dims>,
        fixed: Option<&[usize]>,
    ) -> Result<Out, ImportError> {
        let nhwc: Vec<usize> = match fixed {
            // The override is NCHW, like every shape the CLI takes.
            Some([n, c, h, w]) => vec![*n, *h, *w, *c],
            Some(s) => s.to_vec(),
            None => {
                let dims: Dims = match a.get("shape") {
                    Some(v) => {
                        dims_of(v).map_err(|e| self.shape_err(name, format!("shape: {e}")))?
                    }
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
        Ok(Out { tensor: t, nhwc })
    }

    /// Output size and padding of a window along one axis, TF's SAME/VALID rules; where the file states
    /// another output size that some padding smaller than the window gives, that is taken (nn-Meter's
    /// own shape inference computes VALID outputs of k×k convolutions as if k were 1).
    #[allow(clippy::too_many_arguments)]
    fn window_axis(
        &self,
        name: &str,
        what: &str,
        input: usize,
        k: usize,
        stride: usize,
        dilation: usize,
        padding: &str,
        stated: Option<usize>,
    ) -> Result<Axis, ImportError> {
        // Every factor is below 2^32 (attributes are checked), so none of this overflows a u64.
        let ext = dilation
            .saturating_mul(k.saturating_sub(1))
            .saturating_add(1);
        let (out, total) = match padding {
            "VALID" => {
                if input < ext {
                    return Err(self.shape_err(
                        name,
                        format!(
                            "{what}: a window of {ext} does not fit the input of {input} (VALID)"
                        ),
                    ));
                }
                ((input - ext) / stride + 1, 0)
            }
            _ => {
                let out = input.div_ceil(stride);
                let covered = (out - 1).saturating_mul(stride).saturating_add(ext);
                (out, covered.saturating_sub(input))
            }
        };
        let (out, total) = match stated {
            Some(s) if self.check_stated && s != out => {
                let need = (s - 1).saturating_mul(stride).saturating_add(ext);
                let total = need.checked_sub(input).filter(|&t| t < ext).ok_or_else(|| {
                    self.shape_err(
                        name,
                        format!(
                            "{what}: the file says the output is {s}, but a window of {ext} with stride \
                             {stride} over {input} gives {out} ({padding}) and no padding gives {s}"
                        ),
                    )
                })?;
                (s, total)
            }
            _ => (out, total),
        };
        Ok(Axis {
            out,
            pad_begin: total / 2,
            pad_end: total - total / 2,
        })
    }

    fn conv(
        &mut self,
        name: &str,
        op: &str,
        a: &serde_json::Map<String, Value>,
        x: &Out,
        weight_in: Option<&Out>,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        let [n, h, w, c] = x.nhwc[..] else {
            return Err(err(format!("input {} is not 4-D NHWC", show(&x.nhwc))));
        };
        // Weight as TF holds it: [kh, kw, cin, cout] (depthwise: [kh, kw, cin, multiplier]).
        let wshape: Vec<usize> = match ints_attr(a, "weight_shape").map_err(&err)? {
            Some(v) => v.iter().map(|&d| d.max(0) as usize).collect(),
            None => {
                match weight_in {
                    Some(wi) => wi.nhwc.clone(),
                    None => {
                        let k = spatial_pair(a, "kernel_shape", 0).map_err(&err)?;
                        let last = stated.and_then(|s| s.last().copied().flatten()).ok_or_else(|| {
                        err("no weight_shape, and no output_shape to tell the output channels".into())
                    })?;
                        let mult = if op == "Conv2D" {
                            last
                        } else {
                            last / c.max(1)
                        };
                        vec![k[0], k[1], c, mult]
                    }
                }
            }
        };
        let [kh, kw, wcin, wcout] = wshape[..] else {
            return Err(err(format!("weight shape {} is not 4-D", show(&wshape))));
        };
        if [kh, kw, wcin, wcout]
            .iter()
            .any(|&d| d == 0 || d > u32::MAX as usize)
        {
            return Err(err(format!(
                "weight shape {} is not a weight shape",
                show(&wshape)
            )));
        }
        let (group, cout, onnx_w) = if op == "Conv2D" {
            if c % wcin != 0 {
                return Err(err(format!(
                    "the weight {} wants {wcin} input channels (or a divisor of the input's), \
                     the input has {c}",
                    show(&wshape)
                )));
            }
            (c / wcin, wcout, vec![wcout, wcin, kh, kw])
        } else {
            if wcin != c {
                return Err(err(format!(
                    "the depthwise weight {} wants {wcin} input channels, the input has {c}",
                    show(&wshape)
                )));
            }
            let cout = c.saturating_mul(wcout);
            (c, cout, vec![cout, 1, kh, kw])
        };
        let s = spatial_pair(a, "strides", 1).map_err(&err)?;
        let d = spatial_pair(a, "dilations", 1).map_err(&err)?;
        let padding = str_attr(a, "padding").unwrap_or("SAME");
        let st = |i: usize| stated.and_then(|s| s.get(i).copied().flatten());
        let ah = self.window_axis(name, "height", h, kh, s[0], d[0], padding, st(1))?;
        let aw = self.window_axis(name, "width", w, kw, s[1], d[1], padding, st(2))?;
        let out_nhwc = vec![n, ah.out, aw.out, cout];
        let weight = match weight_in {
            Some(wi) => wi.tensor,
            None => {
                let w = self.checked(name, onnx_w)?;
                self.tensor(format!("{name}/weight"), w, true)
            }
        };
        let out = self.tensor(name.to_string(), nchw(&out_nhwc), false);
        let mut attrs = BTreeMap::new();
        attrs.insert(
            "kernel_shape".into(),
            Attr::Ints(vec![kh as i64, kw as i64]),
        );
        attrs.insert("strides".into(), Attr::Ints(vec![s[0] as i64, s[1] as i64]));
        attrs.insert(
            "dilations".into(),
            Attr::Ints(vec![d[0] as i64, d[1] as i64]),
        );
        attrs.insert(
            "pads".into(),
            Attr::Ints(vec![
                ah.pad_begin as i64,
                aw.pad_begin as i64,
                ah.pad_end as i64,
                aw.pad_end as i64,
            ]),
        );
        attrs.insert("group".into(), Attr::Int(group as i64));
        self.push(name, "Conv", attrs, vec![x.tensor, weight], out);
        self.finish(name, out, out_nhwc, stated)
    }

    fn pool(
        &mut self,
        name: &str,
        op: &str,
        a: &serde_json::Map<String, Value>,
        x: &Out,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        let [n, h, w, c] = x.nhwc[..] else {
            return Err(err(format!("input {} is not 4-D NHWC", show(&x.nhwc))));
        };
        let k = spatial_pair(a, "ksize", 1).map_err(&err)?;
        let s = spatial_pair(a, "strides", 1).map_err(&err)?;
        let padding = str_attr(a, "padding").unwrap_or("VALID");
        let st = |i: usize| stated.and_then(|s| s.get(i).copied().flatten());
        let ah = self.window_axis(name, "height", h, k[0], s[0], 1, padding, st(1))?;
        let aw = self.window_axis(name, "width", w, k[1], s[1], 1, padding, st(2))?;
        let out_nhwc = vec![n, ah.out, aw.out, c];
        let out = self.tensor(name.to_string(), nchw(&out_nhwc), false);
        let mut attrs = BTreeMap::new();
        attrs.insert(
            "kernel_shape".into(),
            Attr::Ints(vec![k[0] as i64, k[1] as i64]),
        );
        attrs.insert("strides".into(), Attr::Ints(vec![s[0] as i64, s[1] as i64]));
        attrs.insert(
            "pads".into(),
            Attr::Ints(vec![
                ah.pad_begin as i64,
                aw.pad_begin as i64,
                ah.pad_end as i64,
                aw.pad_end as i64,
            ]),
        );
        if op == "AvgPool" {
            // TF averages over the valid part of the window only.
            attrs.insert("count_include_pad".into(), Attr::Int(0));
        }
        let onnx = if op == "AvgPool" {
            "AveragePool"
        } else {
            "MaxPool"
        };
        self.push(name, onnx, attrs, vec![x.tensor], out);
        self.finish(name, out, out_nhwc, stated)
    }

    fn matmul(
        &mut self,
        name: &str,
        a: &serde_json::Map<String, Value>,
        x: &Out,
        weight_in: Option<&Out>,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        let [m, k] = x.nhwc[..] else {
            return Err(err(format!(
                "MatMul input {} is not 2-D (flatten it first)",
                show(&x.nhwc)
            )));
        };
        let trans_b = a
            .get("transpose_b")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let nout = match (ints_attr(a, "weight_shape").map_err(&err)?, weight_in) {
            (Some(ws), _) => match ws[..] {
                [wk, wn] => {
                    let (wk, wn) = if trans_b { (wn, wk) } else { (wk, wn) };
                    if wk.max(0) as usize != k {
                        return Err(err(format!(
                            "the weight {ws:?} wants {wk} inputs, the input has {k}"
                        )));
                    }
                    wn.max(0) as usize
                }
                _ => return Err(err(format!("weight shape {ws:?} is not 2-D"))),
            },
            (None, Some(wi)) => {
                let [wk, wn] = wi.nhwc[..] else {
                    return Err(err(format!("weight {} is not 2-D", show(&wi.nhwc))));
                };
                let (wk, wn) = if trans_b { (wn, wk) } else { (wk, wn) };
                if wk != k {
                    return Err(err(format!(
                        "the weight {} wants {wk} inputs, the input has {k}",
                        show(&wi.nhwc)
                    )));
                }
                wn
            }
            (None, None) => stated
                .and_then(|s| s.last().copied().flatten())
                .ok_or_else(|| {
                    err("no weight_shape, and no output_shape to tell the output size".into())
                })?,
        };
        if nout == 0 {
            return Err(err("the output size is zero".into()));
        }
        let weight = match weight_in {
            Some(wi) => wi.tensor,
            None => {
                let w = self.checked(name, vec![k, nout])?;
                self.tensor(format!("{name}/weight"), w, true)
            }
        };
        let out_nhwc = vec![m, nout];
        let out = self.tensor(name.to_string(), out_nhwc.clone(), false);
        self.push(name, "MatMul", BTreeMap::new(), vec![x.tensor, weight], out);
        self.finish(name, out, out_nhwc, stated)
    }

    fn concat(
        &mut self,
        name: &str,
        a: &serde_json::Map<String, Value>,
        acts: &[&Out],
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        let first = &acts[0].nhwc;
        let rank = first.len() as i64;
        let axis = int_attr(a, "axis").unwrap_or(-1);
        let axis = if axis < 0 { axis + rank } else { axis };
        if axis < 0 || axis >= rank {
            return Err(err(format!("axis {axis} is out of range for rank {rank}")));
        }
        let axis = axis as usize;
        let mut out_nhwc = first.clone();
        for o in &acts[1..] {
            let same_rest = o.nhwc.len() == first.len()
                && o.nhwc
                    .iter()
                    .zip(first)
                    .enumerate()
                    .all(|(i, (p, q))| i == axis || p == q);
            if !same_rest {
                return Err(err(format!(
                    "inputs {} and {} differ outside the concatenation axis {axis}",
                    show(first),
                    show(&o.nhwc)
                )));
            }
            out_nhwc[axis] += o.nhwc[axis];
        }
        let out = self.tensor(name.to_string(), nchw(&out_nhwc), false);
        let mut attrs = BTreeMap::new();
        attrs.insert(
            "axis".into(),
            Attr::Int(nchw_axis(axis, first.len()) as i64),
        );
        let ins = acts.iter().map(|o| o.tensor).collect();
        self.push(name, "Concat", attrs, ins, out);
        self.finish(name, out, out_nhwc, stated)
    }

    fn mean(
        &mut self,
        name: &str,
        a: &serde_json::Map<String, Value>,
        x: &Out,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        let rank = x.nhwc.len() as i64;
        let raw = ints_attr(a, "reduction_indices")
            .map_err(&err)?
            .or(ints_attr(a, "axis").map_err(&err)?)
            .unwrap_or_else(|| vec![1, 2]);
        let mut axes = Vec::new();
        for r in raw {
            let ax = if r < 0 { r + rank } else { r };
            if ax < 0 || ax >= rank {
                return Err(err(format!(
                    "reduction axis {r} is out of range for rank {rank}"
                )));
            }
            if !axes.contains(&(ax as usize)) {
                axes.push(ax as usize);
            }
        }
        axes.sort_unstable();
        // nn-Meter does not keep TF's keep_dims; the stated output rank tells it.
        let keep = match a.get("keep_dims").or(a.get("keepdims")) {
            Some(v) => v.as_bool().unwrap_or(v.as_i64() == Some(1)),
            None => stated.is_some_and(|s| s.len() == x.nhwc.len()),
        };
        let out_nhwc: Vec<usize> = x
            .nhwc
            .iter()
            .enumerate()
            .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        let out_shape = if keep {
            nchw(&out_nhwc)
        } else {
            out_nhwc.clone()
        };
        let out = self.tensor(name.to_string(), out_shape, false);
        let spatial = x.nhwc.len() == 4 && axes == [1, 2];
        if spatial && keep {
            self.push(
                name,
                "GlobalAveragePool",
                BTreeMap::new(),
                vec![x.tensor],
                out,
            );
        } else {
            let mut attrs = BTreeMap::new();
            let mapped: Vec<i64> = axes
                .iter()
                .map(|&ax| nchw_axis(ax, x.nhwc.len()) as i64)
                .collect();
            attrs.insert("axes".into(), Attr::Ints(mapped));
            attrs.insert("keepdims".into(), Attr::Int(keep as i64));
            self.push(name, "ReduceMean", attrs, vec![x.tensor], out);
        }
        self.finish(name, out, out_nhwc, stated)
    }

    fn pad(
        &mut self,
        name: &str,
        a: &serde_json::Map<String, Value>,
        x: &Out,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        let rank = x.nhwc.len();
        let out_nhwc: Vec<usize> = match ints_attr(a, "paddings").map_err(&err)? {
            Some(p) if p.len() == 2 * rank => {
                if p.iter().any(|&v| !(0..=u32::MAX as i64).contains(&v)) {
                    return Err(err(format!("paddings {p:?} must be non-negative")));
                }
                x.nhwc
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| d + p[2 * i] as usize + p[2 * i + 1] as usize)
                    .collect()
            }
            Some(p) => {
                return Err(err(format!("paddings {p:?} do not fit rank {rank}")));
            }
            None => known(stated).ok_or_else(|| {
                err(
                    "no paddings attribute and no output_shape: cannot tell the padded shape"
                        .into(),
                )
            })?,
        };
        if out_nhwc.len() != rank || out_nhwc.iter().zip(&x.nhwc).any(|(o, i)| o < i) {
            return Err(err(format!(
                "padding {} to {} is not a padding",
                show(&x.nhwc),
                show(&out_nhwc)
            )));
        }
        let pads: Vec<i64> = {
            let before: Vec<i64> = (0..rank).map(|_| 0).collect();
            let after: Vec<i64> = out_nhwc
                .iter()
                .zip(&x.nhwc)
                .map(|(o, i)| (o - i) as i64)
                .collect();
            let (mut b, mut e) = (before, after);
            if rank == 4 {
                b = vec![b[0], b[3], b[1], b[2]];
                e = vec![e[0], e[3], e[1], e[2]];
            }
            b.into_iter().chain(e).collect()
        };
        let out = self.tensor(name.to_string(), nchw(&out_nhwc), false);
        let mut attrs = BTreeMap::new();
        attrs.insert("pads".into(), Attr::Ints(pads));
        self.push(name, "Pad", attrs, vec![x.tensor], out);
        self.finish(name, out, out_nhwc, stated)
    }

    /// Reshape, Squeeze, Flatten, ExpandDims: views. The output shape is the stated one, else the
    /// `shape` attribute (one `-1` allowed), else squeezing or flattening by the op's rule.
    fn reshape(
        &mut self,
        name: &str,
        a: &serde_json::Map<String, Value>,
        x: &Out,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        let elems: u64 = x.nhwc.iter().map(|&d| d as u64).product();
        let from_attr = match ints_attr(a, "shape").map_err(&err)? {
            Some(s) => Some(resolve_reshape(&s, elems).ok_or_else(|| {
                err(format!(
                    "shape {s:?} cannot hold the {elems} elements of {}",
                    show(&x.nhwc)
                ))
            })?),
            None => None,
        };
        let stated_known = if self.check_stated {
            known(stated)
        } else {
            None
        };
        let out_nhwc = match (stated_known, from_attr) {
            (Some(s), _) => s,
            (None, Some(s)) => s,
            (None, None) => match ints_attr(a, "squeeze_dims").map_err(&err)? {
                Some(dims) if !dims.is_empty() => x
                    .nhwc
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| {
                        !dims.iter().any(|&d| {
                            let d = if d < 0 { d + x.nhwc.len() as i64 } else { d };
                            d == *i as i64
                        })
                    })
                    .map(|(_, &d)| d)
                    .collect(),
                // Squeeze without dims drops every 1; Flatten keeps the batch.
                _ if x.nhwc.len() > 1 => {
                    let kept: Vec<usize> = x.nhwc.iter().copied().filter(|&d| d != 1).collect();
                    if kept.len() <= 1 {
                        vec![x.nhwc[0], (elems / x.nhwc[0].max(1) as u64) as usize]
                    } else {
                        kept
                    }
                }
                _ => x.nhwc.clone(),
            },
        };
        let out_elems: u64 = out_nhwc.iter().map(|&d| d as u64).product();
        if out_elems != elems {
            return Err(err(format!(
                "reshaping {} ({elems} elements) to {} ({out_elems} elements)",
                show(&x.nhwc),
                show(&out_nhwc)
            )));
        }
        let out = self.tensor(name.to_string(), nchw(&out_nhwc), false);
        let mut attrs = BTreeMap::new();
        attrs.insert(
            "shape".into(),
            Attr::Ints(nchw(&out_nhwc).iter().map(|&d| d as i64).collect()),
        );
        self.push(name, "Reshape", attrs, vec![x.tensor], out);
        let nhwc = self.checked(name, out_nhwc)?;
        Ok(Out { tensor: out, nhwc })
    }
}

/// A stated shape with every dimension known.
fn known(stated: Option<&Dims>) -> Option<Vec<usize>> {
    let s = stated?;
    if s.is_empty() {
        return None;
    }
    s.iter().copied().collect()
}

/// A TF reshape target with at most one `-1`, resolved against an element count.
fn resolve_reshape(s: &[i64], elems: u64) -> Option<Vec<usize>> {
    let unknown = s.iter().filter(|&&d| d < 0).count();
    let known: u64 = s
        .iter()
        .filter(|&&d| d >= 0)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))?;
    match unknown {
        0 => (known == elems).then(|| s.iter().map(|&d| d as usize).collect()),
        1 if known > 0 && elems.is_multiple_of(known) => Some(
            s.iter()
                .map(|&d| {
                    if d < 0 {
                        (elems / known) as usize
                    } else {
                        d as usize
                    }
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Numpy broadcasting of two shapes.
fn broadcast(p: &[usize], q: &[usize]) -> Option<Vec<usize>> {
    let r = p.len().max(q.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let a = if i + p.len() >= r {
            p[i + p.len() - r]
        } else {
            1
        };
        let b = if i + q.len() >= r {
            q[i + q.len() - r]
        } else {
            1
        };
        out[i] = match (a, b) {
            (a, b) if a == b => a,
            (1, b) => b,
            (a, 1) => a,
            _ => return None,
        };
    }
    Some(out)
}

/// The ONNX op and attributes of a one-input TF op.
fn unary(
    op: &str,
    a: &serde_json::Map<String, Value>,
    rank: usize,
) -> (&'static str, BTreeMap<String, Attr>) {
    let mut attrs = BTreeMap::new();
    let onnx = match op {
        "Relu" => "Relu",
        "Relu6" => {
            attrs.insert("min".into(), Attr::Float(0.0));
            attrs.insert("max".into(), Attr::Float(6.0));
            "Clip"
        }
        "LeakyRelu" => {
            attrs.insert(
                "alpha".into(),
                Attr::Float(float_attr(a, "alpha").unwrap_or(0.2)),
            );
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
