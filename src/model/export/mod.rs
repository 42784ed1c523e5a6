//! ONNX export: writes a [`Graph`] as an opset-17 ModelProto that any ONNX runtime loads, so built
//! single-kernel graphs can be timed by tract and by external backends alike.
//!
//! A [`Graph`] keeps shapes, not values, so weights are filled with [`weight_value`]: a fixed,
//! non-uniform pattern of period 251 and magnitude 0.01–0.2 that no runtime can specialise on (dense
//! float kernels take the same time whatever the values) — or, for a part of a model read from a
//! file, with that model's own values ([`SourceValues`], [`to_onnx_bytes_with`]), so the part
//! computes what it does inside the model. Constant operands whose values change what is
//! computed are written from what the graph does know: a Reshape's target is its output shape, Slice
//! bounds and Clip limits come from the legacy attributes the builder leaves (see
//! [`super::builder`]), or are derived from the input and output shapes.
mod operands;
mod values;

pub use values::{SourceValues, ValuesError};

use super::graph::{Attr, DType, Graph, TensorId};
use prost::Message;
use std::collections::HashSet;
use tract_onnx::pb;

/// The opset every export declares.
const OPSET: i64 = 17;
/// The ONNX IR version that goes with opset 17.
const IR_VERSION: i64 = 8;

/// Why a graph could not be exported; names the tensor or node at fault.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("graph `{graph}`: {detail}")]
    Graph { graph: String, detail: String },
    #[error("node `{node}` ({op}): {detail}")]
    Node {
        node: String,
        op: String,
        detail: String,
    },
    #[error("tensor `{tensor}`: {detail}")]
    Tensor { tensor: String, detail: String },
}

/// The weight pattern: element `i` of a weight tensor whose pattern starts at `offset`. Period 251 in `i`,
/// magnitude 0.01–0.2, both signs (so deep stacks neither blow up nor die out as fast as with one sign).
fn weight_value(offset: usize, i: usize) -> f32 {
    // 97 is coprime with 251, so one period visits every residue once: all 251 values differ.
    let r = (offset.wrapping_add(i).wrapping_mul(97).wrapping_add(13)) % 251;
    let mag = 0.01 + 0.19 * r as f32 / 250.0;
    if r % 2 == 1 { -mag } else { mag }
}

fn elem_type(dt: DType) -> Option<i32> {
    Some(match dt {
        DType::F32 => 1,
        DType::U8 => 2,
        DType::I8 => 3,
        DType::I32 => 6,
        DType::I64 => 7,
        DType::Bool => 9,
        DType::F16 => 10,
        DType::F64 => 11,
        DType::Other => return None,
    })
}

fn attr_proto(name: &str, a: &Attr) -> pb::AttributeProto {
    let mut p = pb::AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match a {
        Attr::Float(v) => {
            p.r#type = 1;
            p.f = *v;
        }
        Attr::Int(v) => {
            p.r#type = 2;
            p.i = *v;
        }
        Attr::Str(v) => {
            p.r#type = 3;
            p.s = v.as_bytes().to_vec();
        }
        Attr::Floats(v) => {
            p.r#type = 6;
            p.floats = v.clone();
        }
        Attr::Ints(v) => {
            p.r#type = 7;
            p.ints = v.clone();
        }
    }
    p
}

fn value_info(name: &str, shape: &[usize], dtype: i32) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: dtype,
                shape: Some(pb::TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|&d| Dimension {
                            denotation: String::new(),
                            value: Some(Value::DimValue(d as i64)),
                        })
                        .collect(),
                }),
            })),
        }),
        doc_string: String::new(),
    }
}

/// Unique, valid tensor names: `input`, `input_1` …, `output`, `output_1` …, the graph's own elsewhere.
fn tensor_names(g: &Graph) -> Vec<String> {
    let mut names = vec![String::new(); g.tensors.len()];
    let mut used: HashSet<String> = HashSet::new();
    let numbered = |base: &str, i: usize| {
        if i == 0 {
            base.to_string()
        } else {
            format!("{base}_{i}")
        }
    };
    for (i, &t) in g.inputs.iter().enumerate() {
        names[t] = numbered("input", i);
        used.insert(names[t].clone());
    }
    for (i, &t) in g.outputs.iter().enumerate() {
        if names[t].is_empty() {
            names[t] = numbered("output", i);
            used.insert(names[t].clone());
        }
    }
    for (ix, t) in g.tensors.iter().enumerate() {
        if !names[ix].is_empty() {
            continue;
        }
        let mut name = if t.name.is_empty() {
            format!("t{ix}")
        } else {
            t.name.to_string()
        };
        if used.contains(&name) || name.starts_with("input") || name.starts_with("output") {
            name = format!("t{ix}_{name}");
        }
        used.insert(name.clone());
        names[ix] = name;
    }
    names
}

