//! Layout ops: MatMul, ConcatV2, Mean, Pad and the views (Reshape, Squeeze, Flatten, ExpandDims),
//! with their axes moved from the file's NHWC to NCHW.
use super::{Builder, Out, nchw, nchw_axis, show};
use crate::model::error::ImportError;
use crate::model::graph::{Attr, Attrs as NodeAttrs};
use crate::model::nnmeter::attributes::{Attrs, Dims};

impl Builder {
    pub(super) fn matmul(
        &mut self,
        name: &str,
        a: Attrs,
        x: &Out,
        weight_in: Option<&Out>,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        let [m, k] = x.nhwc[..] else {
            return Err(err(format!(
                "MatMul input {} is not 2-D (flatten it first)",
                show(&x.nhwc)
            )));
        };
        let trans_b = a.bool("transpose_b").unwrap_or(false);
        let nout = match (
            a.ints("weight_shape").map_err(|e| err(e.to_string()))?,
            weight_in,
        ) {
            (Some(ws), _) => match ws[..] {
                [wk, wn] => {
                    let (wk, wn) = if trans_b { (wn, wk) } else { (wk, wn) };
                    if wk.max(0) as usize != k {
                        return Err(err(format!(
                            "the weight {ws:?} wants {wk} inputs, the input has {k}"
                        )));
                    }
                    wn.max(0) as usize
                }
                _ => return Err(err(format!("weight shape {ws:?} is not 2-D"))),
            },
            (None, Some(wi)) => {
                let [wk, wn] = wi.nhwc[..] else {
                    return Err(err(format!("weight {} is not 2-D", show(&wi.nhwc))));
                };
                let (wk, wn) = if trans_b { (wn, wk) } else { (wk, wn) };
                if wk != k {
                    return Err(err(format!(
                        "the weight {} wants {wk} inputs, the input has {k}",
                        show(&wi.nhwc)
                    )));
                }
                wn
            }
            (None, None) => stated
                .and_then(|s| s.last().copied().flatten())
                .ok_or_else(|| {
                    err("no weight_shape, and no output_shape to tell the output size".into())
                })?,
        };
        if nout == 0 {
            return Err(err("the output size is zero".into()));
        }
        let weight = match weight_in {
            Some(wi) => wi.tensor,
            None => {
                let w = self.checked(name, vec![k, nout])?;
                self.tensor(format!("{name}/weight"), w, true)
            }
        };
        let out_nhwc = vec![m, nout];
        let out = self.tensor(name.to_string(), out_nhwc.clone(), false);
        self.push(
            name,
            "MatMul",
            NodeAttrs::new(),
            vec![x.tensor, weight],
            out,
        );
        self.finish(name, out, out_nhwc, stated)
    }

    pub(super) fn concat(
        &mut self,
        name: &str,
        a: Attrs,
        acts: &[&Out],
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        let first = &acts[0].nhwc;
        let rank = first.len() as i64;
        let axis = a.int("axis").unwrap_or(-1);
        let axis = if axis < 0 { axis + rank } else { axis };
        if axis < 0 || axis >= rank {
            return Err(err(format!("axis {axis} is out of range for rank {rank}")));
        }
        let axis = axis as usize;
        let mut out_nhwc = first.clone();
        for o in &acts[1..] {
            let same_rest = o.nhwc.len() == first.len()
                && o.nhwc
                    .iter()
                    .zip(first)
                    .enumerate()
                    .all(|(i, (p, q))| i == axis || p == q);
            if !same_rest {
                return Err(err(format!(
                    "inputs {} and {} differ outside the concatenation axis {axis}",
                    show(first),
                    show(&o.nhwc)
                )));
            }
            out_nhwc[axis] += o.nhwc[axis];
        }
        let out = self.tensor(name.to_string(), nchw(&out_nhwc), false);
        let mut attrs = NodeAttrs::new();
        attrs.insert(
            "axis".into(),
            Attr::Int(nchw_axis(axis, first.len()) as i64),
        );
        let ins = acts.iter().map(|o| o.tensor).collect();
        self.push(name, "Concat", attrs, ins, out);
        self.finish(name, out, out_nhwc, stated)
    }

