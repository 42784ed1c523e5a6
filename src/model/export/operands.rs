//! Operand shaping for export: what a node's inputs become in the ONNX file. Weights are written as
//! initializers filled with the weight pattern; constant operands whose values decide what is computed
//! (a Reshape's target, Slice bounds, Clip limits, reduction axes …) are rebuilt from the legacy
//! attributes the builder leaves, or derived from the input and output shapes.
use super::{ExportError, elem_type, weight_value};
use crate::model::graph::{Attr, DType, Graph, Node, TensorId};
use std::collections::HashSet;
use tract_onnx::pb;

/// The initializers written so far, and where their values come from.
pub(super) struct Initializers<'v> {
    pub(super) tensors: Vec<pb::TensorProto>,
    /// The source model's own values, taken where it has a tensor of that name, shape and type.
    pub(super) values: &'v super::SourceValues,
    /// Weights written as the pattern: the source had no value for them.
    pub(super) placeholders: Vec<String>,
}

/// A node's inputs as written, and how its attributes change with them.
pub(super) struct Written {
    /// The input names, in ONNX order (an empty name for an omitted optional input).
    pub(super) inputs: Vec<String>,
    /// Attributes that became inputs (or are rewritten below): not written as attributes.
    pub(super) dropped: &'static [&'static str],
    /// Attributes written in their place.
    pub(super) added: Vec<(&'static str, Attr)>,
}

/// The inputs of node `n` as written. `names` are the tensors' names in the file, `produced` the
/// tensors some node computes; weights not yet in `written` are added to it and their initializers to
/// `out`: the source's own value where it has one, the pattern otherwise.
pub(super) fn node_inputs(
    g: &Graph,
    n: &Node,
    names: &[String],
    produced: &HashSet<TensorId>,
    written: &mut HashSet<TensorId>,
    out: &mut Initializers,
) -> Result<Written, ExportError> {
    let initializers = &mut out.tensors;
    if let Some((operands, moved)) = shape_operands(g, n)? {
        let x = n
            .inputs
            .first()
            .ok_or_else(|| node_err(n, "has no data input".into()))?;
        let mut inputs = vec![names[*x].clone()];
        for (role, t) in operands {
            if role.is_empty() {
                inputs.push(String::new());
            } else {
                inputs.push(t.name.clone());
                initializers.push(t);
            }
        }
        return Ok(Written {
            inputs,
            dropped: moved,
            added: vec![],
        });
    }
    if let Some(axes) = reduce_axes_from_input(g, n)? {
        return Ok(Written {
            inputs: vec![names[n.inputs[0]].clone()],
            dropped: &["axes"],
            added: vec![("axes", Attr::Ints(axes))],
        });
    }
    let mut inputs = Vec::with_capacity(n.inputs.len());
    for (ix, &t) in n.inputs.iter().enumerate() {
        let tensor = g.tensor(t);
        if tensor.is_weight && !produced.contains(&t) && written.insert(t) {
            let (shape, dtype) = if tensor.dtype == DType::Other {
                operand_shape(g, n, ix).ok_or_else(|| ExportError::Tensor {
                    tensor: tensor.name.to_string(),
                    detail: format!(
                        "its shape and type are unknown (a constant the importer could not \
                         resolve), and operand {ix} of {} does not tell them",
                        n.op
                    ),
                })?
            } else {
                (tensor.shape.to_vec(), tensor.dtype)
            };
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let own = elem_type(dtype)
                .and_then(|code| out.values.get(&tensor.name, &names[t], &dims, code));
            match own {
                Some(own) => initializers.push(own),
                None => {
                    out.placeholders.push(tensor.name.to_string());
                    initializers.push(weight_tensor(
                        &names[t],
                        &shape,
                        dtype,
                        t * 37,
                        fill_for(n, ix),
                    )?);
                }
            }
        }
        inputs.push(names[t].clone());
    }
    Ok(Written {
        inputs,
        dropped: &[],
        added: vec![],
    })
}

fn i64_tensor(name: String, values: Vec<i64>) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims: vec![values.len() as i64],
        data_type: 7,
        int64_data: values,
        ..Default::default()
    }
}

fn f32_scalar(name: String, v: f32) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims: vec![],
        data_type: 1,
        float_data: vec![v],
        ..Default::default()
    }
}

/// How a weight operand is filled.
#[derive(Clone, Copy, PartialEq)]
enum Fill {
    /// The pattern, signed.
    Pattern,
    /// The pattern's magnitude: for operands that must be positive (variances).
    Positive,
    /// One value everywhere: for operands whose value changes the work (an exponent).
    Const(f32),
}

