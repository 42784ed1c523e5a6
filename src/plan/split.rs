//! A model cut in two graphs at a cut point: the prefix, whose outputs are the tensors that cross,
//! and the suffix, whose inputs are the same tensors. Both keep the model's tensor table (unused
//! entries are not written by the exporter), so tensor ids mean the same thing in all three.
//!
//! Entry point: [`split`].
use super::cuts::Cut;
use crate::model::{Graph, TensorId};

/// The two halves of a model.
#[derive(Clone, Debug)]
pub struct Halves {
    pub prefix: Graph,
    pub suffix: Graph,
}

/// Cuts `g` at `cut` (a cut point of `g`, from [`super::cuts::cut_points`]).
pub fn split(g: &Graph, cut: &Cut) -> Halves {
    let at = cut.position.min(g.nodes.len());
    let prefix_nodes = g.nodes[..at].to_vec();
    let suffix_nodes = g.nodes[at..].to_vec();
    let reads =
        |nodes: &[crate::model::Node], t: TensorId| nodes.iter().any(|n| n.inputs.contains(&t));
    let prefix = Graph {
        name: format!("{}.prefix", g.name),
        tensors: g.tensors.clone(),
        inputs: g
            .inputs
            .iter()
            .copied()
            .filter(|&t| reads(&prefix_nodes, t))
            .collect(),
        outputs: cut.tensors.clone(),
        nodes: prefix_nodes,
    };
    let suffix = Graph {
        name: format!("{}.suffix", g.name),
        tensors: g.tensors.clone(),
        inputs: cut.tensors.clone(),
        outputs: g.outputs.clone(),
        nodes: suffix_nodes,
    };
    Halves { prefix, suffix }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{FusionRules, decompose};
    use crate::model::builder::GraphBuilder;
    use crate::model::export::to_onnx_bytes;
    use crate::model::import_bytes;
    use crate::plan::cuts::{CutOptions, cut_points};

    #[test]
    fn both_halves_import_again_and_their_macs_sum_to_the_model() {
        let mut b = GraphBuilder::new("m");
        let x = b.input(&[1, 3, 32, 32]);
        let y = b
            .conv(x, 16, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, true)
            .unwrap();
        let y = b.relu(y).unwrap();
        let z = b
            .conv(y, 16, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, true)
            .unwrap();
        let z = b.add(z, y).unwrap();
        let z = b.relu(z).unwrap();
        let s = b.global_avg_pool(z).unwrap();
        let r = b.reshape(s, &[1, -1]).unwrap();
        let f = b.gemm(r, 10, true).unwrap();
        let g = b.finish(&[f]).unwrap();
        let rules = FusionRules::tract_default();
        let d = decompose(&g, &rules).unwrap();
        let cuts = cut_points(&g, &d, CutOptions::default());
        assert!(cuts.len() >= 2);
        for c in &cuts {
            let h = split(&g, c);
            let back = |g: &Graph| {
                let bytes = to_onnx_bytes(g).unwrap();
                let back = import_bytes(&bytes, &g.name, None).unwrap();
                decompose(&back, &rules).unwrap()
            };
            let (p, s) = (back(&h.prefix), back(&h.suffix));
            assert_eq!(p.macs + s.macs, d.macs, "cut {}", c.name);
            assert_eq!(p.kernels.len(), c.kernels_before, "cut {}", c.name);
            assert_eq!(s.input_shapes.len(), c.tensors.len());
        }
    }
}
