//! ONNX import: raw protobuf for structure and attributes, tract's shape inference for static shapes.
//! Nodes that only compute constants (Shape→Gather→… chains) are folded away, as every runtime does.
use super::ImportError;
use super::graph::{Attr, Attrs, DType, Graph, Node, ShapeTable, Tensor, TensorId};
use prost::Message;
use std::collections::{HashMap, HashSet};
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// ONNX ops whose output is a constant when their inputs are (or always, for `Shape` of a static tensor).
const SHAPE_OPS: &[&str] = &["Shape", "Size", "ConstantOfShape", "Constant"];

fn dtype_of(code: i32) -> DType {
    match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        _ => DType::Other,
    }
}

fn dtype_of_tract(dt: DatumType) -> DType {
    match dt {
        DatumType::F32 => DType::F32,
        DatumType::F16 => DType::F16,
        DatumType::F64 => DType::F64,
        DatumType::I64 => DType::I64,
        DatumType::I32 => DType::I32,
        DatumType::I8 => DType::I8,
        DatumType::U8 => DType::U8,
        DatumType::Bool => DType::Bool,
        _ => DType::Other,
    }
}

fn attr_of(a: &pb::AttributeProto) -> Option<Attr> {
    match a.r#type {
        1 => Some(Attr::Float(a.f)),
        2 => Some(Attr::Int(a.i)),
        3 => Some(Attr::Str(String::from_utf8_lossy(&a.s).into_owned())),
        6 => Some(Attr::Floats(a.floats.clone())),
        7 => Some(Attr::Ints(a.ints.clone())),
        _ => None,
    }
}

/// Imports an ONNX model from its bytes. `source` names the file in errors; `input_shape`, when given,
/// fixes the shape of the first graph input (symbolic dimensions included).
pub(crate) fn import(
    bytes: &[u8],
    source: &str,
    input_shape: Option<&[usize]>,
) -> Result<Graph, ImportError> {
    let file = source.to_string();
    if bytes.is_empty() {
        return Err(ImportError::Empty { file });
    }
    let proto = pb::ModelProto::decode(bytes).map_err(|e| ImportError::Malformed {
        file: file.clone(),
        detail: format!("not a valid ONNX protobuf ({e})"),
    })?;
    let gp = proto.graph.as_ref().ok_or_else(|| ImportError::Malformed {
        file: file.clone(),
        detail: "no graph in the model (truncated or not an ONNX model)".into(),
    })?;
    if gp.node.is_empty() {
        return Err(ImportError::Malformed {
            file,
            detail: "the graph has no nodes".into(),
        });
    }
    let onnx = tract_onnx::onnx();
    check_ops(&onnx, gp, &file)?;
    let order = execution_order(gp).map_err(|node| ImportError::Cycle {
        file: file.clone(),
        node,
    })?;
    check_references(gp, &file)?;
    // tract's parser and shape rules index and unwrap freely on malformed models (fuzzing hit a dozen
    // sites: Conv, pooling, padding, Flatten, Transpose, Resize, unknown names, exotic dtypes). A panic
    // there is a malformed model, not a crash of augur.
    let facts = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        infer_shapes(&onnx, &proto, &file, input_shape)
    }))
    .unwrap_or_else(|payload| {
        let msg = crate::util::panic::panic_message(payload.as_ref(), "no message");
        Err(ImportError::Malformed {
            file: file.clone(),
            detail: format!("tract cannot analyse this model (it failed with: {msg})"),
        })
    })?;
    let mut l = Lowering {
        file: &file,
        facts: &facts,
        g: Graph {
            name: gp.name.clone(),
            ..Default::default()
        },
        ids: HashMap::new(),
        shapes: ShapeTable::default(),
    };
    l.sources(gp)?;
    let live = live_nodes(gp, &order);
    for &ix in order.iter().filter(|&&ix| live[ix]) {
        l.node(&gp.node[ix])?;
    }
    l.outputs(gp)?;
    Ok(l.g)
}

/// Which nodes contribute to a graph output. tract drops the others when it analyses a model (their
/// outputs get no shape) and never runs them, so they are no kernels of the model here either.
/// `order` is an execution order of all nodes.
fn live_nodes(gp: &pb::GraphProto, order: &[usize]) -> Vec<bool> {
    let mut needed: HashSet<&str> = gp.output.iter().map(|o| o.name.as_str()).collect();
    let mut live = vec![false; gp.node.len()];
    for &ix in order.iter().rev() {
        let n = &gp.node[ix];
        if n.output.iter().any(|o| needed.contains(o.as_str())) {
            live[ix] = true;
            needed.extend(n.input.iter().map(String::as_str));
        }
    }
    live
}

/// Every node's op must be one of tract's standard-domain ONNX ops.
fn check_ops(onnx: &tract_onnx::Onnx, gp: &pb::GraphProto, file: &str) -> Result<(), ImportError> {
    for n in &gp.node {
        let std_domain = n.domain.is_empty() || n.domain == "ai.onnx";
        if !std_domain || !onnx.op_register.0.contains_key(&n.op_type) {
            return Err(ImportError::UnsupportedOp {
                file: file.to_string(),
                node: node_name(n),
                op: if std_domain {
                    n.op_type.clone()
                } else {
                    format!("{}::{}", n.domain, n.op_type)
                },
            });
        }
    }
    Ok(())
}

