//! How far to trust the shapes an nn-Meter file states. nn-Meter's converter infers them itself, and
//! two of its rules rewrite the shape already stored for a node's *input* in place (the stored list is
//! aliased, not copied): its broadcasting rule for Add, AddN, AddV2, Sub and Mul raises the first
//! input's dimensions to the broadcast result, and its Mean rule deletes the reduced axes from the
//! input's shape. The rewritten shape is then what the file states as that producer's output and as
//! the consumer's input: the squeeze-excitation scale `[1, 1, 1, C]` is stated as `[1, H, W, C]`, the
//! tensor before the final Mean as `[1, C]`. Shapes are inferred here independently, and a stated
//! shape that differs is accepted only where one of those rewrites by an actual consumer explains it.
use super::attributes::Dims;
use super::decode::Decoded;
use std::collections::HashMap;

/// nn-Meter's in-place rewrites that may have changed the stated shape of one node's output.
#[derive(Clone, Debug, Default)]
pub(super) struct Rewrites {
    /// A consumer broadcasts it: stated dimensions may be raised from 1.
    broadcast: bool,
    /// Consumers reduce it over these axes: the stated shape may lack them.
    reduced: Vec<Vec<i64>>,
}

/// The op types whose shape rule in nn-Meter's converter raises an input's stated shape in place.
const BROADCASTING: &[&str] = &["Add", "AddN", "AddV2", "Sub", "Mul"];

impl Rewrites {
    /// The rewrites its consumers may have made to each node's stated output, by node index, for
    /// the nodes that have any (most have none).
    pub(super) fn of(d: &Decoded, preds: &[Box<[usize]>]) -> HashMap<usize, Rewrites> {
        let mut r: HashMap<usize, Rewrites> = HashMap::new();
        for (ix, _, n) in d.records() {
            let Some(p) = preds.get(ix) else { continue };
            let reduced = match n.op() {
                op if BROADCASTING.contains(&op) => None,
                // The axes as the lowering reads them.
                "Mean" => {
                    let a = n.attrs();
                    let axes = a.ints("reduction_indices").ok().flatten();
                    let axes = axes.or_else(|| a.ints("axis").ok().flatten());
                    Some(axes.unwrap_or_else(|| vec![1, 2]))
                }
                _ => continue,
            };
            for &q in p {
                let e = r.entry(q).or_default();
                match &reduced {
                    None => e.broadcast = true,
                    Some(axes) => e.reduced.push(axes.clone()),
                }
            }
        }
        r
    }

    /// Whether `stated` is the shape `actual` as the file would state it: the same, or changed by one
    /// of the rewrites.
    pub(super) fn explain(&self, stated: &Dims, actual: &[usize]) -> bool {
        if agrees(stated, actual) {
            return true;
        }
        let raised = self.broadcast
            && stated.len() == actual.len()
            && stated
                .iter()
                .zip(actual)
                .all(|(s, &a)| a == 1 || s.is_none_or(|s| s == a));
        raised
            || self.reduced.iter().any(|axes| {
                let rank = actual.len() as i64;
                let on = |i: usize| {
                    axes.iter()
                        .any(|&a| (if a < 0 { a + rank } else { a }) == i as i64)
                };
                let kept: Vec<usize> = (0..actual.len())
                    .filter(|&i| !on(i))
                    .map(|i| actual[i])
                    .collect();
                agrees(stated, &kept)
            })
    }
}

fn agrees(stated: &Dims, actual: &[usize]) -> bool {
    stated.len() == actual.len()
        && stated
            .iter()
            .zip(actual)
            .all(|(s, a)| s.is_none_or(|s| s == *a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(v: &[usize]) -> Dims {
        v.iter().map(|&d| Some(d)).collect()
    }

    #[test]
    fn only_a_consumers_rewrite_explains_a_difference() {
        let none = Rewrites::default();
        assert!(none.explain(&dims(&[1, 4]), &[1, 4]));
        assert!(none.explain(&vec![None, Some(4)], &[1, 4]));
        assert!(!none.explain(&dims(&[1, 56, 56, 16]), &[1, 1, 1, 16]));
        let raised = Rewrites {
            broadcast: true,
            ..Default::default()
        };
        assert!(raised.explain(&dims(&[1, 56, 56, 16]), &[1, 1, 1, 16]));
        // Raising never changes a dimension that is not 1, nor the rank.
        assert!(!raised.explain(&dims(&[1, 56, 56, 16]), &[1, 1, 1, 8]));
        assert!(!raised.explain(&dims(&[56, 56, 16]), &[1, 1, 1, 16]));
        let reduced = Rewrites {
            reduced: vec![vec![1, 2]],
            ..Default::default()
        };
        assert!(reduced.explain(&dims(&[1, 1024]), &[1, 7, 7, 1024]));
        assert!(!reduced.explain(&dims(&[1, 1024]), &[1, 7, 7, 512]));
        assert!(!reduced.explain(&dims(&[1, 56, 56, 16]), &[1, 1, 1, 16]));
    }
}
