//! Kernel decomposition: cuts a graph into the kernels a runtime really executes (by its fusion rules),
//! with the features a latency predictor needs, and the model's memory requirement.
//!
//! Entry point: [`decompose`].
pub mod classify;
mod features;
pub mod fusion;
pub mod memory;

pub use features::{N_FEATURES, features};
pub use fusion::FusionRules;

use crate::model::{Graph, Node, TensorId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What a kernel computes, which decides the regressor that predicts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelKind {
    /// Dense or grouped k×k convolution (pad + im2col + matmul).
    Conv,
    /// 1×1 convolution without padding: one matmul.
    Pointwise,
    /// Depthwise convolution (groups == input channels).
    Depthwise,
    /// Gemm / MatMul.
    #[serde(rename = "matmul")]
    MatMul,
    /// Max / average pooling with a window.
    Pool,
    /// Global pooling and reductions.
    Reduce,
    /// A chain of elementwise ops run as one pass.
    Elementwise,
    Concat,
    Softmax,
    /// Transpose, slice, pad, resize … : moves data, computes nothing.
    DataMovement,
    Other,
}

impl KernelKind {
    pub const ALL: [KernelKind; 11] = [
        KernelKind::Conv,
        KernelKind::Pointwise,
        KernelKind::Depthwise,
        KernelKind::MatMul,
        KernelKind::Pool,
        KernelKind::Reduce,
        KernelKind::Elementwise,
        KernelKind::Concat,
        KernelKind::Softmax,
        KernelKind::DataMovement,
        KernelKind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Conv => "conv",
            KernelKind::Pointwise => "pointwise",
            KernelKind::Depthwise => "depthwise",
            KernelKind::MatMul => "matmul",
            KernelKind::Pool => "pool",
            KernelKind::Reduce => "reduce",
            KernelKind::Elementwise => "elementwise",
            KernelKind::Concat => "concat",
            KernelKind::Softmax => "softmax",
            KernelKind::DataMovement => "data_movement",
            KernelKind::Other => "other",
        }
    }

    fn of_class(class: &str) -> KernelKind {
        match class {
            "conv" => KernelKind::Conv,
            "pointwise" => KernelKind::Pointwise,
            "depthwise" => KernelKind::Depthwise,
            "matmul" => KernelKind::MatMul,
            "pool" => KernelKind::Pool,
            "reduce" => KernelKind::Reduce,
            "concat" => KernelKind::Concat,
            "softmax" => KernelKind::Softmax,
            "data" => KernelKind::DataMovement,
            c if classify::is_elementwise(c) => KernelKind::Elementwise,
            _ => KernelKind::Other,
        }
    }
}

/// One kernel as the runtime executes it, with its features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    /// Name of the first graph node in the kernel.
    pub name: String,
    pub kind: KernelKind,
    /// The graph ops fused into this kernel, in order (`Conv`, `Add`, `Relu` …).
    pub ops: Vec<String>,
    /// Shapes of the activation inputs (weights excluded).
    pub input_shapes: Vec<Vec<usize>>,
    pub output_shape: Vec<usize>,
    /// Window of convolutions and pools ([kh, kw]); [1, 1] for others.
    pub kernel_size: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Explicit padding (ONNX order: top, left, bottom, right) of convolutions and pools.
    #[serde(default)]
    pub pads: [usize; 4],
    /// Permutation of a transpose (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub perm: Vec<usize>,
    pub groups: usize,
    /// Input and output channels (conv-like); for matmuls K and N.
    pub cin: usize,
    pub cout: usize,
    /// Spatial size of the first input (conv-like); for matmuls M and 1.
    pub hin: usize,
    pub win: usize,
    pub macs: u64,
    /// Floating-point operations: 2·MACs plus one per element per elementwise op.
    pub flops: u64,
    pub weight_bytes: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// FLOPs per byte of inputs, outputs and weights.
    pub arithmetic_intensity: f64,
    /// Extra memory the runtime allocates while running it (padded input, packed panels).
    pub scratch_bytes: u64,
}

impl Kernel {
    /// A kernel of no size: no shapes, unit window and stride, no work; decomposition fills in
    /// what it knows, and a journal entry that is not a kernel uses it as is.
    pub fn blank(name: String, kind: KernelKind) -> Kernel {
        Kernel {
            name,
            kind,
            ops: Vec::new(),
            input_shapes: Vec::new(),
            output_shape: Vec::new(),
            kernel_size: [1, 1],
            stride: [1, 1],
            dilation: [1, 1],
            pads: [0; 4],
            perm: Vec::new(),
            groups: 1,
            cin: 0,
            cout: 0,
            hin: 0,
            win: 0,
            macs: 0,
            flops: 0,
            weight_bytes: 0,
            input_bytes: 0,
            output_bytes: 0,
            arithmetic_intensity: 0.0,
            scratch_bytes: 0,
        }
    }
}

