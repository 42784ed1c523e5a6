//! The builder's data-movement ops: Softmax, Concat, Transpose, Reshape, Flatten and Slice.
use super::{BuildError, GraphBuilder, dims, fmt_shape};
use crate::model::graph::{Attr, Attrs, DType, TensorId};

impl GraphBuilder {
    /// Softmax along `axis`.
    pub fn softmax(&mut self, x: TensorId, axis: usize) -> Result<TensorId, BuildError> {
        const OP: &str = "Softmax";
        let s = self.operand(OP, x, None)?;
        if axis >= s.len() {
            return Err(self.invalid(OP, format!("axis {axis} is out of {}", fmt_shape(&s))));
        }
        let attrs = Attrs::from([("axis".into(), Attr::Int(axis as i64))]);
        Ok(self.push(OP, vec![x], attrs, s))
    }

    pub fn concat(&mut self, xs: &[TensorId], axis: usize) -> Result<TensorId, BuildError> {
        const OP: &str = "Concat";
        let Some((&first, rest)) = xs.split_first() else {
            return Err(self.invalid(OP, "needs at least one input"));
        };
        let mut out = self.operand(OP, first, None)?;
        if axis >= out.len() {
            return Err(self.invalid(OP, format!("axis {axis} is out of {}", fmt_shape(&out))));
        }
        for &x in rest {
            let s = self.operand(OP, x, None)?;
            let compatible = s.len() == out.len()
                && s.iter()
                    .zip(&out)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !compatible {
                return Err(self.invalid(
                    OP,
                    format!(
                        "{} and {} differ off axis {axis}",
                        fmt_shape(&out),
                        fmt_shape(&s)
                    ),
                ));
            }
            out[axis] += s[axis];
        }
        let attrs = Attrs::from([("axis".into(), Attr::Int(axis as i64))]);
        Ok(self.push(OP, xs.to_vec(), attrs, out))
    }

    pub fn transpose(&mut self, x: TensorId, perm: &[usize]) -> Result<TensorId, BuildError> {
        const OP: &str = "Transpose";
        let s = self.operand(OP, x, None)?;
        let mut seen = vec![false; s.len()];
        let valid = perm.len() == s.len()
            && perm
                .iter()
                .all(|&p| p < s.len() && !std::mem::replace(&mut seen[p], true));
        if !valid {
            return Err(self.invalid(
                OP,
                format!(
                    "{perm:?} is not a permutation of the axes of {}",
                    fmt_shape(&s)
                ),
            ));
        }
        let out = perm.iter().map(|&p| s[p]).collect();
        let attrs = Attrs::from([("perm".into(), Attr::Ints(dims(perm)))]);
        Ok(self.push(OP, vec![x], attrs, out))
    }

    /// Reshape with ONNX semantics: `0` copies the input dimension, one `-1` takes what is left.
    pub fn reshape(&mut self, x: TensorId, shape: &[i64]) -> Result<TensorId, BuildError> {
        const OP: &str = "Reshape";
        let s = self.operand(OP, x, None)?;
        let total: usize = s.iter().product();
        let mut out = Vec::with_capacity(shape.len());
        let mut infer = None;
        for (i, &d) in shape.iter().enumerate() {
            match d {
                -1 if infer.is_none() => {
                    infer = Some(i);
                    out.push(1);
                }
                0 if i < s.len() => out.push(s[i]),
                d if d > 0 => out.push(d as usize),
                _ => {
                    return Err(self.invalid(OP, format!("{shape:?} is not a valid target shape")));
                }
            }
        }
        let known: usize = out.iter().product();
        if let Some(i) = infer {
            if known == 0 || !total.is_multiple_of(known) {
                return Err(
                    self.invalid(OP, format!("cannot fit {} into {shape:?}", fmt_shape(&s)))
                );
            }
            out[i] = total / known;
        } else if known != total {
            return Err(self.invalid(
                OP,
                format!(
                    "{} has {total} elements, {shape:?} has {known}",
                    fmt_shape(&s)
                ),
            ));
        }
        let name = self.next_name(OP);
        let target = self.const_weight(&name, "shape", vec![out.len()], DType::I64);
        Ok(self.push(OP, vec![x, target], Attrs::new(), out))
    }

    /// Flatten to [prod(dims before axis), prod(dims from axis)].
    pub fn flatten(&mut self, x: TensorId, axis: usize) -> Result<TensorId, BuildError> {
        const OP: &str = "Flatten";
        let s = self.operand(OP, x, None)?;
        if axis > s.len() {
            return Err(self.invalid(OP, format!("axis {axis} is out of {}", fmt_shape(&s))));
        }
        let out = vec![s[..axis].iter().product(), s[axis..].iter().product()];
        let attrs = Attrs::from([("axis".into(), Attr::Int(axis as i64))]);
        Ok(self.push(OP, vec![x], attrs, out))
    }

    /// Slice `[start, end)` with `step` along each of `axes` (ends past the dimension are clamped).
    pub fn slice(
        &mut self,
        x: TensorId,
        axes: &[usize],
        starts: &[usize],
        ends: &[usize],
        steps: &[usize],
    ) -> Result<TensorId, BuildError> {
        const OP: &str = "Slice";
        let s = self.operand(OP, x, None)?;
        let n = axes.len();
        if n == 0 || starts.len() != n || ends.len() != n || steps.len() != n {
            return Err(self.invalid(
                OP,
                "axes, starts, ends and steps must be non-empty and of the same length",
            ));
        }
        let mut out = s.clone();
        let mut seen = vec![false; s.len()];
        for i in 0..n {
            let (axis, step) = (axes[i], steps[i]);
            if axis >= s.len() || std::mem::replace(&mut seen[axis], true) || step == 0 {
                return Err(self.invalid(
                    OP,
                    format!(
                        "axis {axis} (step {step}) is repeated, out of {}, or has a zero step",
                        fmt_shape(&s)
                    ),
                ));
            }
            let end = ends[i].min(s[axis]);
            if starts[i] >= end {
                return Err(self.invalid(
                    OP,
                    format!(
                        "[{}, {}) along axis {axis} of {} is empty",
                        starts[i],
                        ends[i],
                        fmt_shape(&s)
                    ),
                ));
            }
            out[axis] = (end - starts[i]).div_ceil(step);
        }
        let name = self.next_name(OP);
        let mut inputs = vec![x];
        for role in ["starts", "ends", "axes", "steps"] {
            inputs.push(self.const_weight(&name, role, vec![n], DType::I64));
        }
        let attrs = Attrs::from([
            ("starts".into(), Attr::Ints(dims(starts))),
            ("ends".into(), Attr::Ints(dims(ends))),
            ("axes".into(), Attr::Ints(dims(axes))),
            ("steps".into(), Attr::Ints(dims(steps))),
        ]);
        Ok(self.push(OP, inputs, attrs, out))
    }
}
