//! Development aid: how well a timing of the reference workload taken just before a job foretells the
//! job's speed. Alternates readings of the workload with a job of other generated networks (none of
//! the zoo) for a while, then scores estimators of "speed now" — the fresh reading, the median of the
//! last three — by how well they predict the job's time relative to its median. For choosing how
//! `augur eval` turns readings into a speed; nothing here is fitted.
use augur::model::generate::synthetic;
use augur::runtime::{RunSpec, TractBackend};
use augur::workload::reference::ReferenceWorkload;

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(120.0);
    let passes: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3);
    let backend = TractBackend::new();
    let mut job = Vec::new();
    for i in [0usize, 1, 2, 6] {
        let g = synthetic(99, i)?;
        job.push(backend.prepare(&augur::model::export::to_onnx_bytes(&g)?)?);
    }
    let w = ReferenceWorkload::new()?;
    let spec = RunSpec {
        threads: 1,
        warmup: 1,
        warmup_seconds: 0.0,
        runs: 5,
        max_seconds: 10.0,
    };
    let start = std::time::Instant::now();
    let mut rows: Vec<(f64, f64, f64)> = Vec::new();
    while start.elapsed().as_secs_f64() < seconds {
        let r = w.read(passes)?;
        let mut ms = 0.0;
        for j in &job {
            ms += j.time(&spec)?.median_ms;
        }
        println!(
            "{:7.1} s  reference {:7.3} ms  share {:.3}  job {:8.3} ms",
            start.elapsed().as_secs_f64(),
            r.cpu_ms,
            r.share,
            ms
        );
        rows.push((r.cpu_ms, r.share, ms));
    }
    let ref_med = median(&rows.iter().map(|r| r.0).collect::<Vec<_>>());
    let job_med = median(&rows.iter().map(|r| r.2).collect::<Vec<_>>());
    let score = |name: &str, est: &dyn Fn(usize) -> f64| {
        let errs: Vec<f64> = (3..rows.len())
            .map(|i| {
                let p = job_med * est(i) / ref_med;
                ((p - rows[i].2) / rows[i].2).abs()
            })
            .collect();
        let within = errs.iter().filter(|e| **e <= 0.05).count() as f64 / errs.len().max(1) as f64;
        println!(
            "{name:<22} MAPE {:5.2} %  within ±5 % {:5.1} %",
            errs.iter().sum::<f64>() / errs.len().max(1) as f64 * 100.0,
            within * 100.0
        );
    };
    score("none (speed 1)", &|_| ref_med);
    score("fresh", &|i| rows[i].0);
    score("median of last 3", &|i| {
        median(&[rows[i].0, rows[i - 1].0, rows[i - 2].0])
    });
    score("mean of last 2", &|i| (rows[i].0 + rows[i - 1].0) / 2.0);
    score("previous (lagged)", &|i| rows[i - 1].0);
    Ok(())
}
