//! Execution order of a graph given as each node's predecessors: the one topological sort both
//! importers use.
use std::collections::BTreeSet;

/// Kahn's algorithm over `preds` (for each node, the indices of the nodes it reads; repeats allowed),
/// keeping file order wherever it is already valid so that reports list nodes as the file does. On a
/// cycle, the index of a node on it.
pub(crate) fn topo_order<P: AsRef<[usize]>>(preds: &[P]) -> Result<Vec<usize>, usize> {
    let n = preds.len();
    let mut indeg: Vec<usize> = preds.iter().map(|p| p.as_ref().len()).collect();
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, p) in preds.iter().enumerate() {
        for &q in p.as_ref() {
            succ[q].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &s in &succ[i] {
            indeg[s] -= 1;
            if indeg[s] == 0 {
                ready.insert(s);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Nodes left over are on a cycle or downstream of one: walking predecessors that are left over
    // must come back to a node already seen, and that one is on the cycle.
    let start = (0..n).find(|&i| indeg[i] > 0).unwrap_or(0);
    let mut seen = vec![false; n];
    let mut at = start;
    while !seen[at] {
        seen[at] = true;
        match preds[at].as_ref().iter().find(|&&p| indeg[p] > 0) {
            Some(&p) => at = p,
            None => break,
        }
    }
    Err(at)
}

#[cfg(test)]
mod tests {
    use super::topo_order;

    #[test]
    fn keeps_file_order_and_finds_cycles() {
        // 0 → 2 → 1: file order is not valid, the sort fixes it.
        assert_eq!(topo_order(&[vec![], vec![2], vec![0]]), Ok(vec![0, 2, 1]));
        // A node reading the same input twice.
        assert_eq!(topo_order(&[vec![], vec![0, 0]]), Ok(vec![0, 1]));
        // 1 ↔ 2 is a cycle; 3 hangs off it and is not reported.
        let e = topo_order(&[vec![], vec![0, 2], vec![1], vec![2]]).unwrap_err();
        assert!([1, 2].contains(&e), "{e}");
    }
}
