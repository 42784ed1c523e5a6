//! Development aid: does the cache curve the board streams *now* say how much cheaper the two
//! halves of a network run than the whole, where the curve from calibration does not? For generated
//! networks of the design space (never the evaluation models), a cut near the middle; each round
//! sweeps the cache curve, then times the whole and both halves end to end. Printed per network: the
//! halves' sum over the whole as measured, and as priced from the whole's time by the difference of
//! the live curve at the halves' working sets and the whole's, with the weights alone or the weights
//! and the written bytes as the bytes that follow the working set. Nothing here is fitted.
//!
//! Usage: live_cache_halves SEED FIRST COUNT ROUNDS
use augur::kernels::{FusionRules, decompose};
use augur::plan::cuts::cut_points;
use augur::plan::split::split;
use augur::predict::{footprint, footprint_of, recycled_bytes};
use augur::profile::{CacheBytes, CacheCurve};
use augur::runtime::{Backend, RunSpec, TractBackend};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [seed, first, count, rounds] = args.as_slice() else {
        return Err("usage: live_cache_halves SEED FIRST COUNT ROUNDS".into());
    };
    let (seed, first, count, rounds): (u64, usize, usize, usize) = (
        seed.parse()?,
        first.parse()?,
        count.parse()?,
        rounds.parse()?,
    );
    let llc = augur::sense::probe::llc_bytes(&Default::default());
    let backend = TractBackend::new();
    let spec = RunSpec {
        warmup_seconds: 0.2,
        max_seconds: 5.0,
        ..RunSpec::default()
    };
    println!(
        "net\tfootprint_mb\tprefix_mb\tsuffix_mb\twhole_ms\tmeasured\tlive_weights\tlive_writes"
    );
    for i in first..first + count {
        let g = augur::model::families::network(seed, i)?;
        let d = decompose(&g, &FusionRules::tract_default())?;
        let cuts = cut_points(&g, &d, Default::default());
        if d.macs > 3_000_000_000 || cuts.is_empty() || footprint(&d) < 16e6 {
            continue;
        }
        // The cut whose prefix holds nearest half the kernels.
        let n = d.kernels.len();
        let Some(c) = cuts.iter().min_by_key(|c| c.kernels_before.abs_diff(n / 2)) else {
            continue;
        };
        let k = c.kernels_before;
        let h = split(&g, c);
        let whole = augur::model::export::to_onnx_bytes(&g)?;
        let prefix = augur::model::export::to_onnx_bytes(&h.prefix)?;
        let suffix = augur::model::export::to_onnx_bytes(&h.suffix)?;
        let (fw, fp, fs) = (
            footprint(&d),
            footprint_of(&d.kernels[..k]),
            footprint_of(&d.kernels[k..]),
        );
        let (mut sum_w, mut sum_m, mut sum_a, mut sum_b) = (0.0, 0.0, 0.0, 0.0);
        for _ in 0..rounds {
            let curve = CacheCurve::from_bandwidths(&augur::sense::probe::cache_sweep(llc));
            let w = backend.time_onnx(&whole, &spec)?.median_ms;
            let p = backend.time_onnx(&prefix, &spec)?.median_ms;
            let s = backend.time_onnx(&suffix, &spec)?.median_ms;
            let cost = |f: f64| curve.seconds_per_byte(f).unwrap_or(0.0);
            let priced = |rule: CacheBytes| -> f64 {
                let mut extra = 0.0;
                for (i, kern) in d.kernels.iter().enumerate() {
                    let (first, part) = if i < k { (i == 0, fp) } else { (i == k, fs) };
                    extra += recycled_bytes(kern, rule, first) * (cost(part) - cost(fw)) * 1e3;
                }
                w + extra
            };
            sum_w += w;
            sum_m += p + s;
            sum_a += priced(CacheBytes::Weights);
            sum_b += priced(CacheBytes::WeightsAndWrites);
        }
        println!(
            "{}\t{:.1}\t{:.1}\t{:.1}\t{:.2}\t{:.3}\t{:.3}\t{:.3}",
            g.name,
            fw / 1e6,
            fp / 1e6,
            fs / 1e6,
            sum_w / rounds as f64,
            sum_m / sum_w,
            sum_a / sum_w,
            sum_b / sum_w
        );
    }
    Ok(())
}
