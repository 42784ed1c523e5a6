//! Building blocks of vision CNNs as graph-builder calls: the vocabulary the design-space generator
//! (`super::families`) draws networks from. A block takes its shape decisions (widths, kernels,
//! expansions, gates) as arguments, so one block serves every family that uses it; the families decide.
use super::TensorId;
use super::builder::{BuildError, GraphBuilder};
use rand::Rng;
use rand::rngs::StdRng;

pub type R = Result<TensorId, BuildError>;

/// Activation functions the families use, each written as exporters write it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    None,
    Relu,
    Relu6,
    HardSwish,
    /// x·sigmoid(x) (swish), as `Sigmoid` and `Mul`.
    Silu,
    /// Exact GELU as opset-17 exports write it: x·½·(1 + erf(x/√2)).
    Gelu,
}

/// The gate of a squeeze-excitation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Gate {
    Sigmoid,
    HardSigmoid,
}

/// A squeeze-excitation: reduced width, the activation between its two 1×1 convolutions, its gate.
#[derive(Clone, Copy, Debug)]
pub struct Se {
    pub reduced: usize,
    pub act: Act,
    pub gate: Gate,
}

/// One inverted residual (MobileNetV2/V3, EfficientNet, MnasNet, FBNet, MixNet, ReXNet).
#[derive(Clone, Debug)]
pub struct Inverted {
    /// Width of the expanded middle (no expansion conv when it equals the input width).
    pub mid: usize,
    /// Depthwise kernels: one is an ordinary depthwise conv, several split the channels (MixNet).
    pub kernels: Vec<usize>,
    /// The expansion 1×1 as this many grouped convs over channel splits (MixNet), usually 1.
    pub expand_groups: usize,
    pub act: Act,
    /// The activation after the depthwise conv when it differs (ReXNet: swish, then ReLU6).
    pub dw_act: Option<Act>,
    pub se: Option<Se>,
}

/// A network under construction: the builder, the stream its random choices come from, and the
/// conventions of its export.
pub struct Net<'a> {
    pub b: GraphBuilder,
    pub rng: &'a mut StdRng,
    /// Convolutions followed by an explicit BatchNormalization (an export that did not fold it).
    pub bn: bool,
    /// Channel counts are made divisible by this (8 in most families, 4 or 1 in some).
    pub div: usize,
}

