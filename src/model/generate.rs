//! The classic synthetic CNNs: stems, stages and heads of seven families (plain conv stacks with large
//! windows and wide classifiers, residual basic and bottleneck blocks with optional groups, inverted
//! residuals with squeeze-excitation, fire modules, channel-shuffle blocks, dense blocks,
//! inception-style branches). Four of them are the reference workload, whose identity names this
//! stream, so it is kept as it is; the prior and the composition data come from the wider design
//! space of [`crate::model::families`]. They are generated, never the evaluation models.
use crate::model::Graph;
use crate::model::TensorId;
use crate::model::builder::{BuildError, GraphBuilder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn pick<T: Copy>(rng: &mut StdRng, v: &[T]) -> T {
    v[rng.random_range(0..v.len())]
}

/// Activation functions the families use.
#[derive(Clone, Copy)]
enum Act {
    Relu,
    Relu6,
    HardSwish,
    Silu,
}

struct Net<'a> {
    b: GraphBuilder,
    rng: &'a mut StdRng,
    /// Convolutions followed by an explicit BatchNormalization (as unfused exports have) or not.
    bn: bool,
}

type R = Result<TensorId, BuildError>;

impl Net<'_> {
    fn channels(&self, x: TensorId) -> Result<usize, BuildError> {
        Ok(self.b.shape(x)?.get(1).copied().unwrap_or(1))
    }

    fn spatial(&self, x: TensorId) -> Result<usize, BuildError> {
        Ok(self.b.shape(x)?.get(2).copied().unwrap_or(1))
    }

    fn act(&mut self, x: TensorId, a: Act) -> R {
        match a {
            Act::Relu => self.b.relu(x),
            Act::Relu6 => self.b.clip(x, 0.0, 6.0),
            Act::HardSwish => self.b.hardswish(x),
            Act::Silu => {
                let s = self.b.sigmoid(x)?;
                self.b.mul(x, s)
            }
        }
    }

    fn conv(&mut self, x: TensorId, cout: usize, k: usize, stride: usize, groups: usize) -> R {
        let p = k / 2;
        let y = self.b.conv(
            x,
            cout.max(1),
            [k, k],
            [stride, stride],
            [p, p, p, p],
            [1, 1],
            groups,
            !self.bn,
        )?;
        if self.bn { self.b.batchnorm(y) } else { Ok(y) }
    }

    fn conv_act(&mut self, x: TensorId, cout: usize, k: usize, stride: usize, a: Act) -> R {
        let y = self.conv(x, cout, k, stride, 1)?;
        self.act(y, a)
    }

    fn squeeze_excite(&mut self, x: TensorId, hard: bool) -> R {
        let c = self.channels(x)?;
        let g = self.b.global_avg_pool(x)?;
        let sq = (c / 4).max(8);
        let h = self
            .b
            .conv(g, sq, [1, 1], [1, 1], [0; 4], [1, 1], 1, true)?;
        let h = self.b.relu(h)?;
        let h = self.b.conv(h, c, [1, 1], [1, 1], [0; 4], [1, 1], 1, true)?;
        let h = if hard {
            let h = self.b.add_const(h)?;
            self.b.clip(h, 0.0, 6.0)?
        } else {
            self.b.sigmoid(h)?
        };
        if self.rng.random_bool(0.5) {
            self.b.mul(h, x)
        } else {
            self.b.mul(x, h)
        }
    }

    fn inverted_residual(&mut self, x: TensorId, cout: usize, stride: usize, a: Act) -> R {
        let c = self.channels(x)?;
        let t = pick(self.rng, &[1usize, 3, 4, 6]);
        let k = pick(self.rng, &[3usize, 3, 5]);
        let mid = (c * t).max(8);
        let mut z = x;
        if t > 1 {
            z = self.conv_act(z, mid, 1, 1, a)?;
        }
        z = self.conv(z, mid, k, stride, mid)?;
        z = self.act(z, a)?;
        if self.rng.random_bool(0.35) {
            let hard = matches!(a, Act::HardSwish);
            z = self.squeeze_excite(z, hard)?;
        }
        z = self.conv(z, cout, 1, 1, 1)?;
        if stride == 1 && cout == c {
            self.b.add(x, z)
        } else {
            Ok(z)
        }
    }

    fn basic(&mut self, x: TensorId, cout: usize, stride: usize) -> R {
        let z = self.conv_act(x, cout, 3, stride, Act::Relu)?;
        let z = self.conv(z, cout, 3, 1, 1)?;
        self.join_residual(x, z, stride)
    }

    fn bottleneck(&mut self, x: TensorId, cout: usize, stride: usize, group_width: usize) -> R {
        let mid = (cout / pick(self.rng, &[2usize, 4])).max(8);
        let groups = mid.checked_div(group_width).unwrap_or(1).max(1);
        let mid = mid / groups * groups;
        let z = self.conv_act(x, mid, 1, 1, Act::Relu)?;
        let z = self.conv(z, mid, 3, stride, groups)?;
        let mut z = self.b.relu(z)?;
        if self.rng.random_bool(0.2) {
            z = self.squeeze_excite(z, false)?;
        }
        let z = self.conv(z, cout, 1, 1, 1)?;
        self.join_residual(x, z, stride)
    }

    /// `relu(z + shortcut(x))`, the shortcut a strided 1×1 projection when the shape changes.
    fn join_residual(&mut self, x: TensorId, z: TensorId, stride: usize) -> R {
        let (c, cout) = (self.channels(x)?, self.channels(z)?);
        let short = if stride == 1 && cout == c {
            x
        } else {
            self.conv(x, cout, 1, stride, 1)?
        };
        let z = self.b.add(z, short)?;
        self.b.relu(z)
    }

    fn fire(&mut self, x: TensorId, cout: usize) -> R {
        let sq = (cout / pick(self.rng, &[6usize, 8])).max(8);
        let s = self.conv_act(x, sq, 1, 1, Act::Relu)?;
        let e1 = self.conv_act(s, cout / 2, 1, 1, Act::Relu)?;
        let e3 = self.conv_act(s, cout - cout / 2, 3, 1, Act::Relu)?;
        self.b.concat(&[e1, e3], 1)
    }

    fn shuffle(&mut self, x: TensorId, cout: usize, stride: usize) -> R {
        let c = self.channels(x)?;
        let half = cout / 2;
        let (left, right) = if stride == 1 && cout == c {
            let l = self.b.slice(x, &[1], &[0], &[c / 2], &[1])?;
            let r = self.b.slice(x, &[1], &[c / 2], &[c], &[1])?;
            (l, r)
        } else {
            let l = self.conv(x, c, 3, stride, c)?;
            let l = self.conv_act(l, half, 1, 1, Act::Relu)?;
            (l, x)
        };
        let mut r = self.conv_act(right, half, 1, 1, Act::Relu)?;
        r = self.conv(r, half, 3, stride, half)?;
        r = self.conv_act(r, half, 1, 1, Act::Relu)?;
        let y = self.b.concat(&[left, r], 1)?;
        let hw = self.spatial(y)?;
        let y = self
            .b
            .reshape(y, &[1, 2, half as i64, hw as i64, hw as i64])?;
        let y = self.b.transpose(y, &[0, 2, 1, 3, 4])?;
        self.b
            .reshape(y, &[1, (2 * half) as i64, hw as i64, hw as i64])
    }

    fn dense(&mut self, x: TensorId, layers: usize, growth: usize) -> R {
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
                .conv(h, growth, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, false)?;
            feats = self.b.concat(&[feats, h], 1)?;
        }
        Ok(feats)
    }

    fn inception(&mut self, x: TensorId, cout: usize) -> R {
        let q = (cout / 4).max(8);
        let a = self.conv_act(x, q, 1, 1, Act::Relu)?;
        let b = self.conv_act(x, q / 2 + 8, 1, 1, Act::Relu)?;
        let b = self.conv_act(b, q, 3, 1, Act::Relu)?;
        let c = self.conv_act(x, q / 4 + 8, 1, 1, Act::Relu)?;
        let k = pick(self.rng, &[3usize, 5]);
        let c = self.conv_act(c, q, k, 1, Act::Relu)?;
        let d = self.b.maxpool(x, [3, 3], [1, 1], [1, 1, 1, 1])?;
        let d = self.conv_act(d, q, 1, 1, Act::Relu)?;
        self.b.concat(&[a, b, c, d], 1)
    }

    fn downsample_pool(&mut self, x: TensorId) -> R {
        if self.rng.random_bool(0.7) {
            self.b.maxpool(x, [3, 3], [2, 2], [1, 1, 1, 1])
        } else {
            self.b.avgpool(x, [2, 2], [2, 2], [0; 4])
        }
    }

    fn head(&mut self, x: TensorId, wide: bool) -> R {
        let y = if wide {
            let s = self.spatial(x)?;
            let c = self.channels(x)?;
            // A classifier on pooled 6×6 (or smaller) maps, at most ~10 k features wide.
            let target = if c * 36 <= 10_240 { 6 } else { 1 };
            let y = if s > target {
                let k = s.div_ceil(target);
                self.b.avgpool(x, [k, k], [k, k], [0; 4])?
            } else {
                x
            };
            let f = self.b.flatten(y, 1)?;
            let width = pick(self.rng, &[1024usize, 2048, 4096]);
            let mut h = self.b.gemm(f, width, true)?;
            h = self.b.relu(h)?;
            h = self.b.gemm(h, width, true)?;
            self.b.relu(h)?
        } else {
            let g = self.b.global_avg_pool(x)?;
            let mut f = self.b.flatten(g, 1)?;
            if self.rng.random_bool(0.3) {
                f = self.b.gemm(f, pick(self.rng, &[1024usize, 1280]), true)?;
                f = self.b.hardswish(f)?;
            }
            f
        };
        self.b
            .gemm(y, pick(self.rng, &[1000usize, 1000, 100]), true)
    }
}

