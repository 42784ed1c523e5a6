//! Numpy broadcasting of two static shapes: the one rule every importer and the builder share for
//! elementwise ops.

/// The shape two operands broadcast to (trailing axes aligned, a 1 stretches), `None` when they
/// are incompatible.
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::broadcast;

    #[test]
    fn numpy_rules() {
        assert_eq!(broadcast(&[3, 1, 5], &[4, 1]), Some(vec![3, 4, 5]));
        assert_eq!(broadcast(&[], &[2, 3]), Some(vec![2, 3]));
        assert_eq!(broadcast(&[2, 3], &[3, 3]), None);
        assert_eq!(
            broadcast(&[1, 1, 1, 16], &[1, 56, 56, 16]),
            Some(vec![1, 56, 56, 16])
        );
    }
}
