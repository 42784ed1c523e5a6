//! Random CNNs drawn from the design space of mobile and server vision networks, nn-Meter's way: a
//! family's topology with random widths, depths, kernels, expansions, activations, gates, input
//! resolution (96–320) and width multiplier (0.25–2). The families are those the networks augur is
//! asked about are made of: plain stacks, ResNet and ResNet-D, ResNeXt and RegNet, MobileNetV1,
//! inverted residuals (MobileNetV2/V3, EfficientNet and -Lite, MnasNet, FBNet, TinyNet), ReXNet,
//! GhostNet, MixNet, LCNet, SqueezeNet, ShuffleNetV2, DenseNet, GoogLeNet, ConvNeXt, HRNet and DLA.
//! The numbers are drawn from the ranges such networks use, never read from a model file, so
//! nothing built from these networks holds an evaluation model's layers by construction.
use super::blocks::{Act, Gate, Inverted, Net, R, Se};
use super::branches::{dla, hrnet};
use super::builder::{BuildError, GraphBuilder};
use super::{Graph, TensorId};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The families, in the order consecutive network indices go round them.
pub const FAMILIES: [&str; 17] = [
    "plain",
    "resnet",
    "bottleneck",
    "regnet",
    "mobilenet_v1",
    "inverted",
    "rexnet",
    "ghost",
    "mixnet",
    "lcnet",
    "fire",
    "shuffle",
    "dense",
    "inception",
    "convnext",
    "hrnet",
    "dla",
];

const RESOLUTIONS: [usize; 16] = [
    96, 112, 128, 144, 160, 176, 192, 208, 224, 224, 224, 240, 256, 272, 288, 320,
];
const WIDTHS: [f64; 12] = [
    0.25, 0.35, 0.5, 0.75, 0.75, 1.0, 1.0, 1.0, 1.25, 1.4, 1.5, 2.0,
];

/// Network `i` of the stream seeded by `seed`: the same pair always gives the same network, and
/// consecutive indices go round [`FAMILIES`].
pub fn network(seed: u64, i: usize) -> Result<Graph, BuildError> {
    let mut rng =
        StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x00de_519e);
    let family = FAMILIES[i % FAMILIES.len()];
    let mut n = Net {
        b: GraphBuilder::new(&format!("generated{i}_{family}")),
        rng: &mut rng,
        bn: false,
        div: 8,
    };
    // Exports mostly fold a BatchNormalization into the conv before it; a few do not.
    n.bn = n.chance(0.05);
    let r = n.pick(&RESOLUTIONS);
    let w = n.pick(&WIDTHS);
    let classes = n.pick(&[1000usize, 1000, 1000, 100, 10]);
    let x = n.b.input(&[1, 3, r, r]);
    let y = match family {
        "plain" => plain(&mut n, x, w, classes)?,
        "resnet" => resnet(&mut n, x, w, classes, false)?,
        "bottleneck" => resnet(&mut n, x, w, classes, true)?,
        "regnet" => regnet(&mut n, x, w, classes)?,
        "mobilenet_v1" => mobilenet_v1(&mut n, x, w, classes)?,
        "inverted" => inverted(&mut n, x, w, classes)?,
        "rexnet" => rexnet(&mut n, x, w, classes)?,
        "ghost" => ghost(&mut n, x, w, classes)?,
        "mixnet" => mixnet(&mut n, x, w, classes)?,
        "lcnet" => lcnet(&mut n, x, w, classes)?,
        "fire" => fire(&mut n, x, w, classes)?,
        "shuffle" => shuffle(&mut n, x, w, classes)?,
        "dense" => dense(&mut n, x, w, classes)?,
        "inception" => inception(&mut n, x, w, classes)?,
        "convnext" => convnext(&mut n, x, w, classes)?,
        "hrnet" => hrnet(&mut n, x, w, classes)?,
        _ => dla(&mut n, x, w, classes)?,
    };
    n.b.finish(&[y])
}

