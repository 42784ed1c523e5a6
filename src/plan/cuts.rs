//! Cut points of a model: the places in its execution order where a prefix can run on one board and
//! the suffix on another, because only one tensor (or a small set) crosses from one to the other.
//!
//! Entry point: [`cut_points`].
use crate::kernels::Decomposition;
use crate::model::{Graph, TensorId};

/// How many tensors may cross a cut. One is the Neurosurgeon cut of a chain; two let a cut through
/// a residual block (the skip tensor travels beside the branch's), which is off by default: it sends
/// the block's input and its intermediate both, where a cut before or after the block sends one.
#[derive(Clone, Copy, Debug)]
pub struct CutOptions {
    pub max_tensors: usize,
}

impl Default for CutOptions {
    fn default() -> CutOptions {
        CutOptions { max_tensors: 1 }
    }
}

/// The most tensors a cut may send: beyond two a cut is a bundle of edges, not a point.
pub const MAX_CROSSING: usize = 2;

/// One place to cut a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Cut {
    /// The crossing tensors' names joined by `+`: unique within a model, and what `augur split
    /// --cut` takes.
    pub name: String,
    /// Graph nodes `..position` are the prefix, `position..` the suffix.
    pub position: usize,
    /// The tensors that cross, in the order the prefix produces them.
    pub tensors: Vec<TensorId>,
    /// Their bytes together.
    pub bytes: u64,
    /// Kernels `..kernels_before` of the decomposition are the prefix, the rest the suffix.
    pub kernels_before: usize,
    /// The last kernel of the prefix and the first of the suffix, by name.
    pub kernel_before: String,
    pub kernel_after: String,
}

/// Where kernel boundaries fall: for each graph position `p` (0 ..= nodes), the number of kernels
/// whose nodes all come before `p`, or `None` when a fused kernel has nodes on both sides of `p`.
pub fn kernel_boundaries(d: &Decomposition, n_nodes: usize) -> Vec<Option<usize>> {
    boundaries(
        d.kernel_nodes
            .iter()
            .filter_map(|nodes| Some((*nodes.iter().min()?, *nodes.iter().max()?))),
        n_nodes,
    )
}

/// [`kernel_boundaries`] of kernels known only by their first and last node, `(lo, hi)` each: what
/// another augur daemon answers of its own decomposition.
pub fn boundaries(
    kernels: impl IntoIterator<Item = (usize, usize)>,
    n_nodes: usize,
) -> Vec<Option<usize>> {
    let mut inside = vec![false; n_nodes + 1];
    let mut ends = vec![0usize; n_nodes + 1];
    for (lo, hi) in kernels {
        for flag in inside.iter_mut().take(hi.min(n_nodes) + 1).skip(lo + 1) {
            *flag = true;
        }
        if hi < n_nodes {
            ends[hi + 1] += 1;
        }
    }
    let mut out = Vec::with_capacity(n_nodes + 1);
    let mut done = 0;
    for p in 0..=n_nodes {
        done += ends[p];
        out.push((!inside[p]).then_some(done));
    }
    out
}

