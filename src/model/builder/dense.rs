//! The builder's ops with weights or windows: convolution, Gemm, MatMul and pooling, with the output
//! shapes ONNX defines.
use super::{BuildError, GraphBuilder, broadcast, dims, fmt_shape};
use crate::model::graph::{Attr, Attrs, DType, TensorId};

/// Output length of a window sliding over `len` padded by `pads` (ONNX floor mode); `None` when the
/// window does not fit.
fn window_out(
    len: usize,
    pads: (usize, usize),
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    let eff = (kernel - 1) * dilation + 1;
    let padded = len + pads.0 + pads.1;
    (padded >= eff).then(|| (padded - eff) / stride + 1)
}

impl GraphBuilder {
    /// 2-D convolution of an NCHW input; `pads` in ONNX order [top, left, bottom, right].
    #[allow(clippy::too_many_arguments)] // one argument per ONNX Conv attribute, as callers think of it
    pub fn conv(
        &mut self,
        x: TensorId,
        cout: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        pads: [usize; 4],
        dilation: [usize; 2],
        groups: usize,
        bias: bool,
    ) -> Result<TensorId, BuildError> {
        const OP: &str = "Conv";
        let s = self.operand(OP, x, Some(4))?;
        let (n, cin, h, w) = (s[0], s[1], s[2], s[3]);
        if cout == 0
            || groups == 0
            || kernel.contains(&0)
            || stride.contains(&0)
            || dilation.contains(&0)
        {
            return Err(self.invalid(
                OP,
                "output channels, groups, kernel, stride and dilation must all be at least 1",
            ));
        }
        if !cin.is_multiple_of(groups) || !cout.is_multiple_of(groups) {
            return Err(self.invalid(
                OP,
                format!(
                    "{cin} input and {cout} output channels are not both divisible by {groups} groups"
                ),
            ));
        }
        let oh = window_out(h, (pads[0], pads[2]), kernel[0], stride[0], dilation[0]);
        let ow = window_out(w, (pads[1], pads[3]), kernel[1], stride[1], dilation[1]);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(self.invalid(
                OP,
                format!(
                    "kernel {kernel:?} (dilation {dilation:?}) is larger than the padded input {h}x{w} + pads {pads:?}"
                ),
            ));
        };
        let name = self.next_name(OP);
        let wt = self.const_weight(
            &name,
            "weight",
            vec![cout, cin / groups, kernel[0], kernel[1]],
            DType::F32,
        );
        let mut inputs = vec![x, wt];
        if bias {
            inputs.push(self.const_weight(&name, "bias", vec![cout], DType::F32));
        }
        let attrs = Attrs::from([
            ("kernel_shape".into(), Attr::Ints(dims(&kernel))),
            ("strides".into(), Attr::Ints(dims(&stride))),
            ("pads".into(), Attr::Ints(dims(&pads))),
            ("dilations".into(), Attr::Ints(dims(&dilation))),
            ("group".into(), Attr::Int(groups as i64)),
        ]);
        Ok(self.push(OP, inputs, attrs, vec![n, cout, oh, ow]))
    }

    /// `x · Wᵀ (+ b)` for `x` of shape [M, K] and a weight [N, K], as PyTorch's Linear exports.
    pub fn gemm(&mut self, x: TensorId, n: usize, bias: bool) -> Result<TensorId, BuildError> {
        const OP: &str = "Gemm";
        let s = self.operand(OP, x, Some(2))?;
        if n == 0 {
            return Err(self.invalid(OP, "needs at least one output column"));
        }
        let name = self.next_name(OP);
        let w = self.const_weight(&name, "weight", vec![n, s[1]], DType::F32);
        let mut inputs = vec![x, w];
        if bias {
            inputs.push(self.const_weight(&name, "bias", vec![n], DType::F32));
        }
        let attrs = Attrs::from([
            ("alpha".into(), Attr::Float(1.0)),
            ("beta".into(), Attr::Float(1.0)),
            ("transB".into(), Attr::Int(1)),
        ]);
        Ok(self.push(OP, inputs, attrs, vec![s[0], n]))
    }

    /// numpy `matmul`: batch dimensions broadcast, vectors are promoted and the added axis removed.
    pub fn matmul(&mut self, a: TensorId, b: TensorId) -> Result<TensorId, BuildError> {
        const OP: &str = "MatMul";
        let sa = self.operand(OP, a, None)?;
        let sb = self.operand(OP, b, None)?;
        if sa.is_empty() || sb.is_empty() {
            return Err(self.invalid(OP, "operands must have rank 1 or more"));
        }
        let pa = if sa.len() == 1 {
            vec![1, sa[0]]
        } else {
            sa.clone()
        };
        let pb = if sb.len() == 1 {
            vec![sb[0], 1]
        } else {
            sb.clone()
        };
        let (m, ka) = (pa[pa.len() - 2], pa[pa.len() - 1]);
        let (kb, n) = (pb[pb.len() - 2], pb[pb.len() - 1]);
        if ka != kb {
            return Err(self.invalid(
                OP,
                format!(
                    "inner dimensions differ: {} · {}",
                    fmt_shape(&sa),
                    fmt_shape(&sb)
                ),
            ));
        }
        let batch = broadcast(&pa[..pa.len() - 2], &pb[..pb.len() - 2]).ok_or_else(|| {
            self.invalid(
                OP,
                format!(
                    "batch dimensions of {} and {} do not broadcast",
                    fmt_shape(&sa),
                    fmt_shape(&sb)
                ),
            )
        })?;
        let mut out = batch;
        if sa.len() > 1 {
            out.push(m);
        }
        if sb.len() > 1 {
            out.push(n);
        }
        Ok(self.push(OP, vec![a, b], Attrs::new(), out))
    }

    fn pool(
        &mut self,
        op: &str,
        x: TensorId,
        kernel: [usize; 2],
        stride: [usize; 2],
        pads: [usize; 4],
    ) -> Result<TensorId, BuildError> {
        let s = self.operand(op, x, Some(4))?;
        if kernel.contains(&0) || stride.contains(&0) {
            return Err(self.invalid(op, "kernel and stride must be at least 1"));
        }
        // ONNX (and every runtime) wants a pad smaller than the window: a window of padding only.
        if pads[0] >= kernel[0]
            || pads[2] >= kernel[0]
            || pads[1] >= kernel[1]
            || pads[3] >= kernel[1]
        {
            return Err(self.invalid(
                op,
                format!("pads {pads:?} must be smaller than the kernel {kernel:?}"),
            ));
        }
        let oh = window_out(s[2], (pads[0], pads[2]), kernel[0], stride[0], 1);
        let ow = window_out(s[3], (pads[1], pads[3]), kernel[1], stride[1], 1);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(self.invalid(
                op,
                format!(
                    "kernel {kernel:?} is larger than the padded input {}x{} + pads {pads:?}",
                    s[2], s[3]
                ),
            ));
        };
        let attrs = Attrs::from([
            ("kernel_shape".into(), Attr::Ints(dims(&kernel))),
            ("strides".into(), Attr::Ints(dims(&stride))),
            ("pads".into(), Attr::Ints(dims(&pads))),
        ]);
        Ok(self.push(op, vec![x], attrs, vec![s[0], s[1], oh, ow]))
    }

    /// Max pooling of an NCHW input; `pads` in ONNX order [top, left, bottom, right].
    pub fn maxpool(
        &mut self,
        x: TensorId,
        kernel: [usize; 2],
        stride: [usize; 2],
        pads: [usize; 4],
    ) -> Result<TensorId, BuildError> {
        self.pool("MaxPool", x, kernel, stride, pads)
    }

    /// Average pooling of an NCHW input (padding not counted, as PyTorch's default exports).
    pub fn avgpool(
        &mut self,
        x: TensorId,
        kernel: [usize; 2],
        stride: [usize; 2],
        pads: [usize; 4],
    ) -> Result<TensorId, BuildError> {
        self.pool("AveragePool", x, kernel, stride, pads)
    }

    pub fn global_avg_pool(&mut self, x: TensorId) -> Result<TensorId, BuildError> {
        const OP: &str = "GlobalAveragePool";
        let s = self.operand(OP, x, None)?;
        if s.len() < 3 {
            return Err(self.invalid(OP, format!("needs spatial axes, got {}", fmt_shape(&s))));
        }
        let mut out = s.clone();
        out[2..].iter_mut().for_each(|d| *d = 1);
        Ok(self.push(OP, vec![x], Attrs::new(), out))
    }
}
