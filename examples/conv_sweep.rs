//! Development aid: single convolutions, each built as a one-kernel model and timed alone, beside the
//! profile's prediction for it (with what the cache curve adds for its working set). Rounds alternate
//! the convolutions so that a change of the board's speed hits them alike. Nothing here is fitted;
//! it shows how a regressor prices one layer out of any network's context.
//!
//! Usage: conv_sweep PROFILE CIN,COUT,HW,K,STRIDE…
use augur::kernels::{FusionRules, decompose};
use augur::model::builder::GraphBuilder;
use augur::predict::Predictor;
use augur::profile::Profile;
use augur::runtime::{RunSpec, TractBackend};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let profile = args
        .next()
        .ok_or("usage: conv_sweep PROFILE CIN,COUT,HW,K,STRIDE…")?;
    let (profile, _) = Profile::load(std::path::Path::new(&profile), "")?;
    let predictor = Predictor::new(Some(profile.clone()), profile.roofline);
    let backend = TractBackend::new();
    let spec = RunSpec {
        threads: 1,
        warmup: 3,
        warmup_seconds: 0.2,
        runs: 9,
        max_seconds: 5.0,
    };
    let mut convs = Vec::new();
    for a in args {
        let v: Vec<usize> = a.split(',').map(str::parse).collect::<Result<_, _>>()?;
        let [cin, cout, hw, k, stride] = v[..] else {
            return Err(format!("`{a}`: want CIN,COUT,HW,K,STRIDE").into());
        };
        let mut b = GraphBuilder::new("conv");
        let x = b.input(&[1, cin, hw, hw]);
        let p = k / 2;
        let y = b.conv(
            x,
            cout,
            [k, k],
            [stride, stride],
            [p, p, p, p],
            [1, 1],
            1,
            true,
        )?;
        let g = b.finish(&[y])?;
        let d = decompose(&g, &FusionRules::tract_default())?;
        let base = predictor.base(&d);
        let cache: f64 = base.cache_ms.iter().sum();
        let bytes = augur::model::export::to_onnx_bytes(&g)?;
        convs.push((a, base.latency_ms, cache, backend.prepare(&bytes)?, d.macs));
    }
    for round in 0..3 {
        for (a, pred, cache, p, macs) in &convs {
            let t = p.time(&spec)?;
            println!(
                "{round} {a:>18} predicted {pred:7.3} ms (cache {cache:.3}) measured {:7.3} ms \
                 predicted/measured {:.2} {:.1} GFLOP/s",
                t.median_ms,
                pred / t.median_ms,
                2.0 * *macs as f64 / t.median_ms / 1e6
            );
        }
    }
    Ok(())
}