impl Net<'_> {
    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.rng.random_range(0..v.len())]
    }

    /// A uniform draw in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.rng.random_range(0.0..1.0)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p.clamp(0.0, 1.0))
    }

    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        self.rng.random_range(lo..=hi.max(lo))
    }

    /// `c` rounded to the family's divisor, never below it nor more than 10 % under `c`
    /// (timm's and torchvision's `make_divisible`).
    pub fn round(&self, c: f64) -> usize {
        let d = self.div.max(1);
        let mut r = (((c + d as f64 / 2.0) as usize) / d * d).max(d);
        if (r as f64) < 0.9 * c {
            r += d;
        }
        r
    }

    /// One of `bases` times `factor`, rounded to the family's divisor.
    pub fn pick_width(&mut self, bases: &[f64], factor: f64) -> usize {
        let b = self.pick(bases);
        self.round(b * factor)
    }

    pub fn channels(&self, x: TensorId) -> Result<usize, BuildError> {
        Ok(self.b.shape(x)?.get(1).copied().unwrap_or(1))
    }

    pub fn spatial(&self, x: TensorId) -> Result<usize, BuildError> {
        Ok(self.b.shape(x)?.get(2).copied().unwrap_or(1))
    }

    /// Stride 2 unless the map is already small (low resolutions run out of pixels first).
    pub fn down(&self, x: TensorId) -> Result<usize, BuildError> {
        Ok(if self.spatial(x)? >= 4 { 2 } else { 1 })
    }

    /// Global average pool, flatten, one linear classifier.
    pub fn head_fc(&mut self, x: TensorId, classes: usize) -> R {
        let g = self.b.global_avg_pool(x)?;
        let f = self.b.flatten(g, 1)?;
        self.b.gemm(f, classes, true)
    }

    /// A scalar constant operand (the 0.5 and 1/√2 of GELU).
    fn scalar(&mut self, x: TensorId, add: bool) -> R {
        let c = self.b.weight(&[]);
        if add {
            self.b.add(x, c)
        } else {
            self.b.mul(x, c)
        }
    }

    pub fn act(&mut self, x: TensorId, a: Act) -> R {
        match a {
            Act::None => Ok(x),
            Act::Relu => self.b.relu(x),
            Act::Relu6 => self.b.clip(x, 0.0, 6.0),
            Act::HardSwish => self.b.hardswish(x),
            Act::Silu => {
                let s = self.b.sigmoid(x)?;
                self.b.mul(x, s)
            }
            Act::Gelu => {
                let h = self.scalar(x, false)?;
                let h = self.b.erf(h)?;
                let h = self.scalar(h, true)?;
                let h = self.b.mul(x, h)?;
                self.scalar(h, false)
            }
        }
    }

    /// A convolution with explicit padding, and a BatchNormalization after it in unfused exports.
    pub fn conv_pad(
        &mut self,
        x: TensorId,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
        pad: usize,
    ) -> R {
        let y = self.b.conv(
            x,
            cout.max(1),
            [k, k],
            [stride, stride],
            [pad; 4],
            [1, 1],
            groups.max(1),
            !self.bn,
        )?;
        if self.bn { self.b.batchnorm(y) } else { Ok(y) }
    }

    /// A "same"-padded convolution.
    pub fn conv(&mut self, x: TensorId, cout: usize, k: usize, stride: usize, groups: usize) -> R {
        self.conv_pad(x, cout, k, stride, groups, k / 2)
    }

    pub fn conv_act(&mut self, x: TensorId, cout: usize, k: usize, stride: usize, a: Act) -> R {
        let y = self.conv(x, cout, k, stride, 1)?;
        self.act(y, a)
    }

    pub fn dw(&mut self, x: TensorId, k: usize, stride: usize) -> R {
        let c = self.channels(x)?;
        self.conv(x, c, k, stride, c)
    }

    /// Global pooling, two 1×1 convolutions (with bias, never followed by a norm) and a gate that
    /// scales `x` per channel.
    pub fn se(&mut self, x: TensorId, se: Se) -> R {
        let c = self.channels(x)?;
        let g = self.b.global_avg_pool(x)?;
        let h = self.b.conv(
            g,
            se.reduced.max(1),
            [1, 1],
            [1, 1],
            [0; 4],
            [1, 1],
            1,
            true,
        )?;
        let h = self.act(h, se.act)?;
        let h = self.b.conv(h, c, [1, 1], [1, 1], [0; 4], [1, 1], 1, true)?;
        let h = match se.gate {
            Gate::Sigmoid => self.b.sigmoid(h)?,
            Gate::HardSigmoid => self.b.hard_sigmoid(h)?,
        };
        self.b.mul(x, h)
    }

    /// Channels `[from, to)` of `x`.
    pub fn channel_slice(&mut self, x: TensorId, from: usize, to: usize) -> R {
        self.b.slice(x, &[1], &[from], &[to], &[1])
    }

    /// `x` split along channels into `parts` nearly equal pieces (the first takes the remainder, as
    /// timm's mixed convolutions split).
    pub fn split(&mut self, x: TensorId, parts: usize) -> Result<Vec<TensorId>, BuildError> {
        let c = self.channels(x)?;
        let parts = parts.clamp(1, c);
        if parts == 1 {
            return Ok(vec![x]);
        }
        let each = c / parts;
        let mut out = Vec::with_capacity(parts);
        let mut start = 0;
        for i in 0..parts {
            let len = if i == 0 { c - each * (parts - 1) } else { each };
            out.push(self.channel_slice(x, start, start + len)?);
            start += len;
        }
        Ok(out)
    }

    /// A 2×2 stride-2 pool that keeps the odd row and column (ceil mode), so its output matches a
    /// stride-2 "same" convolution's.
    pub fn pool_down(&mut self, x: TensorId, max: bool) -> R {
        let s = self.spatial(x)?;
        let p = s % 2;
        let pads = [0, 0, p, p];
        if max {
            self.b.maxpool(x, [2, 2], [2, 2], pads)
        } else {
            self.b.avgpool(x, [2, 2], [2, 2], pads)
        }
    }

    /// What a residual adds to a block's output: `x` itself, or a projection when the shape changes
    /// (a strided 1×1 conv, or ResNet-D's 2×2 average pool then a 1×1 conv).
    pub fn shortcut(&mut self, x: TensorId, cout: usize, stride: usize, avg_down: bool) -> R {
        let c = self.channels(x)?;
        if stride == 1 && c == cout {
            return Ok(x);
        }
        if avg_down && stride > 1 {
            let p = self.pool_down(x, false)?;
            self.conv(p, cout, 1, 1, 1)
        } else {
            self.conv(x, cout, 1, stride, 1)
        }
    }

    /// ResNet basic block: two 3×3 convolutions, optional squeeze-excitation, residual, ReLU.
    pub fn basic(&mut self, x: TensorId, cout: usize, stride: usize, avg_down: bool) -> R {
        let z = self.conv_act(x, cout, 3, stride, Act::Relu)?;
        let mut z = self.conv(z, cout, 3, 1, 1)?;
        if self.chance(0.15) {
            let reduced = (cout / 16).max(8);
            z = self.se(
                z,
                Se {
                    reduced,
                    act: Act::Relu,
                    gate: Gate::Sigmoid,
                },
            )?;
        }
        let short = self.shortcut(x, cout, stride, avg_down)?;
        let y = self.b.add(z, short)?;
        self.b.relu(y)
    }

    /// Bottleneck: 1×1 down to `mid`, 3×3 over `groups` (ResNeXt, RegNet), optional
    /// squeeze-excitation, 1×1 up to `cout`, residual, ReLU.
    #[allow(clippy::too_many_arguments)] // one argument per design choice of the block
    pub fn bottleneck(
        &mut self,
        x: TensorId,
        cout: usize,
        stride: usize,
        mid: usize,
        groups: usize,
        se: Option<Se>,
        avg_down: bool,
    ) -> R {
        let groups = groups.clamp(1, mid.max(1));
        let mid = (mid / groups).max(1) * groups;
        let z = self.conv_act(x, mid, 1, 1, Act::Relu)?;
        let z = self.conv(z, mid, 3, stride, groups)?;
        let mut z = self.b.relu(z)?;
        if let Some(se) = se {
            z = self.se(z, se)?;
        }
        let z = self.conv(z, cout, 1, 1, 1)?;
        let short = self.shortcut(x, cout, stride, avg_down)?;
        let y = self.b.add(z, short)?;
        self.b.relu(y)
    }

    /// Depthwise separable: depthwise k×k with its activation, optional squeeze-excitation,
    /// pointwise with `pw_act` (MobileNetV1, LCNet, the first block of EfficientNet).
    #[allow(clippy::too_many_arguments)] // one argument per design choice of the block
    pub fn separable(
        &mut self,
        x: TensorId,
        cout: usize,
        stride: usize,
        k: usize,
        act: Act,
        se: Option<Se>,
        pw_act: Act,
    ) -> R {
        let z = self.dw(x, k, stride)?;
        let mut z = self.act(z, act)?;
        if let Some(se) = se {
            z = self.se(z, se)?;
        }
        self.conv_act(z, cout, 1, 1, pw_act)
    }

    /// A 1×1 convolution done as `groups` convolutions over channel splits, concatenated (MixNet's
    /// grouped expansions), or one convolution when `groups` is 1.
    fn split_pointwise(&mut self, x: TensorId, cout: usize, groups: usize) -> R {
        let parts = self.split(x, groups)?;
        if parts.len() == 1 {
            return self.conv(x, cout, 1, 1, 1);
        }
        let n = parts.len();
        let mut outs = Vec::with_capacity(n);
        for (i, p) in parts.into_iter().enumerate() {
            let each = cout / n;
            let c = if i == 0 { cout - each * (n - 1) } else { each };
            outs.push(self.conv(p, c, 1, 1, 1)?);
        }
        self.b.concat(&outs, 1)
    }

    /// Depthwise over channel splits with one kernel each, concatenated (MixNet); plain depthwise
    /// for one kernel.
    pub fn mixed_dw(&mut self, x: TensorId, kernels: &[usize], stride: usize) -> R {
        let parts = self.split(x, kernels.len().max(1))?;
        if parts.len() == 1 {
            return self.dw(x, kernels.first().copied().unwrap_or(3), stride);
        }
        let mut outs = Vec::with_capacity(parts.len());
        for (p, &k) in parts.into_iter().zip(kernels) {
            outs.push(self.dw(p, k, stride)?);
        }
        self.b.concat(&outs, 1)
    }

    /// Inverted residual: expand, depthwise (mixed), squeeze-excitation, linear projection; the
    /// residual when the shape allows, over the input's channels only when the block widens
    /// (ReXNet's partial residual, when `partial` is set).
    pub fn inverted(
        &mut self,
        x: TensorId,
        cout: usize,
        stride: usize,
        blk: &Inverted,
        partial: bool,
    ) -> R {
        let c = self.channels(x)?;
        let mut z = x;
        if blk.mid != c {
            z = self.split_pointwise(z, blk.mid, blk.expand_groups)?;
            z = self.act(z, blk.act)?;
        }
        z = self.mixed_dw(z, &blk.kernels, stride)?;
        z = self.act(z, blk.dw_act.unwrap_or(blk.act))?;
        if let Some(se) = blk.se {
            z = self.se(z, se)?;
        }
        z = self.split_pointwise(z, cout, blk.expand_groups)?;
        if stride != 1 {
            return Ok(z);
        }
        if cout == c {
            self.b.add(z, x)
        } else if partial && cout > c {
            let head = self.channel_slice(z, 0, c)?;
            let tail = self.channel_slice(z, c, cout)?;
            let head = self.b.add(head, x)?;
            self.b.concat(&[head, tail], 1)
        } else {
            Ok(z)
        }
    }

    /// Ghost module: a 1×1 conv makes half the features, a cheap 3×3 depthwise the other half,
    /// concatenated (and trimmed to `cout` when odd).
    pub fn ghost(&mut self, x: TensorId, cout: usize, relu: bool) -> R {
        let init = cout.div_ceil(2);
        let a = if relu { Act::Relu } else { Act::None };
        let p = self.conv_act(x, init, 1, 1, a)?;
        let q = self.dw(p, 3, 1)?;
        let q = self.act(q, a)?;
        let y = self.b.concat(&[p, q], 1)?;
        if 2 * init == cout {
            Ok(y)
        } else {
            self.channel_slice(y, 0, cout)
        }
    }

    /// Ghost bottleneck (GhostNet): ghost expand, a strided depthwise when downsampling, optional
    /// squeeze-excitation, ghost project, and a depthwise + 1×1 shortcut when the shape changes.
    pub fn ghost_bottleneck(
        &mut self,
        x: TensorId,
        mid: usize,
        cout: usize,
        stride: usize,
        k: usize,
        se: Option<Se>,
    ) -> R {
        let c = self.channels(x)?;
        let mut z = self.ghost(x, mid, true)?;
        if stride > 1 {
            z = self.dw(z, k, stride)?;
        }
        if let Some(se) = se {
            z = self.se(z, se)?;
        }
        let z = self.ghost(z, cout, false)?;
        let short = if stride == 1 && c == cout {
            x
        } else {
            let s = self.dw(x, k, stride)?;
            self.conv(s, cout, 1, 1, 1)?
        };
        self.b.add(z, short)
    }

    /// Layer norm of an NCHW tensor over its channels, as timm's LayerNorm2d exports: to channels
    /// last, normalise, back.
    pub fn layer_norm_2d(&mut self, x: TensorId) -> R {
        let t = self.b.transpose(x, &[0, 2, 3, 1])?;
        let t = self.b.layer_norm(t)?;
        self.b.transpose(t, &[0, 3, 1, 2])
    }

    /// A linear layer on the last axis of a channels-last tensor: MatMul by a weight, then a bias.
    fn linear_last(&mut self, x: TensorId, n: usize) -> R {
        let k = self.b.shape(x)?.last().copied().unwrap_or(1);
        let w = self.b.weight(&[k, n]);
        let y = self.b.matmul(x, w)?;
        let bias = self.b.weight(&[n]);
        self.b.add(y, bias)
    }

    /// ConvNeXt block: k×k depthwise, layer norm, 1×1 expansion by `ratio`, GELU, 1×1 back, a
    /// per-channel scale, residual. The MLP runs channels last on matmuls (ConvNeXt-T and up) or as
    /// 1×1 convolutions (`conv_mlp`, the small timm variants).
    pub fn convnext(&mut self, x: TensorId, k: usize, ratio: usize, conv_mlp: bool) -> R {
        let c = self.channels(x)?;
        let z = self
            .b
            .conv(x, c, [k, k], [1, 1], [k / 2; 4], [1, 1], c, true)?;
        let z = if conv_mlp {
            let z = self.layer_norm_2d(z)?;
            let z = self
                .b
                .conv(z, c * ratio, [1, 1], [1, 1], [0; 4], [1, 1], 1, true)?;
            let z = self.act(z, Act::Gelu)?;
            let z = self.b.conv(z, c, [1, 1], [1, 1], [0; 4], [1, 1], 1, true)?;
            let gamma = self.b.weight(&[1, c, 1, 1]);
            self.b.mul(z, gamma)?
        } else {
            let t = self.b.transpose(z, &[0, 2, 3, 1])?;
            let t = self.b.layer_norm(t)?;
            let t = self.linear_last(t, c * ratio)?;
            let t = self.act(t, Act::Gelu)?;
            let t = self.linear_last(t, c)?;
            let gamma = self.b.weight(&[c]);
            let t = self.b.mul(t, gamma)?;
            self.b.transpose(t, &[0, 3, 1, 2])?
        };
        self.b.add(x, z)
    }

    /// SqueezeNet's fire module: squeeze 1×1, then 1×1 and 3×3 expansions concatenated.
    pub fn fire(&mut self, x: TensorId, cout: usize, squeeze: usize) -> R {
        let s = self.conv_act(x, squeeze, 1, 1, Act::Relu)?;
        let e1 = self.conv_act(s, cout / 2, 1, 1, Act::Relu)?;
        let e3 = self.conv_act(s, cout - cout / 2, 3, 1, Act::Relu)?;
        self.b.concat(&[e1, e3], 1)
    }

    /// ShuffleNetV2 unit: split (or a strided depthwise branch), 1×1 → k×k depthwise → 1×1 on one
    /// half, concatenation and channel shuffle.
    pub fn shuffle(&mut self, x: TensorId, cout: usize, stride: usize, k: usize) -> R {
        let c = self.channels(x)?;
        let half = (cout / 2).max(1);
        let (left, right) = if stride == 1 && 2 * half == c {
            let l = self.channel_slice(x, 0, half)?;
            let r = self.channel_slice(x, half, c)?;
            (l, r)
        } else {
            let l = self.dw(x, k, stride)?;
            let l = self.conv_act(l, half, 1, 1, Act::Relu)?;
            (l, x)
        };
        let mut r = self.conv_act(right, half, 1, 1, Act::Relu)?;
        r = self.conv(r, half, k, stride, half)?;
        r = self.conv_act(r, half, 1, 1, Act::Relu)?;
        let y = self.b.concat(&[left, r], 1)?;
        let s = self.b.shape(y)?.to_vec();
        let (h, w) = (s[2] as i64, s[3] as i64);
        let y = self.b.reshape(y, &[1, 2, half as i64, h, w])?;
        let y = self.b.transpose(y, &[0, 2, 1, 3, 4])?;
        self.b.reshape(y, &[1, (2 * half) as i64, h, w])
    }

    /// DenseNet block: `layers` pre-activation BN-ReLU-1×1-BN-ReLU-3×3 layers, each adding
    /// `growth` channels by concatenation.
    pub fn dense(&mut self, x: TensorId, layers: usize, growth: usize) -> R {
        let mut feats = x;
        for _ in 0..layers {
            let h = self.b.batchnorm(feats)?;
            let h = self.b.relu(h)?;
            let h = self
                .b
                .conv(h, 4 * growth, [1, 1], [1, 1], [0; 4], [1, 1], 1, false)?;
            let h = self.b.batchnorm(h)?;
            let h = self.b.relu(h)?;
            let h = self
                .b
                .conv(h, growth, [3, 3], [1, 1], [1; 4], [1, 1], 1, false)?;
            feats = self.b.concat(&[feats, h], 1)?;
        }
        Ok(feats)
    }

    /// DenseNet transition: BN-ReLU-1×1 to `cout`, 2×2 average pool.
    pub fn transition(&mut self, x: TensorId, cout: usize) -> R {
        let h = self.b.batchnorm(x)?;
        let h = self.b.relu(h)?;
        let h = self.conv(h, cout, 1, 1, 1)?;
        self.b.avgpool(h, [2, 2], [2, 2], [0; 4])
    }

    /// GoogLeNet inception module: 1×1, 1×1→3×3, 1×1→k×k and pool→1×1 branches concatenated.
    pub fn inception(&mut self, x: TensorId, cout: usize) -> R {
        let q = self.round(cout as f64 / 4.0);
        let a = self.conv_act(x, q, 1, 1, Act::Relu)?;
        let f = self.pick(&[0.5, 0.75, 1.0]);
        let r = self.round(q as f64 * f);
        let b = self.conv_act(x, r, 1, 1, Act::Relu)?;
        let b = self.conv_act(b, q, 3, 1, Act::Relu)?;
        let f = self.pick(&[2.0, 4.0, 8.0]);
        let r = self.round(q as f64 / f);
        let c = self.conv_act(x, r, 1, 1, Act::Relu)?;
        let k = self.pick(&[3usize, 5]);
        let c = self.conv_act(c, q, k, 1, Act::Relu)?;
        let d = self.b.maxpool(x, [3, 3], [1, 1], [1; 4])?;
        let d = self.conv_act(d, q, 1, 1, Act::Relu)?;
        self.b.concat(&[a, b, c, d], 1)
    }
}