/// Global average pool, a 1×1 conv with bias and an activation on the pooled vector, then the
/// classifier (MobileNetV3, LCNet, GhostNet).
fn head_conv(n: &mut Net, x: TensorId, width: usize, act: Act, classes: usize) -> R {
    let g = n.b.global_avg_pool(x)?;
    let h =
        n.b.conv(g, width, [1, 1], [1, 1], [0; 4], [1, 1], 1, true)?;
    let h = n.act(h, act)?;
    let f = n.b.flatten(h, 1)?;
    n.b.gemm(f, classes, true)
}

/// Activation of a mobile network: the early and the late one (MobileNetV3 and MixNet switch).
fn mobile_acts(n: &mut Net) -> (Act, Act) {
    match n.range(0, 4) {
        0 => (Act::Relu6, Act::Relu6),
        1 => (Act::Relu, Act::HardSwish),
        2 => (Act::Silu, Act::Silu),
        3 => (Act::Relu, Act::Relu),
        _ => (Act::Relu, Act::Silu),
    }
}

/// VGG/AlexNet-like stacks: a large or small stem, k×k convs between pools, a wide MLP classifier
/// on pooled maps or a global-pool one.
fn plain(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    let (k, s) = n.pick(&[(11usize, 4usize), (7, 2), (5, 2), (3, 1), (3, 2)]);
    let c = n.pick_width(&[32.0, 48.0, 64.0, 96.0], w);
    let mut y = n.conv_act(x, c, k, s, Act::Relu)?;
    y = n.b.maxpool(y, [3, 3], [2, 2], [1; 4])?;
    let stages = n.range(3, 5);
    let cap = n.round(512.0 * w.max(1.0));
    for st in 0..stages {
        let c = (n.channels(y)? * 2).min(cap);
        for _ in 0..n.range(1, 3) {
            let k = n.pick(&[3usize, 3, 3, 5]);
            y = n.conv_act(y, c, k, 1, Act::Relu)?;
        }
        // Down to about 7×7, as VGG and AlexNet stop, so the classifier sees a map, not a vector.
        if st + 1 < stages && n.spatial(y)? >= 14 {
            y = n.b.maxpool(y, [2, 2], [2, 2], [0; 4])?;
        }
    }
    if !n.chance(0.6) {
        return n.head_fc(y, classes);
    }
    // A classifier on pooled maps: the widest map that keeps the flattened features within about
    // 25 k (a 7×7×512 VGG head), so the first layer's weights range from a few MB to a few hundred
    // — the regime where a layer streams its weights from DRAM on every inference.
    let (sp, c) = (n.spatial(y)?, n.channels(y)?);
    let wanted = n.pick(&[7usize, 6, 4, 3, 2, 1]);
    let mut target = wanted.min(sp).max(1);
    while target > 1 && c * target * target > 25_600 {
        target -= 1;
    }
    if sp > target {
        let k = sp.div_ceil(target);
        y = n.b.avgpool(y, [k, k], [k, k], [0; 4])?;
    }
    let mut h = n.b.flatten(y, 1)?;
    // Hidden widths drawn over a range rather than from the canonical 4096, so the generator
    // covers the space around the well-known heads instead of copying them.
    let spread = 0.75 + 0.5 * n.unit();
    let width = n.pick_width(&[768.0, 1024.0, 1536.0, 2048.0, 3072.0, 4096.0], spread);
    for _ in 0..2 {
        h = n.b.gemm(h, width, true)?;
        h = n.b.relu(h)?;
    }
    n.b.gemm(h, classes, true)
}