/// A model cut into kernels, with totals.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decomposition {
    pub model: String,
    pub runtime: String,
    /// Multiply-accumulates of Conv, ConvTranspose, MatMul and Gemm only.
    pub macs: u64,
    pub params: u64,
    pub weights_bytes: u64,
    pub peak_activation_bytes: u64,
    pub peak_memory_bytes: u64,
    pub input_shapes: Vec<Vec<usize>>,
    pub kernels: Vec<Kernel>,
    /// Regressor features of each kernel, computed once with the decomposition (see [`Decomposition::features`]).
    #[serde(skip)]
    pub feature_cache: Vec<[f64; N_FEATURES]>,
    /// Kernels grouped by kind, with their distinct feature rows (see [`Decomposition::feature_groups`]).
    #[serde(skip)]
    pub group_cache: Vec<FeatureGroup>,
    /// Indices of the graph nodes each kernel runs, in kernel order (for attributing a runtime's
    /// per-node timings to kernels).
    #[serde(skip)]
    pub kernel_nodes: Vec<Vec<usize>>,
}

impl Decomposition {
    /// What the predictor sees of the model, as a short hex digest: its kernels in order (kinds,
    /// ops, shapes, windows, sizes) without node names, weight values or constants of a few
    /// bytes. Two files of one architecture under one set of fusion rules share it (a re-export,
    /// a retrained copy), and they run alike, so the online learner knows a model by it: what it
    /// learned of a model follows the model whichever file brought it, another daemon's export
    /// included.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for k in &self.kernels {
            // Constants too small to time (a Clip's bounds, stored as f16 in one file and f32
            // in its export) do not tell two models apart: weights count in 4-KiB units, and
            // the arithmetic intensity, which follows from the rest, not at all.
            let unnamed = Kernel {
                name: String::new(),
                weight_bytes: k.weight_bytes >> 12,
                arithmetic_intensity: 0.0,
                ..k.clone()
            };
            // A kernel is plain numbers and strings, which serialise; were one not to, its kind
            // and MACs still tell it apart.
            match serde_json::to_vec(&unnamed) {
                Ok(b) => h.update(&b),
                Err(_) => h.update(format!("{:?}/{}", k.kind, k.macs).as_bytes()),
            }
            h.update(b"\n");
        }
        let digest = h.finalize();
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("arch-{hex}")
    }

    /// Features of kernel `i`, from the cache when it was filled.
    pub fn features(&self, i: usize) -> [f64; N_FEATURES] {
        match (self.feature_cache.get(i), self.kernels.get(i)) {
            (Some(f), _) => *f,
            (None, Some(k)) => features::features(k),
            (None, None) => [0.0; N_FEATURES],
        }
    }

    /// Kernels grouped by kind with their distinct feature rows: from the cache filled with the
    /// decomposition, or computed (a decomposition read back from JSON has no cache).
    pub fn feature_groups(&self) -> std::borrow::Cow<'_, [FeatureGroup]> {
        if self.group_cache.is_empty() && !self.kernels.is_empty() {
            std::borrow::Cow::Owned(feature_groups(&self.kernels, &|i| self.features(i)))
        } else {
            std::borrow::Cow::Borrowed(&self.group_cache)
        }
    }
}

/// The kernels of one kind and their distinct feature rows: a regressor evaluates each distinct row
/// once (a ResNet repeats the same block many times).
#[derive(Clone, Debug)]
pub struct FeatureGroup {
    pub kind: KernelKind,
    pub rows: Vec<[f64; N_FEATURES]>,
    /// (kernel index, row index) of every kernel of the kind.
    pub members: Vec<(usize, usize)>,
}