/// The graph IR being built from a checked ModelProto and tract's shapes.
struct Lowering<'a> {
    file: &'a str,
    facts: &'a Facts,
    g: Graph,
    /// Each named tensor's id in the graph.
    ids: HashMap<&'a str, TensorId>,
    shapes: ShapeTable,
}

impl<'a> Lowering<'a> {
    fn push_tensor(&mut self, name: &'a str, shape: Vec<usize>, dtype: DType, is_weight: bool) {
        self.ids.insert(name, self.g.tensors.len());
        let shape = self.shapes.get(&shape);
        self.g.tensors.push(Tensor {
            name: name.into(),
            shape,
            dtype,
            is_weight,
        });
    }

    /// Initializers (weights) and graph inputs.
    fn sources(&mut self, gp: &'a pb::GraphProto) -> Result<(), ImportError> {
        let initializers: HashSet<&str> = gp.initializer.iter().map(|t| t.name.as_str()).collect();
        for t in &gp.initializer {
            let shape = t.dims.iter().map(|&d| d.max(0) as usize).collect();
            self.push_tensor(&t.name, shape, dtype_of(t.data_type), true);
        }
        for vi in &gp.input {
            if initializers.contains(vi.name.as_str()) {
                continue;
            }
            let (shape, dtype) =
                self.facts
                    .get(vi.name.as_str())
                    .cloned()
                    .ok_or_else(|| ImportError::Shape {
                        file: self.file.to_string(),
                        node: vi.name.clone(),
                        detail: "no static shape for this graph input; pass --input-shape".into(),
                    })?;
            self.g.inputs.push(self.g.tensors.len());
            self.push_tensor(&vi.name, shape, dtype, false);
        }
        Ok(())
    }

    /// One node: its outputs as tensors, and the node itself unless it only computes constants.
    fn node(&mut self, n: &'a pb::NodeProto) -> Result<(), ImportError> {
        let inputs: Vec<TensorId> = n
            .input
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| {
                self.ids
                    .get(s.as_str())
                    .copied()
                    .ok_or_else(|| ImportError::Malformed {
                        file: self.file.to_string(),
                        detail: format!(
                            "node `{}` reads `{s}`, which nothing produces",
                            node_name(n)
                        ),
                    })
            })
            .collect::<Result<_, _>>()?;
        let constant = n.op_type == "Constant"
            || (SHAPE_OPS.contains(&n.op_type.as_str()) && !inputs.is_empty())
            || (!inputs.is_empty() && inputs.iter().all(|&t| self.g.tensors[t].is_weight));
        let mut outputs = Vec::new();
        for o in n.output.iter().filter(|s| !s.is_empty()) {
            let (shape, dtype) = match self.facts.get(o.as_str()) {
                Some(f) => f.clone(),
                // An Identity of a weight (how exporters share one tensor) has its input's shape.
                None if constant && n.op_type == "Identity" && inputs.len() == 1 => {
                    let t = &self.g.tensors[inputs[0]];
                    (t.shape.to_vec(), t.dtype)
                }
                None if constant => (vec![], DType::Other),
                None => {
                    return Err(ImportError::Shape {
                        file: self.file.to_string(),
                        node: node_name(n),
                        detail: format!(
                            "the shape of output `{o}` could not be resolved statically"
                        ),
                    });
                }
            };
            outputs.push(self.g.tensors.len());
            self.push_tensor(o, shape, dtype, constant);
        }
        if constant {
            return Ok(());
        }
        let attrs: Attrs = n
            .attribute
            .iter()
            .filter_map(|a| attr_of(a).map(|v| (a.name.clone(), v)))
            .collect();
        self.g.nodes.push(Node {
            name: node_name(n).into(),
            op: n.op_type.clone(),
            attrs,
            inputs: inputs.into(),
            outputs: outputs.into(),
        });
        Ok(())
    }

    fn outputs(&mut self, gp: &pb::GraphProto) -> Result<(), ImportError> {
        for vi in &gp.output {
            match self.ids.get(vi.name.as_str()) {
                Some(&t) => self.g.outputs.push(t),
                None => {
                    return Err(ImportError::Malformed {
                        file: self.file.to_string(),
                        detail: format!("graph output `{}` is produced by no node", vi.name),
                    });
                }
            }
        }
        Ok(())
    }
}

fn node_name(n: &pb::NodeProto) -> String {
    if !n.name.is_empty() {
        n.name.clone()
    } else if let Some(o) = n.output.first() {
        format!("{}({o})", n.op_type)
    } else {
        n.op_type.clone()
    }
}