/// The cut points of `g`, whose decomposition (under the fusion rules of the board that runs the
/// prefix) is `d`, in execution order. A cut is offered where at most `opts.max_tensors` activation
/// tensors cross, at least one kernel runs on each side, no fused kernel is cut in two, no model
/// output is computed by the prefix, and the model's input does not itself cross (the prefix would
/// then be a side branch). Positions that differ only by view ops (reshape, flatten) give one cut.
pub fn cut_points(g: &Graph, d: &Decomposition, opts: CutOptions) -> Vec<Cut> {
    let n = g.nodes.len();
    if d.kernel_nodes.len() != d.kernels.len() || n == 0 {
        // A decomposition read back from JSON has no node lists: no cut can be placed.
        return Vec::new();
    }
    let max = opts.max_tensors.clamp(1, MAX_CROSSING);
    let consumers = g.consumers();
    // The last node that reads each tensor (a model output is read "after the end").
    let mut last_use: Vec<Option<usize>> =
        consumers.iter().map(|c| c.iter().max().copied()).collect();
    for &t in &g.outputs {
        if let Some(slot) = last_use.get_mut(t) {
            *slot = Some(usize::MAX);
        }
    }
    let boundaries = kernel_boundaries(d, n);
    let is_input = |t: TensorId| g.inputs.contains(&t);
    let mut open: Vec<TensorId> = g
        .inputs
        .iter()
        .copied()
        .filter(|&t| last_use.get(t).copied().flatten().is_some())
        .collect();
    let mut cuts: Vec<Cut> = Vec::new();
    for p in 1..n {
        let node = &g.nodes[p - 1];
        for &t in &node.outputs {
            let Some(tensor) = g.tensors.get(t) else {
                continue;
            };
            if !tensor.is_weight && last_use[t].is_some_and(|u| u >= p) && !open.contains(&t) {
                open.push(t);
            }
        }
        open.retain(|&t| last_use[t].is_some_and(|u| u >= p));
        let Some(Some(k)) = boundaries.get(p).copied() else {
            continue;
        };
        if k == 0 || k >= d.kernels.len() || open.is_empty() || open.len() > max {
            continue;
        }
        if open.iter().any(|&t| is_input(t) || g.outputs.contains(&t)) {
            continue;
        }
        if cuts.last().is_some_and(|c| c.kernels_before == k) {
            // The same kernels on each side, the same data reshaped: the earlier view is the cut.
            continue;
        }
        let name = open
            .iter()
            .map(|&t| &*g.tensor(t).name)
            .collect::<Vec<_>>()
            .join("+");
        cuts.push(Cut {
            name,
            position: p,
            tensors: open.clone(),
            bytes: open.iter().map(|&t| g.tensor(t).bytes()).sum(),
            kernels_before: k,
            kernel_before: d.kernels[k - 1].name.clone(),
            kernel_after: d.kernels[k].name.clone(),
        });
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{FusionRules, decompose};
    use crate::model::builder::GraphBuilder;

    /// A 3×3 convolution with its batchnorm (folded into it: one kernel) and a ReLU (its own
    /// kernel under tract's rules).
    fn conv(b: &mut GraphBuilder, x: TensorId, c: usize) -> TensorId {
        let y = b
            .conv(x, c, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, true)
            .unwrap();
        let y = b.batchnorm(y).unwrap();
        b.relu(y).unwrap()
    }

    fn chain() -> Graph {
        let mut b = GraphBuilder::new("chain");
        let x = b.input(&[1, 3, 16, 16]);
        let a = conv(&mut b, x, 8);
        let c = conv(&mut b, a, 8);
        let p = b.maxpool(c, [2, 2], [2, 2], [0; 4]).unwrap();
        let d = conv(&mut b, p, 16);
        let s = b.global_avg_pool(d).unwrap();
        let r = b.reshape(s, &[1, -1]).unwrap();
        let f = b.gemm(r, 10, true).unwrap();
        b.finish(&[f]).unwrap()
    }

    /// A stem, two residual blocks (conv-relu-conv + skip, relu), a head.
    fn residual() -> (Graph, Vec<(usize, usize)>) {
        let mut b = GraphBuilder::new("residual");
        let x = b.input(&[1, 3, 16, 16]);
        let mut h = conv(&mut b, x, 8);
        let mut blocks = Vec::new();
        for _ in 0..2 {
            let start = b.graph().nodes.len();
            let y = conv(&mut b, h, 8);
            let y = b
                .conv(y, 8, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, true)
                .unwrap();
            let y = b.add(y, h).unwrap();
            h = b.relu(y).unwrap();
            blocks.push((start, b.graph().nodes.len()));
        }
        let s = b.global_avg_pool(h).unwrap();
        let r = b.reshape(s, &[1, -1]).unwrap();
        let f = b.gemm(r, 10, true).unwrap();
        (b.finish(&[f]).unwrap(), blocks)
    }

    #[test]
    fn a_chain_is_cut_between_every_pair_of_kernels() {
        let g = chain();
        let d = decompose(&g, &FusionRules::tract_default()).unwrap();
        let cuts = cut_points(&g, &d, CutOptions::default());
        // Every kernel boundary of a chain is a cut: one fewer than the kernels.
        assert_eq!(cuts.len(), d.kernels.len() - 1, "{cuts:#?}");
        for (i, c) in cuts.iter().enumerate() {
            assert_eq!(c.kernels_before, i + 1);
            assert_eq!(c.tensors.len(), 1);
            assert_eq!(c.bytes, g.tensor(c.tensors[0]).bytes());
            assert_eq!(c.kernel_before, d.kernels[i].name);
            assert_eq!(c.kernel_after, d.kernels[i + 1].name);
        }
        // The first cut sends the first conv's 8×16×16 float output.
        assert_eq!(cuts[0].bytes, 8 * 16 * 16 * 4);
        let names: std::collections::HashSet<_> = cuts.iter().map(|c| &c.name).collect();
        assert_eq!(names.len(), cuts.len());
    }

    #[test]
    fn a_cut_is_never_inside_a_residual_block_or_a_fused_kernel() {
        let (g, blocks) = residual();
        let rules = FusionRules::tract_default();
        let d = decompose(&g, &rules).unwrap();
        let cuts = cut_points(&g, &d, CutOptions::default());
        assert!(!cuts.is_empty());
        for c in &cuts {
            for &(start, end) in &blocks {
                assert!(
                    c.position <= start || c.position >= end,
                    "cut {} at {} inside the block {start}..{end}",
                    c.name,
                    c.position
                );
            }
            for nodes in &d.kernel_nodes {
                let (lo, hi) = (nodes[0], *nodes.last().unwrap());
                assert!(
                    c.position <= lo || c.position > hi,
                    "{} splits a kernel",
                    c.name
                );
            }
        }
        // Between the blocks and around them: after the stem, after each block, after the pool.
        let at: Vec<usize> = cuts.iter().map(|c| c.position).collect();
        assert!(at.contains(&blocks[0].0), "{at:?}");
        assert!(at.contains(&blocks[1].0), "{at:?}");
        assert!(at.contains(&blocks[1].1), "{at:?}");
        // Allowing two crossing tensors opens the blocks (the skip beside the branch).
        let two = cut_points(&g, &d, CutOptions { max_tensors: 2 });
        assert!(two.len() > cuts.len());
        assert!(two.iter().any(|c| {
            c.tensors.len() == 2
                && blocks
                    .iter()
                    .any(|&(s, e)| c.position > s && c.position < e)
        }));
    }

    #[test]
    fn no_fusion_puts_a_boundary_after_every_op() {
        let g = chain();
        let fused = decompose(&g, &FusionRules::tract_default()).unwrap();
        let plain = decompose(&g, &FusionRules::none("x")).unwrap();
        let a = cut_points(&g, &fused, CutOptions::default());
        let b = cut_points(&g, &plain, CutOptions::default());
        assert!(
            b.len() > a.len(),
            "{} fused kernels {:?}, {} plain {:?}",
            fused.kernels.len(),
            a.iter().map(|c| c.position).collect::<Vec<_>>(),
            plain.kernels.len(),
            b.iter().map(|c| c.position).collect::<Vec<_>>()
        );
        let b_at: Vec<usize> = b.iter().map(|c| c.position).collect();
        assert!(a.iter().all(|c| b_at.contains(&c.position)));
    }

    /// The benchmark's model: pointwise convolutions with their ReLU fused, one cut per pair.
    #[test]
    fn a_chain_of_fused_pointwise_kernels_has_one_cut_fewer_than_kernels() {
        let mut b = GraphBuilder::new("pw");
        let mut h = b.input(&[1, 16, 8, 8]);
        for _ in 0..5 {
            h = b
                .conv(h, 16, [1, 1], [1, 1], [0; 4], [1, 1], 1, true)
                .unwrap();
            h = b.relu(h).unwrap();
        }
        let g = b.finish(&[h]).unwrap();
        let d = decompose(&g, &FusionRules::tract_default()).unwrap();
        assert_eq!(d.kernels.len(), 5);
        assert_eq!(cut_points(&g, &d, CutOptions::default()).len(), 4);
    }

    #[test]
    fn a_decomposition_without_node_lists_has_no_cuts() {
        let g = chain();
        let mut d = decompose(&g, &FusionRules::tract_default()).unwrap();
        d.kernel_nodes.clear();
        assert!(cut_points(&g, &d, CutOptions::default()).is_empty());
    }
}