/// ResNet with basic blocks or bottlenecks, the ResNet-D deep stem and average-pool shortcuts,
/// ResNeXt groups, squeeze-excitation.
fn resnet(n: &mut Net, x: TensorId, w: f64, classes: usize, bottleneck: bool) -> R {
    let deep = n.chance(0.4);
    let avg_down = deep && n.chance(0.7);
    let c0 = n.round(64.0 * w);
    let mut y = if deep {
        let h = n.round(c0 as f64 / 2.0);
        let y = n.conv_act(x, h, 3, 2, Act::Relu)?;
        let y = n.conv_act(y, h, 3, 1, Act::Relu)?;
        n.conv_act(y, c0, 3, 1, Act::Relu)?
    } else {
        n.conv_act(x, c0, 7, 2, Act::Relu)?
    };
    y = n.b.maxpool(y, [3, 3], [2, 2], [1; 4])?;
    let (groups, base_width) = if bottleneck && n.chance(0.35) {
        (n.pick(&[8usize, 16, 32, 64]), n.pick(&[2.0, 4.0, 8.0]))
    } else {
        (1, 64.0)
    };
    let expansion = if bottleneck {
        n.pick(&[4usize, 4, 2])
    } else {
        1
    };
    let se = n.chance(0.2);
    let stages = n.pick(&[3usize, 4, 4, 4]);
    for st in 0..stages {
        let width = n.round(64.0 * w * (1 << st) as f64);
        let depth = if st == 2 {
            n.pick(&[1usize, 2, 4, 6, 8])
        } else {
            n.pick(&[1usize, 2, 3, 3])
        };
        for bi in 0..depth {
            let stride = if bi == 0 && st > 0 { n.down(y)? } else { 1 };
            y = if bottleneck {
                let mid = if groups > 1 {
                    n.round(width as f64 / 64.0 * base_width * groups as f64)
                        .div_ceil(groups)
                        * groups
                } else {
                    width
                };
                let se = se.then_some(Se {
                    reduced: (mid / 16).max(8),
                    act: Act::Relu,
                    gate: Gate::Sigmoid,
                });
                n.bottleneck(y, width * expansion, stride, mid, groups, se, avg_down)?
            } else {
                n.basic(y, width, stride, avg_down)?
            };
        }
    }
    n.head_fc(y, classes)
}

/// RegNetX/Y: a 32-wide stem, stages of group-conv bottlenecks (ratio 1) whose widths grow
/// geometrically and are quantised to the group width; RegNetY adds squeeze-excitation.
fn regnet(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    let mut y = n.conv_act(x, 32, 3, 2, Act::Relu)?;
    let gw = n.pick(&[8usize, 16, 24, 32, 40, 48, 56, 64]);
    let se = n.chance(0.5);
    let w0 = n.pick(&[24.0, 32.0, 48.0, 56.0, 64.0, 80.0, 96.0]) * w.clamp(0.5, 1.5);
    let m: f64 = n.pick(&[1.9, 2.1, 2.3, 2.5, 2.7]);
    for st in 0..4 {
        let raw = w0 * m.powi(st);
        let g = gw.min(n.round(raw));
        let width = (((raw / g as f64).round() as usize).max(1) * g).max(8);
        let depth = if st == 2 {
            n.range(2, 10)
        } else {
            n.range(1, 4)
        };
        for bi in 0..depth {
            let stride = if bi == 0 { n.down(y)? } else { 1 };
            let cin = n.channels(y)?;
            let se = se.then_some(Se {
                reduced: (cin / 4).max(1),
                act: Act::Relu,
                gate: Gate::Sigmoid,
            });
            y = n.bottleneck(y, width, stride, width, width / g, se, false)?;
        }
    }
    n.head_fc(y, classes)
}

/// MobileNetV1: depthwise separable convolutions.
fn mobilenet_v1(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    let act = n.pick(&[Act::Relu, Act::Relu6]);
    let mut y = n.conv_act(x, n.round(32.0 * w), 3, 2, act)?;
    let mut plan = vec![
        (64.0, 1),
        (128.0, 2),
        (128.0, 1),
        (256.0, 2),
        (256.0, 1),
        (512.0, 2),
    ];
    for _ in 0..n.range(1, 5) {
        plan.push((512.0, 1));
    }
    plan.extend([(1024.0, 2), (1024.0, 1)]);
    for (c, s) in plan {
        let stride = if s == 2 { n.down(y)? } else { 1 };
        let c = n.round(c * w);
        y = n.separable(y, c, stride, 3, act, None, act)?;
    }
    n.head_fc(y, classes)
}

