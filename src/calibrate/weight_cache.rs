//! What a convolution's weights cost once a run's working set outgrows the cache: one weight-heavy
//! convolution (512 → 512 channels, 3×3, on 7×7 — the last stage of a ResNet) timed per node inside
//! models that also stream a tensor of growing size through the cache on every run. Its time over
//! its time alone, per weight byte, by the bytes the run touches, is the profile's weight curve
//! ([`crate::profile::Reference::weight_cache`]).
//!
//! The stream curve of the memory probe does not stand in for it: a convolution reads its packed
//! weights once per tile of output positions, with the arithmetic in between, and once they no
//! longer stay in the cache between runs it pays several times what a byte of a plain stream costs.
//! Calibration's own networks cannot tell this apart either: the layers with the heaviest weights
//! come in the largest networks only, all past the knee.
use super::progress::{Progress, note};
use crate::kernels::{FusionRules, decompose};
use crate::model::builder::GraphBuilder;
use crate::profile::CacheCurve;
use crate::runtime::{Backend, RunSpec};

const MIB: f64 = (1u64 << 20) as f64;

/// Largest tensor streamed beside the convolution: past any LLC a board of this class reports for
/// one process's share, and still a small part of an edge board's memory (it is read and written).
const MAX_STREAM_BYTES: f64 = 192.0 * MIB;

/// Streamed sizes in MiB: none (the convolution alone), then 1 MiB upward in steps of about √2,
/// up to twice the LLC (at least 64 MiB, at most [`MAX_STREAM_BYTES`]).
fn stream_sizes(llc_bytes: f64) -> Vec<f64> {
    let top = (2.0 * llc_bytes).clamp(64.0 * MIB, MAX_STREAM_BYTES);
    let mut sizes = vec![0.0];
    let mut s = MIB;
    while s <= top {
        sizes.push(s);
        if s * 1.5 <= top {
            sizes.push(s * 1.5);
        }
        s *= 2.0;
    }
    sizes
}

/// One model of the sweep: the convolution, and where `stream` > 0 a ReLU over an input tensor of
/// that many bytes. Its ONNX bytes, the convolution's node name, its weight bytes and the bytes one
/// run touches: the convolution's own, and three buffers of the tensor's size — the runtime hands
/// each run a fresh copy of its inputs, so the tensor is read, copied, read again and written.
fn model(stream: f64) -> Option<(Vec<u8>, String, f64, f64)> {
    let mut b = GraphBuilder::new("weight_cache");
    let x = b.input(&[1, 512, 7, 7]);
    let y = b
        .conv(x, 512, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, true)
        .ok()?;
    let mut outputs = vec![y];
    let floats = (stream / 4.0) as usize;
    if floats > 0 {
        let z = b.input(&[1, 1024, floats.div_ceil(1024)]);
        outputs.push(b.relu(z).ok()?);
    }
    let g = b.finish(&outputs).ok()?;
    let d = decompose(&g, &FusionRules::tract_default()).ok()?;
    let conv = d
        .kernels
        .iter()
        .find(|k| k.ops.first().is_some_and(|o| o == "Conv"))?;
    let name = conv.name.clone();
    let weights = conv.weight_bytes as f64;
    let touched = (conv.weight_bytes + conv.input_bytes + conv.output_bytes + conv.scratch_bytes)
        as f64
        + 3.0 * stream;
    let bytes = crate::model::export::to_onnx_bytes(&g).ok()?;
    Some((bytes, name, weights, touched))
}

/// The convolution's time in one run of `onnx`, ms: its nodes' medians summed (tract splits a
/// convolution into padding, im2col and the product, named after it).
fn conv_ms(backend: &dyn Backend, onnx: &[u8], name: &str, spec: &RunSpec) -> Option<f64> {
    let nodes = backend.time_per_node_onnx(onnx, spec).ok()??;
    let prefix = format!("{name}.");
    let ms: f64 = nodes
        .iter()
        .filter(|n| n.name == name || n.name.starts_with(&prefix))
        .map(|n| n.median_ms)
        .sum();
    (ms > 0.0).then_some(ms)
}

/// The weight curve of this board, or an empty one (with a note) where the backend cannot time per
/// node or the sweep fails; `passes` interleaved passes over the sizes, the median of each kept.
pub fn sweep(
    backend: &dyn Backend,
    threads: usize,
    llc_bytes: f64,
    passes: usize,
    progress: Progress,
) -> CacheCurve {
    let spec = RunSpec {
        threads,
        warmup: 3,
        warmup_seconds: 0.2,
        runs: 7,
        max_seconds: 3.0,
    };
    let sizes = stream_sizes(llc_bytes);
    // Per size: (weight bytes, bytes touched, the convolution's times). The models are built as
    // they are timed: all of them at once would hold a copy of the weights each.
    let mut timed: Vec<(f64, f64, Vec<f64>)> = vec![(0.0, 0.0, Vec::new()); sizes.len()];
    for _ in 0..passes.max(1) {
        for (slot, &stream) in timed.iter_mut().zip(&sizes) {
            let Some((onnx, name, weights, touched)) = model(stream) else {
                continue;
            };
            // A size that cannot be run (memory) is left out, not the calibration.
            if let Some(ms) = conv_ms(backend, &onnx, &name, &spec) {
                slot.0 = weights;
                slot.1 = touched;
                slot.2.push(ms);
            }
        }
    }
    let costs: Vec<(f64, f64)> = timed
        .iter_mut()
        .filter(|(w, _, t)| *w > 0.0 && !t.is_empty())
        .map(|(weights, touched, t)| {
            t.sort_by(f64::total_cmp);
            let median = t[t.len() / 2];
            (*touched, median * 1e-3 / *weights)
        })
        .collect();
    let curve = CacheCurve::from_costs(&costs);
    match (curve.points.first(), curve.points.last()) {
        (Some(a), Some(b)) if curve.points.len() >= 3 => {
            note(
                progress,
                format!(
                    "weight curve: a convolution's weights cost {:.0} ps/B more with {:.0} MiB \
                     cycled through each run than with {:.0} MiB",
                    (b[1] - a[1]) * 1e12,
                    b[0] / MIB,
                    a[0] / MIB
                ),
            );
            curve
        }
        _ => {
            note(
                progress,
                "weight curve: not swept (the backend cannot time per node, or the sweep failed); \
                 convolutions' weights are priced by the stream curve"
                    .into(),
            );
            CacheCurve::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_starts_alone_and_stays_within_its_bound() {
        let s = stream_sizes(480.0 * MIB);
        assert_eq!(s[0], 0.0);
        assert_eq!(s[1], MIB);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert!(*s.last().unwrap() <= MAX_STREAM_BYTES);
        // A board with a small cache is still swept well past it.
        assert!(*stream_sizes(MIB).last().unwrap() >= 48.0 * MIB);
    }

    #[test]
    fn each_model_names_its_convolution_and_counts_what_a_run_touches() {
        let (alone, name, weights, touched) = model(0.0).unwrap();
        assert!(!alone.is_empty() && !name.is_empty());
        assert_eq!(weights, (512 * 512 * 9 * 4 + 512 * 4) as f64);
        let (_, _, _, with) = model(8.0 * MIB).unwrap();
        assert!((with - touched - 24.0 * MIB).abs() < 1.0);
    }
}
