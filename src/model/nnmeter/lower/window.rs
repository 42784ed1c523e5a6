//! Window ops: Conv2D, DepthwiseConv2dNative, AvgPool and MaxPool, with TensorFlow's SAME/VALID
//! geometry turned into explicit ONNX pads.
use super::{Builder, Out, nchw, show};
use crate::model::error::ImportError;
use crate::model::graph::{Attr, Attrs as NodeAttrs};
use crate::model::nnmeter::attributes::{Attrs, Dims};

/// A window op's geometry along one spatial axis.
struct Axis {
    out: usize,
    pad_begin: usize,
    pad_end: usize,
}

/// ONNX `pads` ([top, left, bottom, right]) of a window op.
fn pads(ah: &Axis, aw: &Axis) -> Attr {
    Attr::Ints(vec![
        ah.pad_begin as i64,
        aw.pad_begin as i64,
        ah.pad_end as i64,
        aw.pad_end as i64,
    ])
}

fn pair(p: [usize; 2]) -> Attr {
    Attr::Ints(vec![p[0] as i64, p[1] as i64])
}

/// One spatial axis of a window op as its caller sees it.
struct Window<'a> {
    what: &'a str,
    input: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    padding: &'a str,
    stated: Option<usize>,
}

impl Builder {
    /// Output size and padding of a window along one axis, TF's SAME/VALID rules; where the file states
    /// another output size that some padding smaller than the window gives, that is taken (nn-Meter's
    /// own shape inference computes VALID outputs of k×k convolutions as if k were 1).
    fn window_axis(&self, name: &str, w: Window) -> Result<Axis, ImportError> {
        let Window {
            what,
            input,
            k,
            stride,
            dilation,
            padding,
            stated,
        } = w;
        // Every factor is below 2^32 (attributes are checked), so none of this overflows a u64.
        let ext = dilation
            .saturating_mul(k.saturating_sub(1))
            .saturating_add(1);
        let (out, total) = match padding {
            "VALID" => {
                if input < ext {
                    return Err(self.shape_err(
                        name,
                        format!(
                            "{what}: a window of {ext} does not fit the input of {input} (VALID)"
                        ),
                    ));
                }
                ((input - ext) / stride + 1, 0)
            }
            _ => {
                let out = input.div_ceil(stride);
                let covered = (out - 1).saturating_mul(stride).saturating_add(ext);
                (out, covered.saturating_sub(input))
            }
        };
        let (out, total) = match stated {
            Some(s) if self.check_stated && s != out => {
                let need = (s - 1).saturating_mul(stride).saturating_add(ext);
                let total = need.checked_sub(input).filter(|&t| t < ext).ok_or_else(|| {
                    self.shape_err(
                        name,
                        format!(
                            "{what}: the file says the output is {s}, but a window of {ext} with stride \
                             {stride} over {input} gives {out} ({padding}) and no padding gives {s}"
                        ),
                    )
                })?;
                (s, total)
            }
            _ => (out, total),
        };
        Ok(Axis {
            out,
            pad_begin: total / 2,
            pad_end: total - total / 2,
        })
    }