fn feature_groups(
    kernels: &[Kernel],
    features: &dyn Fn(usize) -> [f64; N_FEATURES],
) -> Vec<FeatureGroup> {
    let mut groups: Vec<FeatureGroup> = Vec::new();
    let mut seen: HashMap<(KernelKind, [u64; N_FEATURES]), usize> = HashMap::new();
    for (i, k) in kernels.iter().enumerate() {
        let slot = match groups.iter().position(|g| g.kind == k.kind) {
            Some(s) => s,
            None => {
                groups.push(FeatureGroup {
                    kind: k.kind,
                    rows: Vec::new(),
                    members: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let x = features(i);
        let g = &mut groups[slot];
        let row = *seen
            .entry((k.kind, x.map(f64::to_bits)))
            .or_insert_with(|| {
                g.rows.push(x);
                g.rows.len() - 1
            });
        g.members.push((i, row));
    }
    groups
}

/// Why a graph could not be decomposed.
#[derive(Debug, thiserror::Error)]
pub enum DecomposeError {
    #[error("node `{node}` ({op}): {detail}")]
    Node {
        node: String,
        op: String,
        detail: String,
    },
}

struct Building {
    nodes: Vec<usize>,
    last_class: &'static str,
    output: TensorId,
}

/// Cuts `g` into kernels under `rules`, in execution order, and computes the memory requirement.
pub fn decompose(g: &Graph, rules: &FusionRules) -> Result<Decomposition, DecomposeError> {
    // Alias ops (reshape, flatten …) are views: their output is their input for fusion and liveness.
    let mut alias: Vec<TensorId> = (0..g.tensors.len()).collect();
    let classes: Vec<&'static str> = g.nodes.iter().map(|n| classify::class_of(g, n)).collect();
    for (n, &c) in g.nodes.iter().zip(&classes) {
        if c == "alias"
            && let (Some(&i), Some(&o)) = (n.inputs.first(), n.outputs.first())
        {
            alias[o] = alias[i];
        }
    }
    let resolve = |t: TensorId| alias[t];
    let mut consumers = vec![0usize; g.tensors.len()];
    for (n, &c) in g.nodes.iter().zip(&classes) {
        if c == "alias" {
            continue;
        }
        let mut seen = Vec::new();
        for &t in &n.inputs {
            let r = resolve(t);
            if !seen.contains(&r) {
                seen.push(r);
                consumers[r] += 1;
            }
        }
    }
    for &t in &g.outputs {
        consumers[resolve(t)] += 1;
    }

    let mut building: Vec<Building> = Vec::new();
    // For each (resolved) tensor, the kernel under construction that produces it.
    let mut producer_kernel: Vec<Option<usize>> = vec![None; g.tensors.len()];
    for (ix, (n, &class)) in g.nodes.iter().zip(&classes).enumerate() {
        if class == "alias" {
            continue;
        }
        let Some(&out) = n.outputs.first() else {
            continue;
        };
        // Operands are tried in order; the first one that comes from a single-consumer kernel decides
        // (as tract's optimiser does: `conv3x3 + downsample` does not fuse into the downsample).
        let mut target = None;
        for &t in &n.inputs {
            let r = resolve(t);
            if g.tensor(r).is_weight {
                continue;
            }
            let Some(k) = producer_kernel[r] else {
                continue;
            };
            if building[k].output != r || consumers[r] != 1 {
                continue;
            }
            if rules.fuses(building[k].last_class, class) {
                target = Some(k);
            }
            break;
        }
        match target {
            Some(k) => {
                let b = &mut building[k];
                b.nodes.push(ix);
                // tract folds a batchnorm, bias or scale that follows a conv or matmul into its weights
                // and epilogue: what fuses next is decided by the conv, not by the folded affine.
                let folded = matches!(class, "batchnorm" | "bias" | "scale")
                    && matches!(b.last_class, "conv" | "pointwise" | "depthwise" | "matmul");
                if !folded {
                    b.last_class = class;
                }
                b.output = out;
                producer_kernel[out] = Some(k);
            }
            None => {
                producer_kernel[out] = Some(building.len());
                building.push(Building {
                    nodes: vec![ix],
                    last_class: class,
                    output: out,
                });
            }
        }
    }
    // A fused kernel runs when its last op can: order kernels by their last node.
    building.sort_by_key(|b| b.nodes.last().copied().unwrap_or(0));
    let kernels: Vec<Kernel> = building
        .iter()
        .map(|b| kernel_of(g, &b.nodes, &classes, &alias))
        .collect::<Result<_, _>>()?;
    let macs = kernels.iter().map(|k| k.macs).sum();
    let weights_bytes = g.weight_bytes();
    let peak_activation_bytes =
        memory::peak_activation_bytes(g, &kernels, &building_io(g, &building, &alias));
    let feature_cache: Vec<[f64; N_FEATURES]> = kernels.iter().map(features::features).collect();
    let group_cache = feature_groups(&kernels, &|i| feature_cache[i]);
    Ok(Decomposition {
        model: g.name.clone(),
        runtime: rules.runtime.clone(),
        macs,
        params: g.params(),
        weights_bytes,
        peak_activation_bytes,
        peak_memory_bytes: weights_bytes + peak_activation_bytes,
        input_shapes: g
            .inputs
            .iter()
            .map(|&t| g.tensor(t).shape.to_vec())
            .collect(),
        feature_cache,
        group_cache,
        kernels,
        kernel_nodes: building.into_iter().map(|b| b.nodes).collect(),
    })
}

/// Activation tensors each kernel reads and writes (aliases resolved), for the liveness walk.
fn building_io(
    g: &Graph,
    building: &[Building],
    alias: &[TensorId],
) -> Vec<(Vec<TensorId>, TensorId)> {
    building
        .iter()
        .map(|b| {
            let inside: Vec<TensorId> = b
                .nodes
                .iter()
                .flat_map(|&n| g.nodes[n].outputs.iter().copied())
                .collect();
            let mut ins = Vec::new();
            for &n in &b.nodes {
                for &t in &g.nodes[n].inputs {
                    let r = alias[t];
                    if !g.tensor(r).is_weight && !inside.contains(&r) && !ins.contains(&r) {
                        ins.push(r);
                    }
                }
            }
            (ins, b.output)
        })
        .collect()
}

/// MACs of one node: Conv, ConvTranspose, MatMul and Gemm only (the torchvision/fvcore convention).
pub fn node_macs(g: &Graph, n: &Node) -> u64 {
    let shape = |i: usize| {
        n.inputs
            .get(i)
            .map(|&t| g.tensor(t).shape.clone())
            .unwrap_or_default()
    };
    let out: u64 = n
        .outputs
        .first()
        .map(|&t| g.tensor(t).elements())
        .unwrap_or(0);
    match n.op.as_str() {
        "Conv" => {
            let w = shape(1);
            if w.len() < 3 {
                return 0;
            }
            out * w[1..].iter().map(|&d| d as u64).product::<u64>()
        }
        "ConvTranspose" => {
            let w = shape(1);
            let x = shape(0);
            if w.len() < 3 {
                return 0;
            }
            // Weight is [Cin, Cout/groups, k…]: every input element feeds Cout/groups · k… outputs.
            let inp: u64 = x.iter().map(|&d| d as u64).product();
            inp * (w[1] as u64) * w[2..].iter().map(|&d| d as u64).product::<u64>()
        }
        "Gemm" => {
            let a = shape(0);
            if a.len() != 2 {
                return 0;
            }
            let k = if n.int("transA").unwrap_or(0) != 0 {
                a[0]
            } else {
                a[1]
            };
            out * k as u64
        }
        "MatMul" => {
            let a = shape(0);
            a.last().map(|&k| out * k as u64).unwrap_or(0)
        }
        _ => 0,
    }
}

fn pair(v: Option<&[i64]>, default: usize) -> [usize; 2] {
    match v {
        Some([a, b, ..]) => [(*a).max(0) as usize, (*b).max(0) as usize],
        Some([a]) => [(*a).max(0) as usize, 1],
        _ => [default, default],
    }
}

fn pads4(v: Option<&[i64]>) -> [usize; 4] {
    match v {
        Some([a, b, c, d]) => [*a, *b, *c, *d].map(|x| x.max(0) as usize),
        Some([a, b]) => [*a, *a, *b, *b].map(|x| x.max(0) as usize),
        _ => [0; 4],
    }
}

/// The window, stride, padding, groups (conv and pool), permutation (transpose) or matmul shape
/// of a kernel, from its anchor node.
fn set_geometry(
    k: &mut Kernel,
    g: &Graph,
    anchor: &Node,
    first_in: &[usize],
    anchor_out: &[usize],
) {
    match k.kind {
        KernelKind::Conv | KernelKind::Pointwise | KernelKind::Depthwise => {
            let w = anchor
                .inputs
                .get(1)
                .map(|&t| g.tensor(t).shape.clone())
                .unwrap_or_default();
            let ks = if w.len() >= 4 {
                [w[2], w[3]]
            } else if w.len() == 3 {
                [w[2], 1]
            } else {
                [1, 1]
            };
            k.kernel_size = ks;
            k.stride = pair(anchor.ints("strides"), 1);
            k.dilation = pair(anchor.ints("dilations"), 1);
            k.groups = anchor.int("group").unwrap_or(1).max(1) as usize;
            k.pads = pads4(anchor.ints("pads"));
        }
        KernelKind::Pool => {
            k.kernel_size = pair(anchor.ints("kernel_shape"), 1);
            k.stride = pair(anchor.ints("strides"), 1);
            k.pads = pads4(anchor.ints("pads"));
        }
        KernelKind::DataMovement if anchor.op == "Transpose" => {
            k.perm = anchor
                .ints("perm")
                .map(|p| p.iter().map(|&v| v.max(0) as usize).collect())
                .unwrap_or_default();
        }
        KernelKind::MatMul => {
            // As a matmul: M rows of K into N columns; kept in the conv fields (hin = M, cin = K, cout = N).
            let a = first_in;
            let trans_a = anchor.int("transA").unwrap_or(0) != 0;
            let (m, kk) = match a.len() {
                0 => (1, 1),
                1 => (1, a[0]),
                n if trans_a => (a[n - 1], a[n - 2]),
                n => (a[..n - 1].iter().product(), a[n - 1]),
            };
            k.hin = m;
            k.win = 1;
            k.cin = kk;
            k.cout = anchor_out.last().copied().unwrap_or(1);
        }
        _ => {}
    }
}

fn kernel_of(
    g: &Graph,
    nodes: &[usize],
    classes: &[&str],
    alias: &[TensorId],
) -> Result<Kernel, DecomposeError> {
    let anchor = &g.nodes[nodes[0]];
    let kind = KernelKind::of_class(classes[nodes[0]]);
    let last = &g.nodes[*nodes.last().unwrap_or(&nodes[0])];
    let inside: Vec<TensorId> = nodes
        .iter()
        .flat_map(|&n| g.nodes[n].outputs.iter().copied())
        .collect();
    let mut inputs: Vec<TensorId> = Vec::new();
    let mut weight_bytes = 0;
    for &n in nodes {
        for &t in &g.nodes[n].inputs {
            let r = alias[t];
            if g.tensor(r).is_weight {
                weight_bytes += g.tensor(r).bytes();
            } else if !inside.contains(&r) && !inputs.contains(&r) {
                inputs.push(r);
            }
        }
    }
    let out_t = last
        .outputs
        .first()
        .copied()
        .ok_or_else(|| DecomposeError::Node {
            node: last.name.to_string(),
            op: last.op.clone(),
            detail: "has no output".into(),
        })?;
    let output_shape = g.tensor(out_t).shape.clone();
    let out_elems = g.tensor(out_t).elements();
    // A broadcast operand ([1, C, 1, 1] scale of squeeze-excitation) may come first or second; the
    // kernel streams the large one either way, so its features are taken from the largest input.
    if kind == KernelKind::Elementwise {
        inputs.sort_by_key(|&t| std::cmp::Reverse(g.tensor(t).elements()));
    }
    let input_shapes: Vec<Vec<usize>> =
        inputs.iter().map(|&t| g.tensor(t).shape.to_vec()).collect();
    let first_in = input_shapes.first().cloned().unwrap_or_default();
    let anchor_out = anchor
        .outputs
        .first()
        .map(|&t| g.tensor(t).shape.to_vec())
        .unwrap_or_default();
    let mut k = Kernel {
        ops: nodes.iter().map(|&n| g.nodes[n].op.clone()).collect(),
        input_shapes,
        output_shape: output_shape.to_vec(),
        cin: first_in.get(1).copied().unwrap_or(1),
        cout: anchor_out.get(1).copied().unwrap_or(1),
        hin: first_in.get(2).copied().unwrap_or(1),
        win: first_in.get(3).copied().unwrap_or(1),
        weight_bytes,
        input_bytes: inputs.iter().map(|&t| g.tensor(t).bytes()).sum(),
        output_bytes: g.tensor(out_t).bytes(),
        ..Kernel::blank(anchor.name.to_string(), kind)
    };
    set_geometry(&mut k, g, anchor, &first_in, &anchor_out);
    k.macs = nodes.iter().map(|&n| node_macs(g, &g.nodes[n])).sum();
    let elementwise_ops = nodes
        .iter()
        .filter(|&&n| classify::is_elementwise(classes[n]))
        .count() as u64;
    let ew_flops = match kind {
        KernelKind::Pool => out_elems * (k.kernel_size[0] * k.kernel_size[1]) as u64,
        KernelKind::Reduce | KernelKind::Softmax => k.input_bytes / 4,
        _ => out_elems * elementwise_ops,
    };
    k.flops = 2 * k.macs + ew_flops;
    let bytes = (k.input_bytes + k.output_bytes + k.weight_bytes).max(1);
    k.arithmetic_intensity = k.flops as f64 / bytes as f64;
    k.scratch_bytes = memory::scratch_bytes(&k);
    Ok(k)
}
