//! Turns a kernel configuration back into a graph that runs exactly that kernel, for measurement.
//! The features of what is measured come from decomposing this graph, never from the request.
use crate::kernels::{Kernel, KernelKind};
use crate::model::builder::{BuildError, GraphBuilder};
use crate::model::{Graph, TensorId};

fn err(k: &Kernel, why: &str) -> BuildError {
    BuildError::Invalid {
        node: k.name.clone(),
        op: k.ops.join("+"),
        detail: why.to_string(),
    }
}

/// A graph whose only kernel is `k` (plus graph inputs).
pub fn kernel_graph(k: &Kernel) -> Result<Graph, BuildError> {
    let mut b = GraphBuilder::new(&format!("calib_{}", k.kind.name()));
    let shapes = &k.input_shapes;
    let first = shapes.first().ok_or_else(|| err(k, "no input"))?;
    let x = b.input(first);
    let mut extra = shapes.iter().skip(1);
    let y: TensorId;
    let mut rest: &[String] = &k.ops;
    match k.kind {
        KernelKind::Conv | KernelKind::Pointwise | KernelKind::Depthwise => {
            y = b.conv(
                x,
                k.cout,
                k.kernel_size,
                k.stride,
                k.pads,
                k.dilation,
                k.groups,
                true,
            )?;
            rest = &k.ops[1..];
        }
        KernelKind::MatMul => {
            y = if first.len() > 2 && k.ops.first().map(String::as_str) == Some("MatMul") {
                // A linear layer on the last axis of a channels-last tensor (ConvNeXt's MLP).
                let kk = first.last().copied().unwrap_or(1);
                let w = b.weight(&[kk, k.cout]);
                b.matmul(x, w)?
            } else {
                let flat = if first.len() == 2 {
                    x
                } else {
                    b.flatten(x, 1)?
                };
                b.gemm(flat, k.cout, true)?
            };
            rest = &k.ops[1..];
        }
        KernelKind::Pool => {
            y = if k.ops.first().map(String::as_str) == Some("AveragePool") {
                b.avgpool(x, k.kernel_size, k.stride, k.pads)?
            } else {
                b.maxpool(x, k.kernel_size, k.stride, k.pads)?
            };
            rest = &k.ops[1..];
        }
        KernelKind::Reduce => {
            y = b.global_avg_pool(x)?;
            rest = &k.ops[1..];
        }
        KernelKind::Concat => {
            let mut xs = vec![x];
            for s in shapes.iter().skip(1) {
                xs.push(b.input(s));
            }
            y = b.concat(&xs, 1)?;
            rest = &k.ops[1..];
            extra = shapes.iter().skip(shapes.len());
        }
        KernelKind::Softmax => {
            y = b.softmax(x, first.len().saturating_sub(1))?;
            rest = &k.ops[1..];
        }
        KernelKind::DataMovement => {
            match k.ops.first().map(String::as_str) {
                Some("Transpose") if k.perm.len() == first.len() => y = b.transpose(x, &k.perm)?,
                Some("Slice") | Some("Split") if first.len() >= 2 => {
                    let out_c = k
                        .output_shape
                        .get(1)
                        .copied()
                        .unwrap_or(first[1] / 2)
                        .max(1);
                    y = b.slice(x, &[1], &[0], &[out_c], &[1])?;
                }
                Some("Resize") if first.len() == 4 && k.output_shape.len() == 4 => {
                    y = b.resize(x, [k.output_shape[2], k.output_shape[3]])?;
                }
                _ => return Err(err(k, "this data-movement op is not measured yet")),
            }
            rest = &k.ops[1..];
        }
        KernelKind::Elementwise => {
            y = x;
        }
        KernelKind::Other => return Err(err(k, "kernels of kind `other` are not measured")),
    }
    let y = chain(&mut b, k, rest, y, x, &mut extra)?;
    b.finish(&[y])
}

/// The elementwise ops that follow the kernel's anchor, applied to `y`; `chain_input` is the
/// kernel's input and `extra` the shapes of its other inputs, in order.
fn chain<'a>(
    b: &mut GraphBuilder,
    k: &Kernel,
    ops: &[String],
    mut y: TensorId,
    chain_input: TensorId,
    extra: &mut impl Iterator<Item = &'a Vec<usize>>,
) -> Result<TensorId, BuildError> {
    for op in ops {
        y = match op.as_str() {
            "Relu" => b.relu(y)?,
            "Clip" => b.clip(y, 0.0, 6.0)?,
            "Sigmoid" => b.sigmoid(y)?,
            "HardSwish" => b.hardswish(y)?,
            "HardSigmoid" => b.hard_sigmoid(y)?,
            "Erf" => b.erf(y)?,
            "LayerNormalization" => b.layer_norm(y)?,
            "BatchNormalization" => b.batchnorm(y)?,
            "Add" | "Sub" | "Mul" | "Div" => {
                // The other operand: another input of the kernel if it has one; for a chain that
                // reuses its own input (x·sigmoid(x)) that input; for a residual, the output's shape.
                let other = match extra.next() {
                    Some(s) => b.input(s),
                    None if k.kind == KernelKind::Elementwise => chain_input,
                    None => {
                        let s = b.shape(y)?.to_vec();
                        b.input(&s)
                    }
                };
                if op == "Add" || op == "Sub" {
                    b.add(y, other)?
                } else {
                    b.mul(y, other)?
                }
            }
            other => {
                return Err(err(
                    k,
                    &format!("op `{other}` in a kernel is not measured yet"),
                ));
            }
        };
    }
    Ok(y)
}
