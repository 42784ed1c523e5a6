//! Local memory of a model's prefixes: for every number of leading kernels, the peak bytes the board
//! that runs them needs — their weights, plus the peak of live activations and scratch from a
//! liveness walk in the same way as `kernels::memory` (a tensor is freed after its last reader).
//!
//! Entry point: [`prefix_peaks`]. One walk gives every prefix at once: the activations live while
//! kernel `i` runs are the same in the whole model and in any prefix that contains `i`, because a
//! tensor the suffix reads stays live to the cut either way (it is the prefix's output there).
use crate::kernels::{Decomposition, classify};
use crate::model::{Graph, TensorId};

/// `out[k]`: peak local bytes of running kernels `..k` (so `out[0]` is the inputs alone, and the last
/// entry is the whole model's weights plus its peak activations).
pub fn prefix_peaks(g: &Graph, d: &Decomposition) -> Vec<u64> {
    let n_t = g.tensors.len();
    // Views (reshape, flatten …) share their input's buffer, as in the decomposition.
    let mut alias: Vec<TensorId> = (0..n_t).collect();
    for n in &g.nodes {
        if classify::class_of(g, n) == "alias"
            && let (Some(&i), Some(&o)) = (n.inputs.first(), n.outputs.first())
            && i < n_t
            && o < n_t
        {
            alias[o] = alias[i];
        }
    }
    let bytes = |t: TensorId| g.tensors.get(t).map(|x| x.bytes()).unwrap_or(0);
    let weight = |t: TensorId| g.tensors.get(t).is_some_and(|x| x.is_weight);
    // Per kernel: the activations it reads from outside itself, and the one it writes.
    let io: Vec<(Vec<TensorId>, Option<TensorId>)> = d
        .kernel_nodes
        .iter()
        .map(|nodes| {
            let inside: Vec<TensorId> = nodes
                .iter()
                .filter_map(|&n| g.nodes.get(n))
                .flat_map(|n| {
                    n.outputs
                        .iter()
                        .map(|&t| alias.get(t).copied().unwrap_or(t))
                })
                .collect();
            let mut ins = Vec::new();
            for node in nodes.iter().filter_map(|&n| g.nodes.get(n)) {
                for &t in &node.inputs {
                    let r = alias.get(t).copied().unwrap_or(t);
                    if !weight(r) && !inside.contains(&r) && !ins.contains(&r) {
                        ins.push(r);
                    }
                }
            }
            let out = nodes
                .last()
                .and_then(|&n| g.nodes.get(n))
                .and_then(|n| n.outputs.first())
                .map(|&t| alias.get(t).copied().unwrap_or(t));
            (ins, out)
        })
        .collect();
    let mut last_use = vec![None; n_t];
    for (step, (ins, _)) in io.iter().enumerate() {
        for &t in ins {
            if let Some(s) = last_use.get_mut(t) {
                *s = Some(step);
            }
        }
    }
    for &t in &g.outputs {
        if let Some(s) = alias.get(t).and_then(|&r| last_use.get_mut(r)) {
            *s = Some(usize::MAX);
        }
    }
    let mut live: u64 = g.inputs.iter().map(|&t| bytes(t)).sum();
    let mut peak = live;
    let mut weights = 0u64;
    let mut out = Vec::with_capacity(io.len() + 1);
    out.push(live);
    for (step, ((ins, o), k)) in io.iter().zip(&d.kernels).enumerate() {
        if let Some(o) = o {
            live += bytes(*o);
        }
        peak = peak.max(live + k.scratch_bytes);
        weights += k.weight_bytes;
        for &t in ins {
            if last_use.get(t).copied().flatten() == Some(step) {
                live = live.saturating_sub(bytes(t));
            }
        }
        if let Some(o) = o
            && last_use.get(*o).copied().flatten().is_none()
        {
            live = live.saturating_sub(bytes(*o));
        }
        out.push(weights + peak);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{FusionRules, decompose};
    use crate::model::builder::GraphBuilder;

    #[test]
    fn the_whole_prefix_is_the_whole_model_and_prefixes_grow() {
        let mut b = GraphBuilder::new("m");
        let x = b.input(&[1, 3, 32, 32]);
        let y = b
            .conv(x, 16, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, true)
            .unwrap();
        let y = b.relu(y).unwrap();
        let z = b
            .conv(y, 32, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 1, true)
            .unwrap();
        let s = b.global_avg_pool(z).unwrap();
        let r = b.reshape(s, &[1, -1]).unwrap();
        let f = b.gemm(r, 10, true).unwrap();
        let g = b.finish(&[f]).unwrap();
        let d = decompose(&g, &FusionRules::tract_default()).unwrap();
        let p = prefix_peaks(&g, &d);
        assert_eq!(p.len(), d.kernels.len() + 1);
        assert_eq!(p[0], 3 * 32 * 32 * 4);
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "{p:?}");
        // The walk over every kernel is the decomposition's own walk, plus the kernels' weights
        // (the reshape's shape constant belongs to no kernel).
        let weights: u64 = d.kernels.iter().map(|k| k.weight_bytes).sum();
        assert_eq!(*p.last().unwrap(), d.peak_activation_bytes + weights);
    }
}