/// The graph as an ONNX ModelProto, and the weights written as the pattern (`values` had none).
fn to_model_proto(
    g: &Graph,
    values: &SourceValues,
) -> Result<(pb::ModelProto, Vec<String>), ExportError> {
    let graph_err = |detail: String| ExportError::Graph {
        graph: g.name.clone(),
        detail,
    };
    if g.nodes.is_empty() {
        return Err(graph_err("has no nodes".into()));
    }
    if g.inputs.is_empty() || g.outputs.is_empty() {
        return Err(graph_err("needs at least one input and one output".into()));
    }
    let n_tensors = g.tensors.len();
    let bad_ref = g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().chain(&n.outputs))
        .chain(g.inputs.iter().chain(&g.outputs))
        .any(|&t| t >= n_tensors);
    if bad_ref {
        return Err(graph_err("refers to a tensor that does not exist".into()));
    }
    let names = tensor_names(g);
    let produced: HashSet<TensorId> = g.nodes.iter().flat_map(|n| n.outputs.clone()).collect();
    let mut initializers = operands::Initializers {
        tensors: Vec::new(),
        values,
        placeholders: Vec::new(),
    };
    let mut written: HashSet<TensorId> = HashSet::new();
    let mut nodes = Vec::with_capacity(g.nodes.len());

    for n in &g.nodes {
        let w = operands::node_inputs(g, n, &names, &produced, &mut written, &mut initializers)?;
        let attribute = n
            .attrs
            .iter()
            .filter(|(k, _)| !w.dropped.contains(k))
            .map(|(k, v)| attr_proto(k, v))
            .chain(w.added.iter().map(|(k, v)| attr_proto(k, v)))
            .collect();
        nodes.push(pb::NodeProto {
            input: w.inputs,
            output: n.outputs.iter().map(|&t| names[t].clone()).collect(),
            name: n.name.to_string(),
            op_type: n.op.clone(),
            domain: String::new(),
            attribute,
            doc_string: String::new(),
        });
    }

    let io = |t: TensorId| -> Result<pb::ValueInfoProto, ExportError> {
        let tensor = g.tensor(t);
        let dt = elem_type(tensor.dtype).ok_or_else(|| ExportError::Tensor {
            tensor: tensor.name.to_string(),
            detail: "a graph input or output needs a known element type".into(),
        })?;
        Ok(value_info(&names[t], &tensor.shape, dt))
    };
    for &t in &g.outputs {
        if !produced.contains(&t) {
            return Err(graph_err(format!(
                "output `{}` is computed by no node",
                g.tensor(t).name
            )));
        }
    }
    let graph = pb::GraphProto {
        node: nodes,
        name: g.name.clone(),
        initializer: initializers.tensors,
        input: g.inputs.iter().map(|&t| io(t)).collect::<Result<_, _>>()?,
        output: g.outputs.iter().map(|&t| io(t)).collect::<Result<_, _>>()?,
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "augur".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..Default::default()
    };
    Ok((model, initializers.placeholders))
}

/// The graph as the bytes of an ONNX file.
pub fn to_onnx_bytes(g: &Graph) -> Result<Vec<u8>, ExportError> {
    Ok(to_model_proto(g, &SourceValues::none())?.0.encode_to_vec())
}

/// A graph cut from a model, written with the model's own weights.
#[derive(Debug)]
pub struct Exported {
    /// The bytes of the ONNX file.
    pub bytes: Vec<u8>,
    /// Weights `values` had no tensor of that name, shape and type for, written as the pattern.
    pub placeholders: Vec<String>,
}

