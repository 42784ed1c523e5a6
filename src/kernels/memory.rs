//! Memory requirement: runtime scratch per kernel, and peak live activations from a liveness walk over
//! the execution order (a tensor is freed after its last consumer).
use super::{Kernel, KernelKind};
use crate::model::{Graph, TensorId};

/// Buffers the runtime allocates while the kernel runs, beyond its inputs and outputs: a padded copy of
/// the input for k×k convolutions, and a packed copy of the activations for matmul-based kernels.
pub fn scratch_bytes(k: &Kernel) -> u64 {
    let elem = 4u64;
    match k.kind {
        KernelKind::Conv => {
            let pad_h = k.hin as u64 + (k.kernel_size[0] as u64).saturating_sub(1);
            let pad_w = k.win as u64 + (k.kernel_size[1] as u64).saturating_sub(1);
            k.cin as u64 * pad_h * pad_w * elem
        }
        KernelKind::Pointwise | KernelKind::MatMul => k.input_bytes,
        _ => 0,
    }
}

/// Peak bytes of live activations plus the running kernel's scratch, walking kernels in order.
/// `io[i]` lists the activation tensors kernel `i` reads and the one it writes.
pub fn peak_activation_bytes(
    g: &Graph,
    kernels: &[Kernel],
    io: &[(Vec<TensorId>, TensorId)],
) -> u64 {
    let mut last_use = vec![None; g.tensors.len()];
    for (step, (ins, _)) in io.iter().enumerate() {
        for &t in ins {
            last_use[t] = Some(step);
        }
    }
    for &t in &g.outputs {
        last_use[t] = Some(usize::MAX);
    }
    let mut live: u64 = g.inputs.iter().map(|&t| g.tensor(t).bytes()).sum();
    let mut peak = live;
    for (step, ((ins, out), k)) in io.iter().zip(kernels).enumerate() {
        live += g.tensor(*out).bytes();
        peak = peak.max(live + k.scratch_bytes);
        for &t in ins {
            if last_use[t] == Some(step) {
                live = live.saturating_sub(g.tensor(t).bytes());
            }
        }
        if last_use[*out].is_none() {
            live = live.saturating_sub(g.tensor(*out).bytes());
        }
    }
    peak
}