/// Inverted-residual networks: MobileNetV2/V3, EfficientNet and -Lite, MnasNet, FBNet, TinyNet
/// (EfficientNet at small resolutions and widths), with per-stage or per-block kernels and
/// expansions, and squeeze-excitation with sigmoid or hard-sigmoid gates.
fn inverted(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    let (early, late) = mobile_acts(n);
    let se_share = n.pick(&[0.0, 0.0, 0.5, 1.0]);
    let hard_gate = late == Act::HardSwish || n.chance(0.2);
    let per_block = n.chance(0.3);
    let stem = n.pick_width(&[16.0, 24.0, 32.0, 40.0], w);
    let mut y = n.conv_act(x, stem, 3, 2, early)?;
    let plan = [
        (16.0, 1),
        (24.0, 2),
        (40.0, 2),
        (80.0, 2),
        (112.0, 1),
        (192.0, 2),
        (320.0, 1),
    ];
    let stages = n.range(5, 7);
    for (st, &(c, s)) in plan.iter().take(stages).enumerate() {
        let cout = n.pick_width(&[0.75, 1.0, 1.0, 1.25], c * w);
        let act = if st < 2 { early } else { late };
        let mut k = n.pick(&[3usize, 3, 5, 7]);
        let mut t = if st == 0 {
            1
        } else {
            n.pick(&[3usize, 4, 6, 6])
        };
        let se = n.chance(se_share);
        let repeats = if st == 0 { 1 } else { n.range(1, 4) };
        for bi in 0..repeats {
            let stride = if bi == 0 && s == 2 { n.down(y)? } else { 1 };
            if per_block && bi > 0 {
                k = n.pick(&[3usize, 5]);
                t = n.pick(&[1usize, 3, 6]);
            }
            let cin = n.channels(y)?;
            let mid = if t == 1 {
                cin
            } else {
                n.round((cin * t) as f64)
            };
            let se = se.then(|| Se {
                reduced: if hard_gate {
                    n.round(mid as f64 / 4.0)
                } else {
                    (cin / 4).max(1)
                },
                act: if hard_gate { Act::Relu } else { act },
                gate: if hard_gate {
                    Gate::HardSigmoid
                } else {
                    Gate::Sigmoid
                },
            });
            let blk = Inverted {
                mid,
                kernels: vec![k],
                expand_groups: 1,
                act,
                dw_act: None,
                se,
            };
            y = n.inverted(y, cout, stride, &blk, false)?;
        }
    }
    let last = n.pick_width(&[960.0, 1024.0, 1280.0, 1536.0], w.max(1.0));
    if late == Act::HardSwish && n.chance(0.7) {
        // MobileNetV3: a 1×1 to the last width, then a conv head on the pooled vector.
        let y = n.conv_act(y, last, 1, 1, late)?;
        let width = n.pick(&[1024usize, 1280]);
        return head_conv(n, y, width, late, classes);
    }
    let y = n.conv_act(y, last, 1, 1, late)?;
    n.head_fc(y, classes)
}

/// ReXNet: inverted residuals whose width grows linearly block by block (channel counts not
/// multiples of 8), partial residuals, swish then ReLU6, squeeze-excitation in later blocks.
fn rexnet(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    n.div = 1;
    let mut y = n.conv_act(x, n.round(32.0 * w), 3, 2, Act::Silu)?;
    let layers: Vec<usize> = [1usize, 2, 2, 3, 3, 5]
        .iter()
        .map(|&l| n.range(1, l))
        .collect();
    let strides = [1usize, 2, 2, 2, 1, 2];
    let total: usize = layers.iter().sum();
    let final_c = n.pick(&[120.0, 150.0, 180.0, 210.0]);
    let mut idx = 0;
    for (st, (&l, &s)) in layers.iter().zip(&strides).enumerate() {
        for bi in 0..l {
            let stride = if bi == 0 && s == 2 { n.down(y)? } else { 1 };
            let cout = n.round((16.0 + (final_c - 16.0) * idx as f64 / total as f64) * w);
            let cin = n.channels(y)?;
            let mid = if idx == 0 { cin } else { cin * 6 };
            let se = (st >= 2).then(|| Se {
                reduced: (mid / 12).max(1),
                act: Act::Relu,
                gate: Gate::Sigmoid,
            });
            let blk = Inverted {
                mid,
                kernels: vec![3],
                expand_groups: 1,
                act: Act::Silu,
                dw_act: Some(Act::Relu6),
                se,
            };
            y = n.inverted(y, cout, stride, &blk, true)?;
            idx += 1;
        }
    }
    let y = n.conv_act(y, n.round(1280.0 * w), 1, 1, Act::Silu)?;
    n.head_fc(y, classes)
}