/// A weight operand of an ordinary op: the pattern, except where a value is needed for a sane run.
fn fill_for(n: &Node, input: usize) -> Fill {
    match (n.op.as_str(), input) {
        ("BatchNormalization", 4) | ("InstanceNormalization", 2) => Fill::Positive,
        ("Pow", 1) => Fill::Const(2.0),
        _ => Fill::Pattern,
    }
}

fn weight_tensor(
    name: &str,
    shape: &[usize],
    dtype: DType,
    offset: usize,
    fill: Fill,
) -> Result<pb::TensorProto, ExportError> {
    let n: usize = shape.iter().product();
    let dims = shape.iter().map(|&d| d as i64).collect();
    let value = |i: usize| match fill {
        Fill::Pattern => weight_value(offset, i),
        Fill::Positive => weight_value(offset, i).abs(),
        Fill::Const(c) => c,
    };
    let mut t = pb::TensorProto {
        name: name.to_string(),
        dims,
        ..Default::default()
    };
    match dtype {
        DType::F32 => {
            t.data_type = 1;
            t.raw_data = (0..n).flat_map(|i| value(i).to_le_bytes()).collect();
        }
        DType::F64 => {
            t.data_type = 11;
            t.raw_data = (0..n)
                .flat_map(|i| (value(i) as f64).to_le_bytes())
                .collect();
        }
        DType::F16 => {
            t.data_type = 10;
            t.raw_data = (0..n)
                .flat_map(|i| tract_onnx::prelude::f16::from_f32(value(i)).to_le_bytes())
                .collect();
        }
        // Integer operands of ordinary ops (Gather indices …): zero is in range for every axis.
        DType::I64 => {
            t.data_type = 7;
            t.raw_data = vec![0; n * 8];
        }
        DType::I32 => {
            t.data_type = 6;
            t.raw_data = vec![0; n * 4];
        }
        DType::I8 | DType::U8 | DType::Bool => {
            t.data_type = elem_type(dtype).unwrap_or(2);
            t.raw_data = vec![0; n];
        }
        DType::Other => {
            return Err(ExportError::Tensor {
                tensor: name.to_string(),
                detail: "its element type is unknown (a constant the importer could not resolve)"
                    .into(),
            });
        }
    }
    Ok(t)
}

/// The shape of a float weight operand as its op defines it, for constants whose shape the importer lost
/// (outputs of folded `Identity` nodes: the TorchScript exporter shares identical tensors that way).
fn operand_shape(g: &Graph, n: &Node, input: usize) -> Option<(Vec<usize>, DType)> {
    let x = &g.tensor(*n.inputs.first()?).shape;
    let y = &g.tensor(*n.outputs.first()?).shape;
    let group = n.int("group").unwrap_or(1).max(1) as usize;
    let kernel = || -> Option<Vec<usize>> {
        Some(
            n.ints("kernel_shape")?
                .iter()
                .map(|&k| k.max(1) as usize)
                .collect(),
        )
    };
    let shape = match (n.op.as_str(), input) {
        ("Conv", 1) => [vec![*y.get(1)?, x.get(1)? / group], kernel()?].concat(),
        ("ConvTranspose", 1) => [vec![*x.get(1)?, y.get(1)? / group], kernel()?].concat(),
        ("Conv" | "ConvTranspose", 2) => vec![*y.get(1)?],
        ("Gemm", 1) => {
            let k = if n.int("transA").unwrap_or(0) != 0 {
                x.first()?
            } else {
                x.get(1)?
            };
            let m = *y.get(1)?;
            if n.int("transB").unwrap_or(0) != 0 {
                vec![m, *k]
            } else {
                vec![*k, m]
            }
        }
        ("Gemm", 2) => vec![*y.get(1)?],
        ("MatMul", 1) if x.len() >= 2 => vec![*x.last()?, *y.last()?],
        ("BatchNormalization", 1..=4) | ("InstanceNormalization", 1 | 2) => vec![*x.get(1)?],
        ("PRelu", 1) if x.len() >= 2 => {
            let mut s = vec![1; x.len() - 1];
            s[0] = x[1];
            s
        }
        ("Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min", _) => vec![],
        _ => return None,
    };
    Some((shape, DType::F32))
}

/// Axes of `long` that are absent from `short` (squeezed out): a greedy alignment of equal dimensions.
fn removed_axes(long: &[usize], short: &[usize]) -> Option<Vec<i64>> {
    let mut j = 0;
    let mut axes = Vec::new();
    for (i, &d) in long.iter().enumerate() {
        if j < short.len() && short[j] == d {
            j += 1;
        } else if d == 1 {
            axes.push(i as i64);
        } else {
            return None;
        }
    }
    (j == short.len()).then_some(axes)
}

