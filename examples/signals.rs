//! Development aid: which live signal tracks the slowdown of real jobs on this board.
//!
//! For a while, on each CPU in turn (the thread pinned), it reads every candidate signal and then
//! times a job right after: the reference workload, pointer-chasing latency and streaming bandwidth
//! at each level of the memory hierarchy (L1, L2, last-level cache, DRAM), and a compute loop. The
//! jobs are generated networks of different working sets, or model files given on the command line.
//! At the end it prints, per signal, how well its reading (against its own median on that CPU)
//! foretells each job's time (against the job's median on that CPU): the correlation of the two
//! log-ratios and the error left after scaling the job by the signal, beside the error of assuming
//! no change. Nothing here is fitted into a profile; it chooses which signals deserve a place.
//!
//! `cargo run --release --example signals -- SECONDS [--json OUT] [MODEL.onnx …]`
use augur::model::generate::synthetic;
use augur::runtime::{Prepared, RunSpec, TractBackend};
use augur::util::clock::thread_cpu_seconds;
use augur::workload::reference::ReferenceWorkload;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};
use std::hint::black_box;
use std::time::Instant;

/// Pins the calling thread to one CPU; false where the OS refuses (the study then says so).
fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it; the call reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// A random cyclic permutation of cache lines: each load depends on the one before, so the time
/// per step is the latency of the level the buffer lives in.
struct Chase {
    next: Vec<usize>,
    steps: usize,
}

const LINE_WORDS: usize = 8;

impl Chase {
    fn new(bytes: usize, steps: usize, rng: &mut StdRng) -> Chase {
        let lines = (bytes / (LINE_WORDS * 8)).max(2);
        let mut order: Vec<usize> = (0..lines).collect();
        order.shuffle(rng);
        let mut next = vec![0usize; lines * LINE_WORDS];
        for w in 0..lines {
            next[order[w] * LINE_WORDS] = order[(w + 1) % lines] * LINE_WORDS;
        }
        Chase { next, steps }
    }
    /// Nanoseconds of CPU time per dependent load.
    fn run(&self) -> f64 {
        let c0 = thread_cpu_seconds();
        let mut i = 0usize;
        for _ in 0..self.steps {
            i = self.next[i];
        }
        black_box(i);
        (thread_cpu_seconds() - c0) * 1e9 / self.steps as f64
    }
}

/// A streaming read: CPU nanoseconds per byte (the inverse of bandwidth, so larger is slower like the rest).
struct Stream {
    words: Vec<u64>,
    repeats: usize,
}

impl Stream {
    fn new(bytes: usize, total_bytes: usize) -> Stream {
        let words = (0..bytes / 8).map(|i| i as u64).collect();
        Stream {
            words,
            repeats: (total_bytes / bytes).max(1),
        }
    }
    fn run(&self) -> f64 {
        let c0 = thread_cpu_seconds();
        let mut acc = [0u64; 8];
        for _ in 0..self.repeats {
            for c in self.words.chunks_exact(8) {
                for (a, w) in acc.iter_mut().zip(c) {
                    *a = a.wrapping_add(*w);
                }
            }
        }
        black_box(acc);
        (thread_cpu_seconds() - c0) * 1e9 / (self.repeats * self.words.len() * 8) as f64
    }
}

#[inline(never)]
fn fma(iters: u64) -> f64 {
    let c0 = thread_cpu_seconds();
    let mut acc = [1.0f32; 64];
    let (m, a) = (black_box(0.9999_f32), black_box(1e-5_f32));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = *v * m + a;
        }
    }
    black_box(acc);
    (thread_cpu_seconds() - c0) * 1e9 / iters as f64
}

struct Signals {
    reference: ReferenceWorkload,
    chases: Vec<(String, Chase)>,
    streams: Vec<(String, Stream)>,
}