/// GhostNet: ghost bottlenecks (channel counts multiples of 4), hard-sigmoid squeeze-excitation,
/// a conv head on the pooled vector.
fn ghost(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    n.div = 4;
    let mut y = n.conv_act(x, n.round(16.0 * w), 3, 2, Act::Relu)?;
    let plan = [
        (16.0, 1),
        (24.0, 2),
        (40.0, 2),
        (80.0, 2),
        (112.0, 1),
        (160.0, 2),
    ];
    for (st, &(c, s)) in plan.iter().enumerate() {
        let cout = n.round(c * w);
        let k = if st == 2 || st == 5 {
            5
        } else {
            n.pick(&[3usize, 3, 5])
        };
        let repeats = if st == 0 { 1 } else { n.range(1, 4) };
        for bi in 0..repeats {
            let stride = if bi == 0 && s == 2 { n.down(y)? } else { 1 };
            let cin = n.channels(y)?;
            let t = n.pick(&[1.0, 2.3, 2.5, 3.0, 4.0, 6.0]);
            let mid = n.round(cin as f64 * t);
            let se = (st >= 2 && n.chance(0.5)).then(|| Se {
                reduced: n.round(mid as f64 / 4.0),
                act: Act::Relu,
                gate: Gate::HardSigmoid,
            });
            y = n.ghost_bottleneck(y, mid, cout, stride, k, se)?;
        }
    }
    let y = n.conv_act(y, n.round(960.0 * w), 1, 1, Act::Relu)?;
    head_conv(n, y, 1280, Act::Relu, classes)
}

/// MixNet: mixed-kernel depthwise convolutions (channel splits with 3/5/7/9 kernels, concatenated),
/// grouped expansions, squeeze-excitation on half the input width, ReLU early and swish late.
fn mixnet(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    let stem = n.pick_width(&[16.0, 24.0], w);
    let mut y = n.conv_act(x, stem, 3, 2, Act::Relu)?;
    y = n.separable(y, stem, 1, 3, Act::Relu, None, Act::None)?;
    let plan = [(24.0, 2), (40.0, 2), (80.0, 2), (120.0, 1), (200.0, 2)];
    for (st, &(c, s)) in plan.iter().enumerate() {
        let cout = n.round(c * w);
        let act = if st == 0 { Act::Relu } else { Act::Silu };
        for bi in 0..n.range(1, 4) {
            let stride = if bi == 0 && s == 2 { n.down(y)? } else { 1 };
            let cin = n.channels(y)?;
            let kernels: Vec<usize> = [3usize, 5, 7, 9][..n.range(1, 4)].to_vec();
            let t = n.pick(&[3usize, 6]);
            let mid = n.round((cin * t) as f64);
            let se = (act == Act::Silu).then(|| Se {
                reduced: (cin / 2).max(1),
                act: Act::Silu,
                gate: Gate::Sigmoid,
            });
            let blk = Inverted {
                mid,
                kernels,
                expand_groups: n.pick(&[1usize, 2]),
                act,
                dw_act: None,
                se,
            };
            y = n.inverted(y, cout, stride, &blk, false)?;
        }
    }
    let y = n.conv_act(y, 1536, 1, 1, Act::Relu)?;
    n.head_fc(y, classes)
}