/// The axes a reduction from `x` to `y` went over, by its `keepdims`.
fn reduced_axes(n: &Node, x: &[usize], y: &[usize]) -> Option<Vec<i64>> {
    if n.int("keepdims").unwrap_or(1) != 0 {
        (x.len() == y.len()).then(|| {
            (0..x.len())
                .filter(|&i| x[i] != y[i] || x[i] == 1)
                .map(|i| i as i64)
                .collect()
        })
    } else {
        removed_axes(x, y)
    }
}

/// Reductions other than ReduceSum take their axes as an attribute up to opset 17 (an input from 18):
/// for such a node read from a newer model, the axes to write as the attribute.
fn reduce_axes_from_input(g: &Graph, n: &Node) -> Result<Option<Vec<i64>>, ExportError> {
    let is_reduce = n.op.starts_with("Reduce") && n.op != "ReduceSum";
    let Some(&axes_in) = n.inputs.get(1) else {
        return Ok(None);
    };
    if !is_reduce || !g.tensor(axes_in).is_weight {
        return Ok(None);
    }
    let shape = |t: Option<&TensorId>| t.map(|&t| g.tensor(t).shape.to_vec()).unwrap_or_default();
    let (x, y) = (shape(n.inputs.first()), shape(n.outputs.first()));
    reduced_axes(n, &x, &y)
        .map(Some)
        .ok_or_else(|| ExportError::Node {
            node: n.name.to_string(),
            op: n.op.clone(),
            detail: format!("cannot tell the axes from {x:?} → {y:?}"),
        })
}

fn ints_attr(n: &Node, key: &str) -> Option<Vec<i64>> {
    n.ints(key).map(|v| v.to_vec())
}

/// Ops whose constant operands (inputs from 1 on) decide what is computed. They are rebuilt: the data
/// input, then one initializer per operand with the value from the legacy attribute or the shapes.
/// Returns the operands as (role, tensor), and the attributes that moved into inputs.
type Operands = (
    Vec<(&'static str, pb::TensorProto)>,
    &'static [&'static str],
);

fn shape_operands(g: &Graph, n: &Node) -> Result<Option<Operands>, ExportError> {
    let node_err = |detail: String| ExportError::Node {
        node: n.name.to_string(),
        op: n.op.clone(),
        detail,
    };
    let shape = |t: Option<&TensorId>| t.map(|&t| g.tensor(t).shape.to_vec()).unwrap_or_default();
    let x = shape(n.inputs.first());
    let y = shape(n.outputs.first());
    let name = |role: &str| format!("{}.{role}", n.name);
    let dims = |s: &[usize]| s.iter().map(|&d| d as i64).collect::<Vec<_>>();
    let ops: Operands = match n.op.as_str() {
        "Reshape" => (
            vec![("shape", i64_tensor(name("shape"), dims(&y)))],
            &["shape"],
        ),
        "Expand" => (vec![("shape", i64_tensor(name("shape"), dims(&y)))], &[]),
        "Tile" => {
            if x.len() != y.len()
                || x.iter()
                    .zip(&y)
                    .any(|(a, b)| *a == 0 || !b.is_multiple_of(*a))
            {
                return Err(node_err(format!("cannot tile {x:?} into {y:?}")));
            }
            let reps = x.iter().zip(&y).map(|(a, b)| (b / a) as i64).collect();
            (vec![("repeats", i64_tensor(name("repeats"), reps))], &[])
        }
        "Unsqueeze" | "Squeeze" => {
            let axes = match ints_attr(n, "axes") {
                Some(a) => Some(a),
                None if n.op == "Squeeze" => removed_axes(&x, &y),
                None => removed_axes(&y, &x),
            }
            .ok_or_else(|| node_err(format!("cannot tell the axes from {x:?} → {y:?}")))?;
            (vec![("axes", i64_tensor(name("axes"), axes))], &["axes"])
        }
        "Slice" => slice(n, &x, &y)?,
        "Clip" => clip(n),
        "Pad" => pad(n, &x, &y)?,
        "Split" => split(g, n, &x)?,
        "ReduceSum" => {
            let axes = match ints_attr(n, "axes") {
                Some(a) => a,
                None => reduced_axes(n, &x, &y)
                    .ok_or_else(|| node_err(format!("cannot tell the axes from {x:?} → {y:?}")))?,
            };
            (vec![("axes", i64_tensor(name("axes"), axes))], &["axes"])
        }
        "Resize" => {
            // X, roi, scales, sizes: give the output size, leave roi and scales empty.
            (
                vec![
                    ("", pb::TensorProto::default()),
                    ("", pb::TensorProto::default()),
                    ("sizes", i64_tensor(name("sizes"), dims(&y))),
                ],
                &["scales"],
            )
        }
        _ => return Ok(None),
    };
    if let Some(&t) = n.inputs.iter().skip(1).find(|&&t| !g.tensor(t).is_weight) {
        return Err(node_err(format!(
            "operand `{}` is computed at run time; only constant operands can be exported for this op",
            g.tensor(t).name
        )));
    }
    Ok(Some(ops))
}