/// Every tensor a node or the graph output names must exist, and every initializer must have a type
/// tract can load, before tract sees the model (its parser panics on both).
fn check_references(gp: &pb::GraphProto, file: &str) -> Result<(), ImportError> {
    let malformed = |detail: String| ImportError::Malformed {
        file: file.to_string(),
        detail,
    };
    let mut known: HashSet<&str> = HashSet::new();
    known.extend(gp.initializer.iter().map(|t| t.name.as_str()));
    known.extend(gp.input.iter().map(|v| v.name.as_str()));
    known.extend(
        gp.node
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str)),
    );
    for n in &gp.node {
        if let Some(i) = n
            .input
            .iter()
            .find(|i| !i.is_empty() && !known.contains(i.as_str()))
        {
            return Err(malformed(format!(
                "node `{}` reads `{i}`, which nothing produces",
                node_name(n)
            )));
        }
    }
    if let Some(o) = gp.output.iter().find(|o| !known.contains(o.name.as_str())) {
        return Err(malformed(format!(
            "graph output `{}` is produced by no node",
            o.name
        )));
    }
    // FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, BOOL, FLOAT16, DOUBLE, UINT32, UINT64.
    const LOADABLE: &[i32] = &[1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13];
    if let Some(t) = gp
        .initializer
        .iter()
        .find(|t| !LOADABLE.contains(&t.data_type))
    {
        return Err(malformed(format!(
            "initializer `{}` has data type {}, which cannot be loaded",
            t.name, t.data_type
        )));
    }
    Ok(())
}

/// The execution order of the nodes; on a cycle, the name of a node on it.
fn execution_order(gp: &pb::GraphProto) -> Result<Vec<usize>, String> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in gp.node.iter().enumerate() {
        for o in n.output.iter().filter(|s| !s.is_empty()) {
            producer.insert(o, i);
        }
    }
    let preds: Vec<Vec<usize>> = gp
        .node
        .iter()
        .map(|n| {
            n.input
                .iter()
                .filter_map(|inp| producer.get(inp.as_str()).copied())
                .collect()
        })
        .collect();
    super::topo::topo_order(&preds).map_err(|ix| node_name(&gp.node[ix]))
}

type Facts = HashMap<String, (Vec<usize>, DType)>;

/// Runs tract's type and shape inference and returns the static shape of every labelled tensor.
fn infer_shapes(
    onnx: &tract_onnx::Onnx,
    proto: &pb::ModelProto,
    file: &str,
    input_shape: Option<&[usize]>,
) -> Result<Facts, ImportError> {
    let shape_err = |node: String, e: TractError| ImportError::Shape {
        file: file.to_string(),
        node,
        detail: brief(&format!("{e:#}")),
    };
    let parsed = onnx
        .parse(proto, None)
        .map_err(|e| ImportError::Malformed {
            file: file.to_string(),
            detail: brief(&format!("{e:#}")),
        })?;
    let mut model = parsed.model;
    if let Some(shape) = input_shape {
        if model.inputs.is_empty() {
            return Err(ImportError::Shape {
                file: file.to_string(),
                node: "input".into(),
                detail: "the model has no graph input to give --input-shape to".into(),
            });
        }
        let fact = InferenceFact::dt_shape(f32::datum_type(), shape);
        model = model
            .with_input_fact(0, fact)
            .map_err(|e| shape_err("input".into(), e))?;
    }
    for (ix, outlet) in model
        .input_outlets()
        .map_err(|e| shape_err("input".into(), e))?
        .iter()
        .enumerate()
    {
        let fact = model
            .outlet_fact(*outlet)
            .map_err(|e| shape_err("input".into(), e))?;
        let name = model.node(outlet.node).name.clone();
        if !matches!(fact.shape.as_concrete_finite(), Ok(Some(_))) {
            return Err(ImportError::Shape {
                file: file.to_string(),
                node: name,
                detail: format!(
                    "input {ix} has a symbolic or unknown shape ({:?}); fix it with --input-shape",
                    fact.shape
                ),
            });
        }
    }
    let typed = model.into_typed().map_err(|e| {
        let msg = format!("{e:#}");
        ImportError::Shape {
            file: file.to_string(),
            node: culprit(&msg).unwrap_or_else(|| "?".into()),
            detail: brief(&msg),
        }
    })?;
    let mut facts = Facts::new();
    for node in typed.nodes() {
        for (ix, out) in node.outputs.iter().enumerate() {
            // Sources carry their ONNX name as the node name, not as an outlet label.
            let label = match typed.outlet_label(OutletId::new(node.id, ix)) {
                Some(l) => l,
                None if ix == 0 => node.name.as_str(),
                None => continue,
            };
            let Some(dims) = out.fact.shape.as_concrete() else {
                continue;
            };
            facts.insert(
                label.to_string(),
                (dims.to_vec(), dtype_of_tract(out.fact.datum_type)),
            );
        }
    }
    Ok(facts)
}

/// A tract error on one line and of readable length (fuzzed models made it print reshape targets of
/// thousands of dimensions).
fn brief(msg: &str) -> String {
    let line = msg.replace('\n', " ");
    match line.char_indices().nth(400) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// Pulls the first node name out of a tract error chain ("… node #12 \"name\" …").
fn culprit(msg: &str) -> Option<String> {
    let start = msg.find('"')?;
    let rest = &msg[start + 1..];
    let end = rest.find('"')?;
    Some(rest[..end].to_string())
}