/// Widest stage (a bottleneck stage's output may be four times this), as in common ImageNet networks.
const MAX_CHANNELS: usize = 640;

/// The families a network is drawn from.
const FAMILIES: [&str; 7] = [
    "plain",
    "basic",
    "bottleneck",
    "mobile",
    "fire",
    "shuffle",
    "dense_inception",
];

/// Network `i` of the stream seeded by `seed`: the same pair always gives the same network.
pub fn synthetic(seed: u64, i: usize) -> Result<Graph, BuildError> {
    let mut rng =
        StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed);
    let family = FAMILIES[i % FAMILIES.len()];
    let r = pick(&mut rng, &[96usize, 128, 160, 192, 224, 224, 240]);
    let bn = rng.random_bool(0.25);
    let mut b = GraphBuilder::new(&format!("synthetic{i}_{family}"));
    let x = b.input(&[1, 3, r, r]);
    let mut n = Net {
        b,
        rng: &mut rng,
        bn,
    };
    let wide_head = family == "plain" && n.rng.random_bool(0.7);
    let mut y = match family {
        "plain" => {
            let (k, s) = pick(n.rng, &[(11usize, 4usize), (7, 2), (5, 2), (3, 1), (3, 2)]);
            let c = pick(n.rng, &[32usize, 48, 64, 96]);
            let y = n.conv_act(x, c, k, s, Act::Relu)?;
            n.downsample_pool(y)?
        }
        "basic" | "bottleneck" | "dense_inception" => {
            let c = pick(n.rng, &[32usize, 48, 64]);
            let y = n.conv_act(x, c, 7, 2, Act::Relu)?;
            n.b.maxpool(y, [3, 3], [2, 2], [1, 1, 1, 1])?
        }
        "shuffle" | "fire" => {
            let c = pick(n.rng, &[24usize, 32, 64, 96]);
            let y = n.conv_act(x, c, 3, 2, Act::Relu)?;
            n.b.maxpool(y, [3, 3], [2, 2], [1, 1, 1, 1])?
        }
        _ => {
            let a = pick(n.rng, &[Act::Relu6, Act::HardSwish, Act::Silu]);
            let c = pick(n.rng, &[16usize, 24, 32, 40]);
            n.conv_act(x, c, 3, 2, a)?
        }
    };
    let act = pick(n.rng, &[Act::Relu6, Act::HardSwish, Act::Silu, Act::Relu]);
    let group_width = if n.rng.random_bool(0.4) {
        pick(n.rng, &[4usize, 8, 16, 24, 32])
    } else {
        0
    };
    let stages = n.rng.random_range(3..=5);
    for s in 0..stages {
        let c = n.channels(y)?;
        // Bottleneck stages widen by their expansion at the first stage (64 → 256 in ResNet-50).
        let growth = match (family, s) {
            ("bottleneck", 0) => pick(n.rng, &[2.0, 4.0]),
            ("bottleneck", _) => 2.0,
            _ => pick(n.rng, &[1.25, 1.5, 2.0]),
        };
        let cap = if family == "bottleneck" {
            4 * MAX_CHANNELS
        } else {
            MAX_CHANNELS
        };
        let cout = (((c as f64 * growth).round() as usize).div_ceil(8) * 8).min(cap);
        let blocks = n.rng.random_range(1..=3);
        let small = n.spatial(y)? < 8;
        for bi in 0..blocks {
            let stride = if bi == 0 && s > 0 && !small { 2 } else { 1 };
            let out_c = if bi == 0 { cout } else { n.channels(y)? };
            y = match family {
                "plain" => {
                    let k = pick(n.rng, &[3usize, 3, 5]);
                    let y = n.conv_act(y, out_c, k, 1, Act::Relu)?;
                    if stride == 2 {
                        n.b.maxpool(y, [2, 2], [2, 2], [0; 4])?
                    } else {
                        y
                    }
                }
                "basic" => n.basic(y, out_c, stride)?,
                "bottleneck" => n.bottleneck(y, out_c, stride, group_width)?,
                "mobile" => n.inverted_residual(y, out_c, stride, act)?,
                "fire" => {
                    let y = if stride == 2 {
                        n.b.maxpool(y, [3, 3], [2, 2], [1, 1, 1, 1])?
                    } else {
                        y
                    };
                    n.fire(y, out_c)?
                }
                "shuffle" => n.shuffle(y, out_c.div_ceil(2) * 2, stride)?,
                _ => {
                    let y = if stride == 2 {
                        let h = n.b.batchnorm(y)?;
                        let h = n.b.relu(h)?;
                        let h = n.conv(h, out_c / 2, 1, 1, 1)?;
                        n.b.avgpool(h, [2, 2], [2, 2], [0; 4])?
                    } else {
                        y
                    };
                    if n.rng.random_bool(0.5) {
                        let layers = n.rng.random_range(2..=6);
                        let growth = pick(n.rng, &[12usize, 16, 32]);
                        n.dense(y, layers, growth)?
                    } else {
                        n.inception(y, out_c)?
                    }
                }
            };
        }
    }
    if family == "fire" || family == "shuffle" {
        let c = pick(n.rng, &[512usize, 1024]);
        y = n.conv_act(y, c, 1, 1, Act::Relu)?;
    }
    let o = n.head(y, wide_head)?;
    n.b.finish(&[o])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{FusionRules, KernelKind, decompose};
    use std::collections::BTreeSet;

    #[test]
    fn every_family_builds_exports_and_decomposes() {
        let mut kinds = BTreeSet::new();
        for i in 0..3 * FAMILIES.len() {
            let g = synthetic(7, i).unwrap_or_else(|e| panic!("network {i}: {e}"));
            let d = decompose(&g, &FusionRules::tract_default()).unwrap();
            assert!(d.kernels.len() > 5, "network {i}");
            crate::model::export::to_onnx_bytes(&g).unwrap();
            kinds.extend(d.kernels.iter().map(|k| k.kind));
        }
        for k in [
            KernelKind::Conv,
            KernelKind::Pointwise,
            KernelKind::Depthwise,
            KernelKind::MatMul,
            KernelKind::Pool,
            KernelKind::Elementwise,
            KernelKind::Concat,
        ] {
            assert!(kinds.contains(&k), "{k:?} never generated");
        }
    }

    #[test]
    fn the_same_index_gives_the_same_network() {
        let a = synthetic(3, 5).unwrap();
        let b = synthetic(3, 5).unwrap();
        assert_eq!(a.nodes.len(), b.nodes.len());
        assert_eq!(a.name, b.name);
    }
}