    pub(super) fn mean(
        &mut self,
        name: &str,
        a: Attrs,
        x: &Out,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        let rank = x.nhwc.len() as i64;
        let raw = a
            .ints("reduction_indices")
            .map_err(|e| err(e.to_string()))?
            .or(a.ints("axis").map_err(|e| err(e.to_string()))?)
            .unwrap_or_else(|| vec![1, 2]);
        let mut axes = Vec::new();
        for r in raw {
            let ax = if r < 0 { r + rank } else { r };
            if ax < 0 || ax >= rank {
                return Err(err(format!(
                    "reduction axis {r} is out of range for rank {rank}"
                )));
            }
            if !axes.contains(&(ax as usize)) {
                axes.push(ax as usize);
            }
        }
        axes.sort_unstable();
        // nn-Meter does not keep TF's keep_dims; the stated output rank tells it.
        let keep = match a.get("keep_dims").or_else(|| a.get("keepdims")) {
            Some(v) => v.as_bool().unwrap_or(v.as_i64() == Some(1)),
            None => stated.is_some_and(|s| s.len() == x.nhwc.len()),
        };
        let out_nhwc: Vec<usize> = x
            .nhwc
            .iter()
            .enumerate()
            .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        let out_shape = if keep {
            nchw(&out_nhwc)
        } else {
            out_nhwc.clone()
        };
        let out = self.tensor(name.to_string(), out_shape, false);
        let spatial = x.nhwc.len() == 4 && axes == [1, 2];
        if spatial && keep {
            self.push(
                name,
                "GlobalAveragePool",
                NodeAttrs::new(),
                vec![x.tensor],
                out,
            );
        } else {
            let mut attrs = NodeAttrs::new();
            let mapped: Vec<i64> = axes
                .iter()
                .map(|&ax| nchw_axis(ax, x.nhwc.len()) as i64)
                .collect();
            attrs.insert("axes".into(), Attr::Ints(mapped));
            attrs.insert("keepdims".into(), Attr::Int(keep as i64));
            self.push(name, "ReduceMean", attrs, vec![x.tensor], out);
        }
        self.finish(name, out, out_nhwc, stated)
    }