impl Signals {
    fn names(&self) -> Vec<String> {
        let mut v = vec!["reference".to_string(), "compute".to_string()];
        v.extend(self.chases.iter().map(|(n, _)| n.clone()));
        v.extend(self.streams.iter().map(|(n, _)| n.clone()));
        v
    }
    fn read(&self) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
        let mut v = vec![self.reference.pass_cpu_ms()?, fma(20_000)];
        v.extend(self.chases.iter().map(|(_, c)| c.run()));
        v.extend(self.streams.iter().map(|(_, s)| s.run()));
        Ok(v)
    }
}

struct Row {
    cpu: usize,
    job: usize,
    signals: Vec<f64>,
    job_cpu_ms: f64,
    job_wall_ms: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    if n < 3.0 {
        return f64::NAN;
    }
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt().max(1e-300)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1200.0);
    let mut json_out = None;
    let mut files = Vec::new();
    while let Some(a) = args.next() {
        if a == "--json" {
            json_out = args.next();
        } else {
            files.push(a);
        }
    }
    let backend = TractBackend::new();
    let mut jobs: Vec<(String, Prepared)> = Vec::new();
    if files.is_empty() {
        // Generated networks of several families and sizes; none of them is an evaluation model.
        for i in [0usize, 1, 2, 6, 9] {
            let g = synthetic(77, i)?;
            jobs.push((
                format!("generated/77/{i}"),
                backend.prepare(&augur::model::export::to_onnx_bytes(&g)?)?,
            ));
        }
    } else {
        for f in &files {
            jobs.push((f.clone(), backend.prepare(&std::fs::read(f)?)?));
        }
    }
    let mut rng = StdRng::seed_from_u64(5);
    let kib = 1024usize;
    let signals = Signals {
        reference: ReferenceWorkload::new()?,
        chases: vec![
            (
                "chase_l1_24k".into(),
                Chase::new(24 * kib, 200_000, &mut rng),
            ),
            (
                "chase_l2_1m".into(),
                Chase::new(1024 * kib, 200_000, &mut rng),
            ),
            (
                "chase_llc_32m".into(),
                Chase::new(32 * 1024 * kib, 100_000, &mut rng),
            ),
            (
                "chase_dram_1g".into(),
                Chase::new(1024 * 1024 * kib, 50_000, &mut rng),
            ),
        ],
        streams: vec![
            (
                "stream_l2_1m".into(),
                Stream::new(1024 * kib, 64 * 1024 * kib),
            ),
            (
                "stream_llc_32m".into(),
                Stream::new(32 * 1024 * kib, 64 * 1024 * kib),
            ),
            (
                "stream_dram_512m".into(),
                Stream::new(512 * 1024 * kib, 512 * 1024 * kib),
            ),
        ],
    };
    let names = signals.names();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let spec = RunSpec {
        threads: 1,
        warmup: 1,
        warmup_seconds: 0.0,
        runs: 3,
        max_seconds: 5.0,
    };
    let start = Instant::now();
    let mut rows = Vec::new();
    let mut pinned = true;
    let mut step = 0usize;
    while start.elapsed().as_secs_f64() < seconds {
        let cpu = step % cpus;
        let job = (step / cpus) % jobs.len();
        step += 1;
        pinned &= pin(cpu);
        let sig = signals.read()?;
        let c0 = thread_cpu_seconds();
        let t = jobs[job].1.time(&spec)?;
        let cpu_ms = (thread_cpu_seconds() - c0) * 1e3 / (t.runs + spec.warmup) as f64;
        rows.push(Row {
            cpu,
            job,
            signals: sig,
            job_cpu_ms: cpu_ms,
            job_wall_ms: t.median_ms,
        });
        if step.is_multiple_of(50) {
            eprintln!(
                "{:>6.0} s  {} readings",
                start.elapsed().as_secs_f64(),
                rows.len()
            );
        }
    }
    if !pinned {
        eprintln!("note: the OS refused to pin the thread; readings are not per CPU");
    }
    // Log-ratios against the median of the same job (or signal) on the same CPU: each CPU has its
    // own fast and slow regimes, so a ratio across CPUs would mix two baselines.
    let mut x: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut y = Vec::new();
    let mut job_of = Vec::new();
    for cpu in 0..cpus {
        for job in 0..jobs.len() {
            let sel: Vec<&Row> = rows
                .iter()
                .filter(|r| r.cpu == cpu && r.job == job)
                .collect();
            if sel.len() < 3 {
                continue;
            }
            let mj = median(&sel.iter().map(|r| r.job_cpu_ms).collect::<Vec<_>>());
            let ms: Vec<f64> = (0..names.len())
                .map(|s| median(&sel.iter().map(|r| r.signals[s]).collect::<Vec<_>>()))
                .collect();
            for r in sel {
                y.push((r.job_cpu_ms / mj).ln());
                job_of.push(job);
                for s in 0..names.len() {
                    x[s].push((r.signals[s] / ms[s]).ln());
                }
            }
        }
    }
    let spread = |v: &[f64]| {
        let mut a: Vec<f64> = v.iter().map(|l| l.exp()).collect();
        a.sort_by(f64::total_cmp);
        let q = |p: f64| {
            a.get(((a.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        (q(0.05), q(0.95))
    };
    let (lo, hi) = spread(&y);
    println!(
        "{} readings over {:.0} s on {} CPUs; job time against its median: 5th–95th percentile {:.3}–{:.3}",
        rows.len(),
        start.elapsed().as_secs_f64(),
        cpus,
        lo,
        hi
    );
    let mape_none = y.iter().map(|l| (1.0 - l.exp()).abs()).sum::<f64>() / y.len().max(1) as f64;
    print!(
        "{:<18} {:>8} {:>10} {:>8}",
        "signal", "r(all)", "MAPE×1", "slope"
    );
    for (n, _) in &jobs {
        print!(" {:>14}", n.rsplit('/').next().unwrap_or(n));
    }
    println!();
    println!(
        "{:<18} {:>8} {:>9.2}% {:>8}",
        "(no signal)",
        "",
        mape_none * 100.0,
        ""
    );
    let mut report = Vec::new();
    for (s, name) in names.iter().enumerate() {
        let r_all = pearson(&x[s], &y);
        // Prediction `job × ratio`: how far a one-for-one speed signal goes, with nothing fitted.
        let mape1 = x[s]
            .iter()
            .zip(&y)
            .map(|(a, b)| (1.0 - (b - a).exp()).abs())
            .sum::<f64>()
            / y.len().max(1) as f64;
        let sxy: f64 = x[s].iter().zip(&y).map(|(a, b)| a * b).sum();
        let sxx: f64 = x[s].iter().map(|a| a * a).sum();
        let slope = sxy / sxx.max(1e-300);
        print!(
            "{:<18} {:>8.3} {:>9.2}% {:>8.3}",
            name,
            r_all,
            mape1 * 100.0,
            slope
        );
        let mut per_job = Vec::new();
        for j in 0..jobs.len() {
            let (xs, ys): (Vec<f64>, Vec<f64>) = x[s]
                .iter()
                .zip(&y)
                .zip(&job_of)
                .filter(|(_, jj)| **jj == j)
                .map(|((a, b), _)| (*a, *b))
                .unzip();
            let r = pearson(&xs, &ys);
            per_job.push(r);
            print!(" {:>14.3}", r);
        }
        println!();
        report.push(serde_json::json!({
            "signal": name, "r_all": r_all, "mape_one_for_one": mape1, "slope": slope, "r_per_job": per_job,
        }));
    }
    if let Some(out) = json_out {
        let doc = serde_json::json!({
            "seconds": start.elapsed().as_secs_f64(),
            "readings": rows.len(),
            "cpus": cpus,
            "jobs": jobs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            "mape_no_signal": mape_none,
            "signals": report,
            "rows": rows.iter().map(|r| serde_json::json!({"cpu": r.cpu, "job": r.job, "signals": r.signals, "job_cpu_ms": r.job_cpu_ms, "job_wall_ms": r.job_wall_ms})).collect::<Vec<_>>(),
        });
        std::fs::write(out, serde_json::to_string(&doc)?)?;
    }
    Ok(())
}