    /// The weight as TF holds it: [kh, kw, cin, cout] (depthwise: [kh, kw, cin, multiplier]).
    fn conv_weight_shape(
        &self,
        name: &str,
        op: &str,
        a: Attrs,
        c: usize,
        weight_in: Option<&Out>,
        stated: Option<&Dims>,
    ) -> Result<Vec<usize>, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        if let Some(v) = a.ints("weight_shape").map_err(|e| err(e.to_string()))? {
            return Ok(v.iter().map(|&d| d.max(0) as usize).collect());
        }
        if let Some(wi) = weight_in {
            return Ok(wi.nhwc.clone());
        }
        let k = a
            .window("kernel_shape", 0)
            .map_err(|e| err(e.to_string()))?;
        let last = stated
            .and_then(|s| s.last().copied().flatten())
            .ok_or_else(|| {
                err("no weight_shape, and no output_shape to tell the output channels".into())
            })?;
        let mult = if op == "Conv2D" {
            last
        } else {
            last / c.max(1)
        };
        Ok(vec![k[0], k[1], c, mult])
    }

    pub(super) fn conv(
        &mut self,
        name: &str,
        op: &str,
        a: Attrs,
        x: &Out,
        weight_in: Option<&Out>,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        let [n, h, w, c] = x.nhwc[..] else {
            return Err(err(format!("input {} is not 4-D NHWC", show(&x.nhwc))));
        };
        let wshape = self.conv_weight_shape(name, op, a, c, weight_in, stated)?;
        let [kh, kw, wcin, wcout] = wshape[..] else {
            return Err(err(format!("weight shape {} is not 4-D", show(&wshape))));
        };
        if [kh, kw, wcin, wcout]
            .iter()
            .any(|&d| d == 0 || d > u32::MAX as usize)
        {
            return Err(err(format!(
                "weight shape {} is not a weight shape",
                show(&wshape)
            )));
        }
        let (group, cout, onnx_w) = if op == "Conv2D" {
            if c % wcin != 0 {
                return Err(err(format!(
                    "the weight {} wants {wcin} input channels (or a divisor of the input's), \
                     the input has {c}",
                    show(&wshape)
                )));
            }
            (c / wcin, wcout, vec![wcout, wcin, kh, kw])
        } else {
            if wcin != c {
                return Err(err(format!(
                    "the depthwise weight {} wants {wcin} input channels, the input has {c}",
                    show(&wshape)
                )));
            }
            let cout = c.saturating_mul(wcout);
            (c, cout, vec![cout, 1, kh, kw])
        };
        let s = a.window("strides", 1).map_err(|e| err(e.to_string()))?;
        let d = a.window("dilations", 1).map_err(|e| err(e.to_string()))?;
        let padding = a.str("padding");
        let padding = padding.as_deref().unwrap_or("SAME");
        let st = |i: usize| stated.and_then(|s| s.get(i).copied().flatten());
        let axis = |what, input, k, i: usize| Window {
            what,
            input,
            k,
            stride: s[i],
            dilation: d[i],
            padding,
            stated: st(i + 1),
        };
        let ah = self.window_axis(name, axis("height", h, kh, 0))?;
        let aw = self.window_axis(name, axis("width", w, kw, 1))?;
        let out_nhwc = vec![n, ah.out, aw.out, cout];
        let weight = match weight_in {
            Some(wi) => wi.tensor,
            None => {
                let w = self.checked(name, onnx_w)?;
                self.tensor(format!("{name}/weight"), w, true)
            }
        };
        let out = self.tensor(name.to_string(), nchw(&out_nhwc), false);
        let attrs = non_default([
            ("kernel_shape", pair([kh, kw])),
            ("strides", pair(s)),
            ("dilations", pair(d)),
            ("pads", pads(&ah, &aw)),
            ("group", Attr::Int(group as i64)),
        ]);
        self.push(name, "Conv", attrs, vec![x.tensor, weight], out);
        self.finish(name, out, out_nhwc, stated)
    }

    pub(super) fn pool(
        &mut self,
        name: &str,
        op: &str,
        a: Attrs,
        x: &Out,
        stated: Option<&Dims>,
    ) -> Result<Out, ImportError> {
        let err = |d: String| self.shape_err(name, d);
        let [n, h, w, c] = x.nhwc[..] else {
            return Err(err(format!("input {} is not 4-D NHWC", show(&x.nhwc))));
        };
        let k = a.window("ksize", 1).map_err(|e| err(e.to_string()))?;
        let s = a.window("strides", 1).map_err(|e| err(e.to_string()))?;
        let padding = a.str("padding");
        let padding = padding.as_deref().unwrap_or("VALID");
        let st = |i: usize| stated.and_then(|s| s.get(i).copied().flatten());
        let axis = |what, input, i: usize| Window {
            what,
            input,
            k: k[i],
            stride: s[i],
            dilation: 1,
            padding,
            stated: st(i + 1),
        };
        let ah = self.window_axis(name, axis("height", h, 0))?;
        let aw = self.window_axis(name, axis("width", w, 1))?;
        let out_nhwc = vec![n, ah.out, aw.out, c];
        let out = self.tensor(name.to_string(), nchw(&out_nhwc), false);
        let mut attrs = non_default([
            ("kernel_shape", pair(k)),
            ("strides", pair(s)),
            ("pads", pads(&ah, &aw)),
        ]);
        let onnx = if op == "AvgPool" {
            // TF averages over the valid part of the window only.
            attrs.insert("count_include_pad".into(), Attr::Int(0));
            "AveragePool"
        } else {
            "MaxPool"
        };
        self.push(name, onnx, attrs, vec![x.tensor], out);
        self.finish(name, out, out_nhwc, stated)
    }
}

/// A window op's attributes without those at ONNX's defaults (strides and dilations of 1, no
/// padding, one group): ONNX allows leaving them out, every reader of the graph falls back to
/// them, and without them a large upload's graph takes a sixth less memory.
fn non_default<const N: usize>(items: [(&'static str, Attr); N]) -> NodeAttrs {
    items
        .into_iter()
        .filter(|(k, v)| match (*k, v) {
            ("strides" | "dilations", Attr::Ints(v)) => v.iter().any(|&x| x != 1),
            ("pads", Attr::Ints(v)) => v.iter().any(|&x| x != 0),
            ("group", Attr::Int(g)) => *g != 1,
            _ => true,
        })
        .collect()
}