/// LCNet: depthwise separable blocks with hard-swish, 5×5 kernels late, squeeze-excitation in the
/// last blocks, a conv head on the pooled vector.
fn lcnet(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    let a = Act::HardSwish;
    let mut y = n.conv_act(x, n.round(16.0 * w), 3, 2, a)?;
    let mut plan = vec![
        (3, 32.0, 1, false),
        (3, 64.0, 2, false),
        (3, 64.0, 1, false),
        (3, 128.0, 2, false),
        (3, 128.0, 1, false),
        (3, 256.0, 2, false),
    ];
    let late_k = n.pick(&[3usize, 5, 5]);
    for _ in 0..n.range(1, 5) {
        plan.push((late_k, 256.0, 1, false));
    }
    let se = n.chance(0.7);
    plan.extend([(5, 512.0, 2, se), (5, 512.0, 1, se)]);
    for (k, c, s, se) in plan {
        let stride = if s == 2 { n.down(y)? } else { 1 };
        let cout = n.round(c * w);
        let cin = n.channels(y)?;
        let se = se.then(|| Se {
            reduced: n.round(cin as f64 / 4.0),
            act: Act::Relu,
            gate: Gate::HardSigmoid,
        });
        y = n.separable(y, cout, stride, k, a, se, a)?;
    }
    head_conv(n, y, 1280, a, classes)
}

/// SqueezeNet: fire modules between max pools, a 1×1 conv classifier before the global pool.
fn fire(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    let k = n.pick(&[3usize, 7]);
    let stem = n.pick_width(&[64.0, 96.0], w);
    let mut y = n.conv_act(x, stem, k, 2, Act::Relu)?;
    y = n.b.maxpool(y, [3, 3], [2, 2], [0; 4])?;
    let mut c = 128.0;
    for st in 0..3 {
        if st > 0 && n.spatial(y)? >= 4 {
            y = n.b.maxpool(y, [3, 3], [2, 2], [0; 4])?;
        }
        for _ in 0..n.range(1, 3) {
            let cout = n.round(c * w);
            let f = n.pick(&[6.0, 8.0]);
            let squeeze = n.round(cout as f64 / f);
            y = n.fire(y, cout, squeeze)?;
            c += 64.0;
        }
    }
    let y = n.conv_act(y, classes, 1, 1, Act::Relu)?;
    let g = n.b.global_avg_pool(y)?;
    n.b.flatten(g, 1)
}

/// ShuffleNetV2: channel split and shuffle units, a wide 1×1 before the classifier.
fn shuffle(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    n.div = 2;
    let mut y = n.conv_act(x, 24, 3, 2, Act::Relu)?;
    y = n.b.maxpool(y, [3, 3], [2, 2], [1; 4])?;
    let base = n.pick(&[48.0, 116.0, 176.0, 244.0]) * w.clamp(0.5, 1.5);
    let k = n.pick(&[3usize, 3, 5]);
    for (st, max) in [4usize, 8, 4].into_iter().enumerate() {
        let cout = n.round(base * (1 << st) as f64);
        for bi in 0..n.range(1, max) {
            let stride = if bi == 0 { n.down(y)? } else { 1 };
            y = n.shuffle(y, cout, stride, k)?;
        }
    }
    let last = n.pick(&[1024usize, 2048]);
    let y = n.conv_act(y, last, 1, 1, Act::Relu)?;
    n.head_fc(y, classes)
}

/// DenseNet: dense blocks of pre-activation layers joined by transitions.
fn dense(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    let growth = n.pick(&[12usize, 24, 32, 48]);
    let mut y = n.conv_act(
        x,
        n.round(2.0 * growth as f64 * w.max(0.5)),
        7,
        2,
        Act::Relu,
    )?;
    y = n.b.maxpool(y, [3, 3], [2, 2], [1; 4])?;
    let blocks = n.range(3, 4);
    for bi in 0..blocks {
        let layers = n.range(2, 16);
        y = n.dense(y, layers, growth)?;
        if bi + 1 < blocks && n.spatial(y)? >= 4 {
            let c = n.channels(y)? / 2;
            y = n.transition(y, c)?;
        }
    }
    let y = n.b.batchnorm(y)?;
    let y = n.b.relu(y)?;
    n.head_fc(y, classes)
}