fn node_err(n: &Node, detail: String) -> ExportError {
    ExportError::Node {
        node: n.name.to_string(),
        op: n.op.clone(),
        detail,
    }
}

fn role_name(n: &Node, role: &str) -> String {
    format!("{}.{role}", n.name)
}

/// Slice bounds from the legacy attributes, else the leading part of each shrunk axis.
fn slice(n: &Node, x: &[usize], y: &[usize]) -> Result<Operands, ExportError> {
    let (axes, starts, ends, steps) = match (
        ints_attr(n, "axes"),
        ints_attr(n, "starts"),
        ints_attr(n, "ends"),
        ints_attr(n, "steps"),
    ) {
        (axes, Some(starts), Some(ends), steps) => {
            let k = starts.len();
            (
                axes.unwrap_or_else(|| (0..k as i64).collect()),
                starts,
                ends,
                steps.unwrap_or_else(|| vec![1; k]),
            )
        }
        // Values lost at import: the leading part of each shrunk axis has the same shape and cost.
        _ => {
            if x.len() != y.len() {
                return Err(node_err(n, format!("cannot slice {x:?} into {y:?}")));
            }
            let mut axes: Vec<i64> = (0..x.len())
                .filter(|&i| x[i] != y[i])
                .map(|i| i as i64)
                .collect();
            if axes.is_empty() && !x.is_empty() {
                axes.push(0);
            }
            let ends = axes.iter().map(|&a| y[a as usize] as i64).collect();
            let k = axes.len();
            (axes, vec![0; k], ends, vec![1; k])
        }
    };
    Ok((
        vec![
            ("starts", i64_tensor(role_name(n, "starts"), starts)),
            ("ends", i64_tensor(role_name(n, "ends"), ends)),
            ("axes", i64_tensor(role_name(n, "axes"), axes)),
            ("steps", i64_tensor(role_name(n, "steps"), steps)),
        ],
        &["starts", "ends", "axes", "steps"],
    ))
}

/// Clip bounds from the legacy attributes.
fn clip(n: &Node) -> Operands {
    // Bounds lost at import default to ReLU6's, by far the commonest Clip in vision models.
    let has = |i: usize| n.inputs.len() > i;
    let mut v = Vec::new();
    if n.float("min").is_some() || has(1) || n.float("max").is_some() {
        v.push((
            "min",
            f32_scalar(role_name(n, "min"), n.float("min").unwrap_or(0.0)),
        ));
    }
    if n.float("max").is_some() || has(2) {
        v.push((
            "max",
            f32_scalar(role_name(n, "max"), n.float("max").unwrap_or(6.0)),
        ));
    }
    (v, &["min", "max"])
}

/// Pads from the legacy attribute, else split evenly from the shapes.
fn pad(n: &Node, x: &[usize], y: &[usize]) -> Result<Operands, ExportError> {
    let pads = match ints_attr(n, "pads") {
        Some(p) => p,
        None => {
            if x.len() != y.len() || x.iter().zip(y).any(|(a, b)| b < a) {
                return Err(node_err(n, format!("cannot pad {x:?} into {y:?}")));
            }
            let grow: Vec<i64> = x.iter().zip(y).map(|(a, b)| (b - a) as i64).collect();
            let begin = grow.iter().map(|d| d / 2);
            let end = grow.iter().map(|d| d - d / 2);
            begin.chain(end).collect()
        }
    };
    let value = n.float("value").unwrap_or(0.0);
    Ok((
        vec![
            ("pads", i64_tensor(role_name(n, "pads"), pads)),
            (
                "constant_value",
                f32_scalar(role_name(n, "constant_value"), value),
            ),
        ],
        &["pads", "value"],
    ))
}

/// Split sizes from the legacy attribute, else the outputs' extents on the axis.
fn split(g: &Graph, n: &Node, x: &[usize]) -> Result<Operands, ExportError> {
    let axis = n.int("axis").unwrap_or(0);
    let axis = if axis < 0 {
        axis + x.len() as i64
    } else {
        axis
    } as usize;
    let sizes = match ints_attr(n, "split") {
        Some(s) => s,
        None => n
            .outputs
            .iter()
            .map(|&o| g.tensor(o).shape.get(axis).map(|&d| d as i64))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| node_err(n, "an output lacks the split axis".into()))?,
    };
    Ok((
        vec![("split", i64_tensor(role_name(n, "split"), sizes))],
        &["split"],
    ))
}
