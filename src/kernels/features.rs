//! The features of a kernel that the per-kind regressors learn from, and that a decomposition caches
//! and groups its kernels by.
use super::Kernel;

/// Number of features in [`features`].
pub const N_FEATURES: usize = 16;

/// Features of a kernel, in a fixed order (logs where the range spans orders of magnitude).
pub fn features(k: &Kernel) -> [f64; N_FEATURES] {
    let ln = |v: f64| (v.max(0.0) + 1.0).ln();
    let out_spatial: f64 = k.output_shape.iter().skip(2).map(|&d| d as f64).product();
    [
        ln(k.macs as f64),
        ln(k.flops as f64),
        ln(k.input_bytes as f64),
        ln(k.output_bytes as f64),
        ln(k.weight_bytes as f64),
        ln(k.cin as f64),
        ln(k.cout as f64),
        ln(k.hin as f64 * k.win as f64),
        ln(out_spatial),
        k.kernel_size[0] as f64 * k.kernel_size[1] as f64,
        k.stride[0] as f64,
        ln(k.groups as f64),
        ln(k.arithmetic_intensity),
        k.ops.len() as f64,
        k.input_shapes.len() as f64,
        ln(k.scratch_bytes as f64),
    ]
}