/// GoogLeNet: a conv stem, inception modules between max pools.
fn inception(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    let mut y = n.conv_act(x, n.round(64.0 * w), 7, 2, Act::Relu)?;
    y = n.b.maxpool(y, [3, 3], [2, 2], [1; 4])?;
    y = n.conv_act(y, n.round(64.0 * w), 1, 1, Act::Relu)?;
    y = n.conv_act(y, n.round(192.0 * w), 3, 1, Act::Relu)?;
    let mut c = 256.0;
    for _ in 0..n.range(2, 3) {
        if n.spatial(y)? >= 4 {
            y = n.b.maxpool(y, [3, 3], [2, 2], [1; 4])?;
        }
        for _ in 0..n.range(2, 5) {
            y = n.inception(y, n.round(c * w))?;
            c += 64.0;
        }
    }
    n.head_fc(y, classes)
}

/// ConvNeXt: a 4×4 patchify stem, stages of large-kernel depthwise blocks with layer norms and
/// GELU MLPs, layer-norm + 2×2 strided conv downsampling, a normalised pooled head.
fn convnext(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    let d = n.pick_width(&[40.0, 48.0, 64.0, 80.0, 96.0, 128.0], w.clamp(0.5, 1.5));
    let conv_mlp = n.chance(0.5);
    let k = n.pick(&[7usize, 7, 7, 5, 3]);
    let mut y = n.b.conv(x, d, [4, 4], [4, 4], [0; 4], [1, 1], 1, true)?;
    y = n.layer_norm_2d(y)?;
    for st in 0..4 {
        if st > 0 && n.spatial(y)? >= 2 {
            y = n.layer_norm_2d(y)?;
            y =
                n.b.conv(y, d << st, [2, 2], [2, 2], [0; 4], [1, 1], 1, true)?;
        }
        let depth = if st == 2 {
            n.range(2, 9)
        } else {
            n.range(1, 3)
        };
        for _ in 0..depth {
            y = n.convnext(y, k, 4, conv_mlp)?;
        }
    }
    let g = n.b.global_avg_pool(y)?;
    let g = n.layer_norm_2d(g)?;
    let f = n.b.flatten(g, 1)?;
    n.b.gemm(f, classes, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{FusionRules, KernelKind, decompose};
    use std::collections::BTreeSet;

    #[test]
    fn every_family_builds_exports_and_decomposes() {
        let mut kinds = BTreeSet::new();
        for i in 0..2 * FAMILIES.len() {
            let g = network(11, i).unwrap_or_else(|e| panic!("network {i}: {e}"));
            let d = decompose(&g, &FusionRules::tract_default())
                .unwrap_or_else(|e| panic!("network {i}: {e}"));
            assert!(d.kernels.len() > 10, "network {i}: {}", d.kernels.len());
            crate::model::export::to_onnx_bytes(&g).unwrap_or_else(|e| panic!("network {i}: {e}"));
            kinds.extend(d.kernels.iter().map(|k| k.kind));
        }
        for k in [
            KernelKind::Conv,
            KernelKind::Pointwise,
            KernelKind::Depthwise,
            KernelKind::MatMul,
            KernelKind::Pool,
            KernelKind::Reduce,
            KernelKind::Elementwise,
            KernelKind::Concat,
            KernelKind::DataMovement,
        ] {
            assert!(kinds.contains(&k), "{k:?} never generated");
        }
    }

    #[test]
    fn the_same_index_gives_the_same_network_and_seeds_differ() {
        let a = network(3, 5).unwrap();
        let b = network(3, 5).unwrap();
        assert_eq!(a.name, b.name);
        assert_eq!(a.nodes.len(), b.nodes.len());
        let shapes =
            |g: &Graph| -> Vec<Vec<usize>> { g.tensors.iter().map(|t| t.shape.to_vec()).collect() };
        assert_eq!(shapes(&a), shapes(&b));
        let differ = (0..FAMILIES.len()).any(|i| {
            let (x, y) = (network(3, i).unwrap(), network(4, i).unwrap());
            shapes(&x) != shapes(&y)
        });
        assert!(differ, "another seed drew the same networks");
    }
}