/// The graph as the bytes of an ONNX file, each weight the value `values` has for it (the model
/// the graph was cut from), the pattern where it has none.
pub fn to_onnx_bytes_with(g: &Graph, values: &SourceValues) -> Result<Exported, ExportError> {
    let (model, placeholders) = to_model_proto(g, values)?;
    Ok(Exported {
        bytes: model.encode_to_vec(),
        placeholders,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{FusionRules, decompose};
    use crate::model::builder::GraphBuilder;
    use crate::model::import_bytes;

    fn round_trip(g: &Graph) -> Graph {
        let bytes = to_onnx_bytes(g).unwrap();
        import_bytes(&bytes, &g.name, None).unwrap()
    }

    fn same_shapes_and_macs(a: &Graph, b: &Graph) {
        let rules = FusionRules::tract_default();
        let (da, db) = (decompose(a, &rules).unwrap(), decompose(b, &rules).unwrap());
        assert_eq!(da.macs, db.macs);
        assert_eq!(da.params, db.params);
        assert_eq!(da.input_shapes, db.input_shapes);
        assert_eq!(a.nodes.len(), b.nodes.len());
        for (x, y) in a.nodes.iter().zip(&b.nodes) {
            assert_eq!(x.op, y.op);
            let sx: Vec<_> = x.outputs.iter().map(|&t| &a.tensor(t).shape).collect();
            let sy: Vec<_> = y.outputs.iter().map(|&t| &b.tensor(t).shape).collect();
            assert_eq!(sx, sy, "node {}", x.name);
        }
        let oa: Vec<_> = a.outputs.iter().map(|&t| &a.tensor(t).shape).collect();
        let ob: Vec<_> = b.outputs.iter().map(|&t| &b.tensor(t).shape).collect();
        assert_eq!(oa, ob);
    }

    /// Runs an exported model in tract on a constant input: the output's shape and values.
    fn run_in_tract(bytes: &[u8], shape: &[usize], value: f32) -> (Vec<usize>, Vec<f32>) {
        use tract_onnx::prelude::*;
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let n = shape.iter().product();
        let input = Tensor::from_shape(shape, &vec![value; n]).unwrap();
        let out = model.run(tvec!(input.into_tvalue())).unwrap();
        let plain = out[0].try_as_plain_ram().unwrap();
        (
            out[0].shape().to_vec(),
            plain.as_slice::<f32>().unwrap().to_vec(),
        )
    }

    #[test]
    fn pattern_is_periodic_bounded_and_varied() {
        let v: Vec<f32> = (0..251).map(|i| weight_value(5, i)).collect();
        assert!(v.iter().all(|x| (0.01..=0.2).contains(&x.abs())));
        assert_eq!(weight_value(5, 3), weight_value(5, 3 + 251));
        let distinct: HashSet<u32> = v.iter().map(|x| x.to_bits()).collect();
        assert_eq!(distinct.len(), 251);
        assert!(v.iter().any(|&x| x < 0.0) && v.iter().any(|&x| x > 0.0));
    }

    #[test]
    fn small_cnn_round_trips() {
        let mut b = GraphBuilder::new("small_cnn");
        let x = b.input(&[1, 3, 32, 32]);
        let c = b
            .conv(x, 16, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 1, true)
            .unwrap();
        let c = b.batchnorm(c).unwrap();
        let c = b.clip(c, 0.0, 6.0).unwrap();
        let d = b
            .conv(c, 16, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 16, false)
            .unwrap();
        let d = b.hardswish(d).unwrap();
        let s = b.global_avg_pool(d).unwrap();
        let s = b.sigmoid(s).unwrap();
        let d = b.mul(d, s).unwrap();
        let d = b.add(d, c).unwrap();
        let d = b.add_const(d).unwrap();
        let d = b.mul_const(d).unwrap();
        let d = b.relu(d).unwrap();
        let p = b.maxpool(d, [3, 3], [2, 2], [1, 1, 1, 1]).unwrap();
        let q = b.avgpool(d, [2, 2], [2, 2], [0; 4]).unwrap();
        let cat = b.concat(&[p, q], 1).unwrap();
        let sl = b.slice(cat, &[1], &[4], &[28], &[2]).unwrap();
        let t = b.transpose(sl, &[0, 1, 3, 2]).unwrap();
        let r = b.reshape(t, &[1, -1]).unwrap();
        let f = b.gemm(r, 10, true).unwrap();
        let w = b.weight(&[10, 5]);
        let m = b.matmul(f, w).unwrap();
        let sm = b.softmax(m, 1).unwrap();
        let g = b.finish(&[sm]).unwrap();
        let back = round_trip(&g);
        same_shapes_and_macs(&g, &back);
        assert_eq!(back.tensor(back.inputs[0]).name.as_ref(), "input");
        assert_eq!(back.tensor(back.outputs[0]).name.as_ref(), "output");
    }

    #[test]
    fn single_kernels_run_in_tract() {
        let mut b = GraphBuilder::new("k");
        let x = b.input(&[1, 8, 10, 10]);
        let y = b.clip(x, -0.05, 0.05).unwrap();
        let y = b.slice(y, &[2], &[1], &[9], &[1]).unwrap();
        let g = b.finish(&[y]).unwrap();
        let (shape, values) = run_in_tract(&to_onnx_bytes(&g).unwrap(), &[1, 8, 10, 10], 1.0);
        assert_eq!(shape, vec![1, 8, 8, 10]);
        // The Clip bounds survived export: 1.0 is clipped to the upper bound.
        assert!(values.iter().all(|&x| (x - 0.05).abs() < 1e-6));
    }

    /// A graph as an opset-18 import leaves it: constant operands as weights without values.
    #[test]
    fn lost_constants_are_derived() {
        use crate::model::{Node, Tensor};
        let t = |name: &str, shape: &[usize], dtype, is_weight| Tensor {
            name: name.into(),
            shape: shape.into(),
            dtype,
            is_weight,
        };
        let node = |op: &str, inputs: Vec<TensorId>, out: TensorId| Node {
            name: format!("{op}_{out}").into(),
            op: op.into(),
            attrs: Default::default(),
            inputs: inputs.into(),
            outputs: Box::new([out]),
        };
        let g = Graph {
            name: "lost".into(),
            tensors: vec![
                t("x", &[1, 8, 4, 4], DType::F32, false),
                t("axes", &[2], DType::I64, true),
                t("mean", &[1, 8, 1, 1], DType::F32, false),
                t("sq_axes", &[2], DType::I64, true),
                t("squeezed", &[1, 8], DType::F32, false),
                t("un_axes", &[1], DType::I64, true),
                t("unsqueezed", &[1, 8, 1], DType::F32, false),
                t("lo", &[], DType::F32, true),
                t("hi", &[], DType::Other, true),
                t("clipped", &[1, 8, 1], DType::F32, false),
            ],
            nodes: vec![
                node("ReduceMean", vec![0, 1], 2),
                node("Squeeze", vec![2, 3], 4),
                node("Unsqueeze", vec![4, 5], 6),
                node("Clip", vec![6, 7, 8], 9),
            ],
            inputs: vec![0],
            outputs: vec![9],
        };
        let bytes = to_onnx_bytes(&g).unwrap();
        let back = import_bytes(&bytes, "lost", None).unwrap();
        same_shapes_and_macs(&g, &back);
        let (shape, values) = run_in_tract(&bytes, &[1, 8, 4, 4], 10.0);
        assert_eq!(shape, vec![1, 8, 1]);
        // Clip bounds lost at import are ReLU6's.
        assert!(values.iter().all(|&v| v == 6.0));
    }

    #[test]
    fn bad_graphs_are_refused() {
        assert!(to_onnx_bytes(&Graph::default()).is_err());
        let mut b = GraphBuilder::new("k");
        let x = b.input(&[1, 4]);
        let y = b.relu(x).unwrap();
        let mut g = b.finish(&[y]).unwrap();
        g.nodes[0].inputs[0] = 42;
        assert!(to_onnx_bytes(&g).is_err());
    }

    #[test]
    fn names_do_not_collide() {
        let mut b = GraphBuilder::new("k");
        let x = b.input(&[1, 4]);
        let y = b.relu(x).unwrap();
        let z = b.relu(y).unwrap();
        let mut g = b.finish(&[z]).unwrap();
        g.tensors[y].name = "output".into();
        let back = round_trip(&g);
        assert_eq!(back.nodes.len(), 2);
    }
}
