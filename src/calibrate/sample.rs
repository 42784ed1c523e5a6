//! Sampling kernel configurations: real layers from the prior, perturbed in channels and resolution so
//! the regressors see the neighbourhood of real layers rather than the layers themselves.
use crate::kernels::{Kernel, KernelKind};
use rand::Rng;
use rand::rngs::StdRng;

/// How many samples each kind gets relative to the others: kinds that dominate CNN time get more.
pub fn kind_weight(kind: KernelKind) -> f64 {
    match kind {
        KernelKind::Conv => 4.0,
        KernelKind::Pointwise => 5.0,
        KernelKind::Depthwise => 3.0,
        KernelKind::Elementwise => 3.0,
        KernelKind::MatMul => 1.0,
        KernelKind::Pool => 1.0,
        KernelKind::Reduce => 1.0,
        KernelKind::Concat => 1.0,
        KernelKind::DataMovement => 1.0,
        KernelKind::Softmax | KernelKind::Other => 0.5,
    }
}

fn scale(v: usize, f: f64, multiple: usize) -> usize {
    let x = (v as f64 * f).round().max(1.0) as usize;
    if multiple > 1 && v.is_multiple_of(multiple) {
        (x.div_ceil(multiple) * multiple).max(multiple)
    } else {
        x.max(1)
    }
}

fn log_uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    (rng.random_range(lo.ln()..hi.ln())).exp()
}

/// A perturbed copy of `k`: channels × [lo, hi] (log-uniform), spatial size moved one octave at most.
/// Only the fields the graph builder reads are changed; features are recomputed by decomposing the
/// built graph, so they can never disagree with what is measured.
pub fn perturb(k: &Kernel, rng: &mut StdRng, lo: f64, hi: f64) -> Kernel {
    let mut k = k.clone();
    let fc = log_uniform(rng, lo, hi);
    let fs = match rng.random_range(0..4) {
        0 => 0.5,
        1 => 2.0,
        _ => 1.0,
    };
    let resize = |shape: &mut Vec<usize>, ch: Option<usize>, fs: f64| {
        if let Some(c) = ch
            && shape.len() >= 2
        {
            shape[1] = c;
        }
        if shape.len() == 4 && fs != 1.0 {
            let h = (shape[2] as f64 * fs).round() as usize;
            let w = (shape[3] as f64 * fs).round() as usize;
            if spatial_ok(h) && spatial_ok(w) {
                shape[2] = h;
                shape[3] = w;
            }
        }
    };
    match k.kind {
        KernelKind::Conv | KernelKind::Pointwise => {
            let cin = k
                .input_shapes
                .first()
                .and_then(|s| s.get(1))
                .copied()
                .unwrap_or(k.cin);
            let g = k.groups.max(1);
            let new_cin = if g > 1 {
                scale(cin / g, fc, 1) * g
            } else {
                scale(cin, fc, 8)
            };
            let new_cout = if g > 1 {
                scale(k.cout / g, log_uniform(rng, lo, hi), 1) * g
            } else {
                scale(k.cout, log_uniform(rng, lo, hi), 8)
            };
            k.cout = new_cout;
            if let Some(s) = k.input_shapes.first_mut() {
                resize(s, Some(new_cin), fs);
            }
            // A residual operand has the output's shape, which the builder derives itself.
            k.input_shapes.truncate(1);
        }
        KernelKind::Depthwise => {
            let c = scale(k.cout, fc, 8);
            k.cout = c;
            k.groups = c;
            if let Some(s) = k.input_shapes.first_mut() {
                resize(s, Some(c), fs);
            }
            k.input_shapes.truncate(1);
        }
        KernelKind::MatMul => {
            k.cout = scale(k.cout, fc, 8);
            if let Some(s) = k.input_shapes.first_mut()
                && let Some(last) = s.last_mut()
            {
                *last = scale(*last, log_uniform(rng, lo, hi), 8);
            }
        }
        KernelKind::Concat => {
            for s in &mut k.input_shapes {
                let c = s
                    .get(1)
                    .copied()
                    .map(|c| scale(c, log_uniform(rng, lo, hi), 8));
                resize(s, c, 1.0);
            }
            let fs2 = fs;
            let (h, w) = k
                .input_shapes
                .first()
                .filter(|s| s.len() == 4)
                .map(|s| {
                    (
                        (s[2] as f64 * fs2).round() as usize,
                        (s[3] as f64 * fs2).round() as usize,
                    )
                })
                .unwrap_or((0, 0));
            if spatial_ok(h) && spatial_ok(w) {
                for s in &mut k.input_shapes {
                    if s.len() == 4 {
                        s[2] = h;
                        s[3] = w;
                    }
                }
            }
        }
        _ => perturb_alike(&mut k, fc, fs),
    }
    k
}

/// Whether a perturbed spatial size is one real layers have.
fn spatial_ok(h: usize) -> bool {
    (4..=224).contains(&h)
}

/// Perturbs a kernel whose inputs all scale alike: channels × `fc`, spatial size × `fs`.
fn perturb_alike(k: &mut Kernel, fc: f64, fs: f64) {
    // Elementwise, pools, reductions, data movement: every input scales the same way, and
    // broadcast operands ([1,C,1,1]) keep their singleton axes.
    let c0 = k.input_shapes.first().and_then(|s| s.get(1)).copied();
    let new_c = c0.map(|c| scale(c, fc, 8));
    let first = k
        .input_shapes
        .iter()
        .find(|s| s.len() == 4 && s[2] > 1)
        .or(k.input_shapes.first())
        .cloned()
        .unwrap_or_default();
    let (h, w) = if first.len() == 4 {
        let h = (first[2] as f64 * fs).round() as usize;
        let w = (first[3] as f64 * fs).round() as usize;
        if spatial_ok(h) && spatial_ok(w) && first[2] > 1 {
            (h, w)
        } else {
            (first[2], first[3])
        }
    } else {
        (0, 0)
    };
    for s in &mut k.input_shapes {
        if k.kind == KernelKind::DataMovement {
            continue;
        }
        if s.len() >= 2 && Some(s[1]) == c0 {
            s[1] = new_c.unwrap_or(s[1]);
        }
        if s.len() == 4 && s[2] > 1 {
            s[2] = h;
            s[3] = w;
        }
    }
}

/// Draws `n` configurations: kinds in proportion to [`kind_weight`] × how many the prior has,
/// each a perturbed prior layer (`exact_share` of them unperturbed).
pub fn draw(prior: &[&Kernel], n: usize, rng: &mut StdRng, exact_share: f64) -> Vec<Kernel> {
    if prior.is_empty() {
        return Vec::new();
    }
    let weights: Vec<f64> = prior.iter().map(|k| kind_weight(k.kind)).collect();
    let total: f64 = weights.iter().sum();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut x = rng.random_range(0.0..total);
        let mut pick = 0;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                pick = i;
                break;
            }
            x -= w;
        }
        let base = prior[pick];
        if rng.random_bool(exact_share.clamp(0.0, 1.0)) {
            out.push(base.clone());
        } else {
            out.push(perturb(base, rng, 0.5, 2.0));
        }
    }
    out
}
