//! Multi-branch topologies of the design-space generator (`super::families`): HRNet's parallel
//! resolutions fused by strided convs and nearest upsampling, and DLA's hierarchical aggregation
//! trees. Their joins (sums of resampled branches, concatenations of many levels) are kernels the
//! chain-like families never make.
use super::TensorId;
use super::blocks::{Act, Net, R};
use super::builder::BuildError;

/// HRNet's exchange: every branch receives the sum of all branches brought to its resolution and
/// width (1×1 conv then nearest upsampling from lower resolutions, chains of strided 3×3 convs
/// from higher ones), then a ReLU.
fn hr_fuse(n: &mut Net, xs: &[TensorId]) -> Result<Vec<TensorId>, BuildError> {
    let mut out = Vec::with_capacity(xs.len());
    for (i, &xi) in xs.iter().enumerate() {
        let (ci, si) = (n.channels(xi)?, n.spatial(xi)?);
        let mut acc = xi;
        for (j, &xj) in xs.iter().enumerate() {
            let t = if j > i {
                let t = n.conv(xj, ci, 1, 1, 1)?;
                n.b.resize(t, [si, si])?
            } else if j < i {
                let cj = n.channels(xj)?;
                let mut t = xj;
                for step in j..i {
                    t = if step + 1 == i {
                        n.conv(t, ci, 3, 2, 1)?
                    } else {
                        n.conv_act(t, cj, 3, 2, Act::Relu)?
                    };
                }
                t
            } else {
                continue;
            };
            acc = n.b.add(acc, t)?;
        }
        out.push(n.b.relu(acc)?);
    }
    Ok(out)
}

/// HRNet: a two-conv stem, a bottleneck layer, then stages that add a half-resolution branch of
/// twice the width and exchange between branches; the classification head merges the branches
/// from high to low resolution.
pub(crate) fn hrnet(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    n.div = 2;
    let c = n.pick_width(
        &[18.0, 30.0, 32.0, 40.0, 44.0, 48.0, 64.0],
        w.clamp(0.5, 1.5),
    );
    let y = n.conv_act(x, 64, 3, 2, Act::Relu)?;
    let mut y = n.conv_act(y, 64, 3, 2, Act::Relu)?;
    for _ in 0..n.range(1, 4) {
        y = n.bottleneck(y, 256, 1, 64, 1, None, false)?;
    }
    let mut branches = vec![n.conv_act(y, c, 3, 1, Act::Relu)?];
    for stage in 1..4 {
        let last = branches[branches.len() - 1];
        let s = n.down(last)?;
        branches.push(n.conv_act(last, c << stage, 3, s, Act::Relu)?);
        let modules = if stage == 2 {
            n.range(1, 4)
        } else {
            n.range(1, 2)
        };
        let blocks = n.range(1, 4);
        for _ in 0..modules {
            for b in branches.iter_mut() {
                let cb = n.channels(*b)?;
                for _ in 0..blocks {
                    *b = n.basic(*b, cb, 1, false)?;
                }
            }
            branches = hr_fuse(n, &branches)?;
        }
    }
    let mut y: Option<TensorId> = None;
    for (i, &b) in branches.iter().enumerate() {
        let mid = 32usize << i;
        let inc = n.bottleneck(b, 4 * mid, 1, mid, 1, None, false)?;
        y = Some(match y {
            None => inc,
            Some(prev) => {
                let s = if n.spatial(prev)? > n.spatial(inc)? {
                    2
                } else {
                    1
                };
                let d = n.conv_act(prev, 4 * mid, 3, s, Act::Relu)?;
                n.b.add(inc, d)?
            }
        });
    }
    let y = y.ok_or_else(|| BuildError::Graph {
        graph: n.b.graph().name.clone(),
        detail: "an HRNet without branches".into(),
    })?;
    let y = n.conv_act(y, 2048, 1, 1, Act::Relu)?;
    n.head_fc(y, classes)
}

/// One DLA block with the residual given: a basic block (`groups` 0), or a bottleneck of
/// expansion 2 (with groups in the X variants).
fn dla_block(
    n: &mut Net,
    x: TensorId,
    cout: usize,
    stride: usize,
    residual: TensorId,
    groups: usize,
) -> R {
    let half = n.round(cout as f64 / 2.0);
    let z = if let Some(per_group) = half.checked_div(groups) {
        let mid = per_group.max(1) * groups;
        let z = n.conv_act(x, mid, 1, 1, Act::Relu)?;
        let z = n.conv(z, mid, 3, stride, groups)?;
        let z = n.b.relu(z)?;
        n.conv(z, cout, 1, 1, 1)?
    } else {
        let z = n.conv_act(x, cout, 3, stride, Act::Relu)?;
        n.conv(z, cout, 3, 1, 1)?
    };
    let y = n.b.add(z, residual)?;
    n.b.relu(y)
}

/// A DLA tree of `levels`: two blocks (or two subtrees) whose outputs, with the children passed
/// down, are aggregated by a root (concatenation, 1×1 conv, ReLU).
#[allow(clippy::too_many_arguments)] // the recursion's state, as DLA's Tree takes it
fn tree(
    n: &mut Net,
    x: TensorId,
    levels: usize,
    cout: usize,
    stride: usize,
    level_root: bool,
    mut children: Vec<TensorId>,
    groups: usize,
) -> R {
    let bottom = if stride > 1 { n.pool_down(x, true)? } else { x };
    if level_root {
        children.push(bottom);
    }
    if levels <= 1 {
        let residual = if n.channels(bottom)? == cout {
            bottom
        } else {
            n.conv(bottom, cout, 1, 1, 1)?
        };
        let x1 = dla_block(n, x, cout, stride, residual, groups)?;
        let x2 = dla_block(n, x1, cout, 1, x1, groups)?;
        let mut all = vec![x2, x1];
        all.extend(children);
        let cat = n.b.concat(&all, 1)?;
        return n.conv_act(cat, cout, 1, 1, Act::Relu);
    }
    let x1 = tree(n, x, levels - 1, cout, stride, false, Vec::new(), groups)?;
    children.push(x1);
    tree(n, x1, levels - 1, cout, 1, false, children, groups)
}

/// DLA: a full-resolution stem, two plain levels, then aggregation trees of basic or bottleneck
/// blocks; the classifier is a 1×1 conv on the pooled map.
pub(crate) fn dla(n: &mut Net, x: TensorId, w: f64, classes: usize) -> R {
    let groups = match n.range(0, 3) {
        0 | 1 => 0,
        2 => 1,
        _ => 32,
    };
    let base = [16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
    let ch: Vec<usize> = base.iter().map(|&c| n.round(c * w.max(0.5))).collect();
    let y = n.conv_act(x, ch[0], 7, 1, Act::Relu)?;
    let y = n.conv_act(y, ch[0], 3, 1, Act::Relu)?;
    let mut y = n.conv_act(y, ch[1], 3, 2, Act::Relu)?;
    for (lvl, &c) in ch.iter().enumerate().skip(2) {
        let levels = if lvl == 2 || lvl == 5 {
            1
        } else {
            n.range(1, 3)
        };
        let s = n.down(y)?;
        let g = if groups > 1 {
            groups.min(c / 2)
        } else {
            groups
        };
        y = tree(n, y, levels, c, s, lvl > 2, Vec::new(), g)?;
    }
    let g = n.b.global_avg_pool(y)?;
    let h =
        n.b.conv(g, classes, [1, 1], [1, 1], [0; 4], [1, 1], 1, true)?;
    n.b.flatten(h, 1)
}