    pub(super) fn pad(
        &mut self,
        name: &str,
        a: Attrs,
        x: &Out,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        let rank = x.nhwc.len();
        let out_nhwc: Vec<usize> = match a.ints("paddings").map_err(|e| err(e.to_string()))? {
            Some(p) if p.len() == 2 * rank => {
                if p.iter().any(|&v| !(0..=u32::MAX as i64).contains(&v)) {
                    return Err(err(format!("paddings {p:?} must be non-negative")));
                }
                x.nhwc
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| d + p[2 * i] as usize + p[2 * i + 1] as usize)
                    .collect()
            }
            Some(p) => {
                return Err(err(format!("paddings {p:?} do not fit rank {rank}")));
            }
            None => known(stated).ok_or_else(|| {
                err(
                    "no paddings attribute and no output_shape: cannot tell the padded shape"
                        .into(),
                )
            })?,
        };
        if out_nhwc.len() != rank || out_nhwc.iter().zip(&x.nhwc).any(|(o, i)| o < i) {
            return Err(err(format!(
                "padding {} to {} is not a padding",
                show(&x.nhwc),
                show(&out_nhwc)
            )));
        }
        let pads: Vec<i64> = {
            let before: Vec<i64> = (0..rank).map(|_| 0).collect();
            let after: Vec<i64> = out_nhwc
                .iter()
                .zip(&x.nhwc)
                .map(|(o, i)| (o - i) as i64)
                .collect();
            let (mut b, mut e) = (before, after);
            if rank == 4 {
                b = vec![b[0], b[3], b[1], b[2]];
                e = vec![e[0], e[3], e[1], e[2]];
            }
            b.into_iter().chain(e).collect()
        };
        let out = self.tensor(name.to_string(), nchw(&out_nhwc), false);
        let mut attrs = NodeAttrs::new();
        attrs.insert("pads".into(), Attr::Ints(pads));
        self.push(name, "Pad", attrs, vec![x.tensor], out);
        self.finish(name, out, out_nhwc, stated)
    }

    /// Reshape, Squeeze, Flatten, ExpandDims: views. The output shape is the stated one, else the
    /// `shape` attribute (one `-1` allowed), else squeezing or flattening by the op's rule.
    pub(super) fn reshape(
        &mut self,
        name: &str,
        a: Attrs,
        x: &Out,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        let elems: u64 = x.nhwc.iter().map(|&d| d as u64).product();
        let from_attr = match a.ints("shape").map_err(|e| err(e.to_string()))? {
            Some(s) => Some(resolve_reshape(&s, elems).ok_or_else(|| {
                err(format!(
                    "shape {s:?} cannot hold the {elems} elements of {}",
                    show(&x.nhwc)
                ))
            })?),
            None => None,
        };
        let stated_known = if self.check_stated {
            known(stated)
        } else {
            None
        };
        let out_nhwc = match (stated_known, from_attr) {
            (Some(s), _) => s,
            (None, Some(s)) => s,
            (None, None) => match a.ints("squeeze_dims").map_err(|e| err(e.to_string()))? {
                Some(dims) if !dims.is_empty() => x
                    .nhwc
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| {
                        !dims.iter().any(|&d| {
                            let d = if d < 0 { d + x.nhwc.len() as i64 } else { d };
                            d == *i as i64
                        })
                    })
                    .map(|(_, &d)| d)
                    .collect(),
                // Squeeze without dims drops every 1; Flatten keeps the batch.
                _ if x.nhwc.len() > 1 => {
                    let kept: Vec<usize> = x.nhwc.iter().copied().filter(|&d| d != 1).collect();
                    if kept.len() <= 1 {
                        vec![x.nhwc[0], (elems / x.nhwc[0].max(1) as u64) as usize]
                    } else {
                        kept
                    }
                }
                _ => x.nhwc.clone(),
            },
        };
        let out_elems: u64 = out_nhwc.iter().map(|&d| d as u64).product();
        if out_elems != elems {
            return Err(err(format!(
                "reshaping {} ({elems} elements) to {} ({out_elems} elements)",
                show(&x.nhwc),
                show(&out_nhwc)
            )));
        }
        let out = self.tensor(name.to_string(), nchw(&out_nhwc), false);
        let mut attrs = NodeAttrs::new();
        attrs.insert(
            "shape".into(),
            Attr::Ints(nchw(&out_nhwc).iter().map(|&d| d as i64).collect()),
        );
        self.push(name, "Reshape", attrs, vec![x.tensor], out);
        let nhwc = self.checked(name, out_nhwc)?;
        Ok(Out::new(out, nhwc))
    }
}

/// A stated shape with every dimension known.
fn known(stated: Option<&Dims>) -> Option<Vec<usize>> {
    let s = stated?;
    if s.is_empty() {
        return None;
    }
    s.iter().copied().collect()
}

/// A TF reshape target with at most one `-1`, resolved against an element count.
fn resolve_reshape(s: &[i64], elems: u64) -> Option<Vec<usize>> {
    let unknown = s.iter().filter(|&&d| d < 0).count();
    let known: u64 = s
        .iter()
        .filter(|&&d| d >= 0)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))?;
    match unknown {
        0 => (known == elems).then(|| s.iter().map(|&d| d as usize).collect()),
        1 if known > 0 && elems.is_multiple_of(known) => Some(
            s.iter()
                .map(|&d| {
                    if d < 0 {
                        (elems / known) as usize
                    } else {
                        d as usize
                    }
                })
                .collect(),
        ),
        _ => None,
    }
}
