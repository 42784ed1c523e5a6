//! Op classes: what an ONNX op is to a runtime's fuser (a 1×1 conv and a 3×3 conv are different
//! things to it; an `Add` of a constant is a bias, an `Add` of two activations a residual).
use crate::model::{Graph, Node};

/// The class of a node, the vocabulary of fusion rules.
pub fn class_of(g: &Graph, n: &Node) -> &'static str {
    match n.op.as_str() {
        "Conv" => conv_class(g, n),
        "ConvTranspose" => "conv",
        "Gemm" | "MatMul" => "matmul",
        "Relu" | "Clip" | "LeakyRelu" | "PRelu" => "relu",
        "Sigmoid" => "sigmoid",
        "HardSigmoid" | "HardSwish" | "Tanh" | "Exp" | "Erf" | "Gelu" | "Softplus" | "Elu"
        | "Selu" | "Sqrt" | "Reciprocal" | "Neg" | "Abs" | "Log" | "Pow" | "Mish" => "activation",
        "Add" | "Sub" => binary_class(g, n, "bias", "add", "add_bcast"),
        "Mul" | "Div" => binary_class(g, n, "scale", "mul", "mul_bcast"),
        "BatchNormalization" | "InstanceNormalization" | "LayerNormalization" => "batchnorm",
        "MaxPool" | "AveragePool" | "LpPool" => "pool",
        "GlobalAveragePool" | "GlobalMaxPool" | "ReduceMean" | "ReduceSum" | "ReduceMax" => {
            "reduce"
        }
        // A one-input concat copies nothing: tract drops it (densenet121's four `torch.cat([x])`).
        "Concat" if n.inputs.len() == 1 => "alias",
        "Concat" => "concat",
        "Softmax" | "LogSoftmax" => "softmax",
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" | "Identity" | "Dropout" | "Cast" => {
            "alias"
        }
        "Transpose" | "Slice" | "Split" | "Pad" | "Gather" | "Resize" | "Upsample" | "Expand"
        | "Tile" | "DepthToSpace" | "SpaceToDepth" => "data",
        _ => "other",
    }
}

fn conv_class(g: &Graph, n: &Node) -> &'static str {
    let groups = n.int("group").unwrap_or(1);
    let cin = n
        .inputs
        .first()
        .and_then(|&t| g.tensor(t).shape.get(1).copied())
        .unwrap_or(0) as i64;
    let kshape: Vec<usize> = n
        .inputs
        .get(1)
        .map(|&t| g.tensor(t).shape.to_vec())
        .unwrap_or_default();
    if groups > 1 && groups == cin {
        return "depthwise";
    }
    let one_by_one = kshape.len() >= 3 && kshape[2..].iter().all(|&k| k == 1);
    let no_pad = n.ints("pads").is_none_or(|p| p.iter().all(|&v| v == 0));
    if groups == 1 && one_by_one && no_pad {
        "pointwise"
    } else {
        "conv"
    }
}

/// Binary ops: with a constant operand they are a bias/scale; with two activations of the same shape a
/// residual; otherwise a broadcast (squeeze-excitation style), which runtimes fuse differently.
fn binary_class(
    g: &Graph,
    n: &Node,
    with_const: &'static str,
    same: &'static str,
    bcast: &'static str,
) -> &'static str {
    if n.inputs.iter().any(|&t| g.tensor(t).is_weight) {
        return with_const;
    }
    let shapes: Vec<&[usize]> = n.inputs.iter().map(|&t| &*g.tensor(t).shape).collect();
    if shapes.windows(2).all(|w| w[0] == w[1]) {
        same
    } else {
        bcast
    }
}

/// Whether a class is computed per element (so a chain of them is one pass over memory).
pub fn is_elementwise(class: &str) -> bool {
    matches!(
        class,
        "relu"
            | "sigmoid"
            | "activation"
            | "bias"
            | "add"
            | "add_bcast"
            | "scale"
            | "mul"
            | "mul_bcast"
            | "batchnorm"
    )
}
