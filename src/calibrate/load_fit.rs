//! Fitting the slowdown model under controlled background load: time a few synthetic networks (and
//! representative kernels) on the quiet board and under CPU hogs, a memory streamer and a cache
//! thrasher (each a bounded child process), and fit the weights that map the sensed state to the
//! slowdowns seen. Whole networks matter here: a neighbour that streams memory also evicts a
//! network's weights and activations from the shared cache, which a kernel timed alone never shows.
use super::error::{FitError, MeasureError};
use super::progress::{Progress, note};
use crate::kernels::{Kernel, KernelKind};
use crate::profile::{Roofline, Slowdown};
use crate::runtime::{Prepared, RunSpec, TractBackend};
use crate::sense::{Sampler, settle};
use crate::workload::background::BackgroundLoad;
use crate::workload::table::calibration_loads;
use std::time::Duration;

struct Probe {
    prepared: Prepared,
    memory_share: f64,
}

/// Something timed under load: an ONNX model and the memory-bound share of its time.
pub struct LoadProbe {
    pub onnx: Vec<u8>,
    pub memory_share: f64,
}

/// Probes of single kernels.
pub fn kernel_probes(
    kernels: &[Kernel],
    roofline: &Roofline,
) -> Result<Vec<LoadProbe>, MeasureError> {
    kernels
        .iter()
        .map(|k| {
            let g = super::build::kernel_graph(k)?;
            Ok(LoadProbe {
                onnx: crate::model::export::to_onnx_bytes(&g)?,
                memory_share: crate::predict::memory_share_of(roofline, k),
            })
        })
        .collect()
}

/// Probes of `n` synthetic networks of different families, each under ~2 GMACs so a timing window
/// holds many runs; the memory share is the roofline-time-weighted share of its kernels.
pub fn network_probes(seed: u64, n: usize, roofline: &Roofline) -> Vec<LoadProbe> {
    let mut out = Vec::new();
    for i in 0..200 {
        if out.len() >= n {
            break;
        }
        let Ok(g) = crate::model::families::network(seed ^ 0x10ad, i) else {
            continue;
        };
        let Ok(d) = crate::kernels::decompose(&g, &crate::kernels::FusionRules::tract_default())
        else {
            continue;
        };
        if d.macs > 2_000_000_000 {
            continue;
        }
        let Ok(onnx) = crate::model::export::to_onnx_bytes(&g) else {
            continue;
        };
        let (mut total, mut memory) = (0.0, 0.0);
        for k in &d.kernels {
            let t = roofline.kernel_ms(k);
            total += t;
            memory += t * crate::predict::memory_share_of(roofline, k);
        }
        out.push(LoadProbe {
            onnx,
            memory_share: if total > 0.0 { memory / total } else { 0.0 },
        });
    }
    out
}

/// Fits the slowdown weights; `exe` is the augur binary that runs loads.
pub fn fit(
    to_time: &[LoadProbe],
    base: Slowdown,
    sampler: &Sampler,
    exe: Option<&std::path::Path>,
    llc_bytes: u64,
    progress: Progress,
) -> Result<Slowdown, FitError> {
    let backend = TractBackend::new();
    let mut probes = Vec::new();
    for p in to_time {
        probes.push(Probe {
            prepared: backend.prepare(&p.onnx).map_err(MeasureError::from)?,
            memory_share: p.memory_share,
        });
    }
    let cores = base.cores.round().max(1.0) as usize;
    let mut rows: Vec<(f64, f64, f64)> = Vec::new(); // (cpu_raw − 1, share·(mem_raw − 1), observed − 1)
    let mut quiet: Option<Vec<f64>> = None;
    let mut quiet_reference: Option<f64> = None;
    // Timed here, between the measurements (see `SenseConfig::for_measuring`).
    let workload = crate::workload::reference::ReferenceWorkload::new().ok();
    let reference_now = || workload.as_ref().and_then(|w| w.median_cpu_ms(5).ok());
    let mut reference_bw = base.reference_bandwidth;
    let unit = Slowdown {
        cpu_weight: 1.0,
        memory_weight: 1.0,
        ..base.clone()
    };
    for (name, load) in calibration_loads(llc_bytes, cores) {
        let guard = match load {
            None => None,
            Some(kind) => Some(start_load(name, kind, exe)?),
        };
        let snap = settle(sampler, if guard.is_some() { 2.0 } else { 1.0 });
        let reference = reference_now();
        let times = time_probes(&probes)?;
        drop(guard);
        if load.is_none() {
            if let Some(bw) = snap.probe.memory_bandwidth_bytes_per_second.ewma {
                reference_bw = bw;
            }
            quiet = Some(times.clone());
            quiet_reference = reference;
            note(
                progress,
                format!(
                    "slowdown fit: quiet reference taken ({} probes; reference workload {})",
                    times.len(),
                    quiet_reference.map_or("not run".to_string(), |r| format!("{r:.2} ms"))
                ),
            );
            continue;
        }
        let Some(q) = quiet.as_ref() else { continue };
        let unit = Slowdown {
            reference_bandwidth: reference_bw,
            ..unit.clone()
        };
        let f = unit.factors(&snap, 1);
        // Where predictions follow the reference workload's speed, they leave the bandwidth term
        // out, and the CPU weight is fitted on what the speed does not explain; otherwise the
        // speed is only reported here.
        let reading = match (reference, quiet_reference) {
            (Some(now), Some(q)) if now > 0.0 && q > 0.0 => Some(now / q),
            _ => None,
        };
        let speed = reading.and_then(|r| base.applied_speed(r));
        let mut seen = Vec::new();
        for ((p, t), t0) in probes.iter().zip(&times).zip(q) {
            let observed = t / t0;
            seen.push(observed);
            rows.push(match speed {
                Some(s) => (f.cpu - 1.0, 0.0, observed / s - 1.0),
                None => (
                    f.cpu - 1.0,
                    p.memory_share * (f.memory - 1.0),
                    observed - 1.0,
                ),
            });
        }
        note(
            progress,
            format!(
                "slowdown fit: {name}: others busy {:.2}, cpu factor {:.2}, memory factor {:.2}, reference speed {}, observed median slowdown {:.2}",
                snap.others_busy().unwrap_or(0.0),
                f.cpu,
                f.memory,
                reading.map_or("n/a".to_string(), |s| format!("{s:.3}")),
                crate::util::median(&seen)
            ),
        );
    }
    let (cw, mw) = least_squares(&rows);
    let fitted = Slowdown {
        reference_bandwidth: reference_bw,
        cpu_weight: cw.clamp(0.0, 3.0),
        memory_weight: mw.clamp(0.0, 5.0),
        ..base
    };
    let q = interval(&rows, &fitted);
    note(
        progress,
        format!(
            "slowdown fit: cpu weight {:.2}, memory weight {:.2}, interval ±{:.0} %",
            fitted.cpu_weight,
            fitted.memory_weight,
            q * 100.0
        ),
    );
    Ok(Slowdown {
        interval_calibrated: [(-q).exp(), q.exp()],
        ..fitted
    })
}

/// Starts background load `kind` (bounded to 30 s), through `exe` where given.
fn start_load(
    name: &str,
    kind: crate::workload::load::LoadKind,
    exe: Option<&std::path::Path>,
) -> Result<BackgroundLoad, FitError> {
    let max = Duration::from_secs(30);
    let g = match exe {
        Some(e) => BackgroundLoad::start_with(e, kind, max),
        None => BackgroundLoad::start(kind, max),
    };
    g.map_err(|e| FitError::Load {
        load: name.to_string(),
        detail: e.to_string(),
    })
}

/// Times every probe as a job runs: a thread that has slept gets the CPU first when it wakes, so a
/// short timing under load sees no contention at all. A job runs for longer: burn 150 ms first,
/// then time 600 ms of steady running.
fn time_probes(probes: &[Probe]) -> Result<Vec<f64>, FitError> {
    let burn = RunSpec {
        threads: 1,
        warmup: 0,
        warmup_seconds: 0.0,
        runs: 100_000,
        max_seconds: 0.15,
    };
    let spec = RunSpec {
        threads: 1,
        warmup: 0,
        warmup_seconds: 0.0,
        runs: 100_000,
        max_seconds: 0.6,
    };
    probes
        .iter()
        .map(|p| {
            p.prepared.time(&burn).map_err(MeasureError::from)?;
            // The mean, not the median: preemption shows as a few long samples, and a job's
            // throughput pays for them (the slowest and fastest tenth dropped, as
            // `eval --scenarios` measures).
            let t = p.prepared.time(&spec).map_err(MeasureError::from)?;
            Ok(crate::util::trimmed_mean(t.samples_ms, 0.1))
        })
        .collect()
}

/// Two-parameter least squares without intercept (no load, no slowdown) on rows of
/// (cpu_raw − 1, share·(mem_raw − 1), observed − 1): the CPU and memory weights.
fn least_squares(rows: &[(f64, f64, f64)]) -> (f64, f64) {
    let (mut a11, mut a12, mut a22, mut b1, mut b2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (x1, x2, y) in rows {
        a11 += x1 * x1;
        a12 += x1 * x2;
        a22 += x2 * x2;
        b1 += x1 * y;
        b2 += x2 * y;
    }
    let det = a11 * a22 - a12 * a12;
    if det.abs() > 1e-9 {
        ((b1 * a22 - b2 * a12) / det, (a11 * b2 - a12 * b1) / det)
    } else if a11 > 1e-9 {
        (b1 / a11, 1.0)
    } else {
        (1.0, 1.0)
    }
}

/// The interval's half-width in log space: the 90th percentile of the relative residuals under
/// load (at least 5 %).
fn interval(rows: &[(f64, f64, f64)], fitted: &Slowdown) -> f64 {
    let residuals = rows.iter().map(|(x1, x2, y)| {
        ((1.0 + y) / (1.0 + fitted.cpu_weight * x1 + fitted.memory_weight * x2).max(0.05))
            .ln()
            .abs()
    });
    crate::util::percentile(residuals, 0.9)
        .unwrap_or(0.1)
        .max(0.05)
}

/// Representative kernels for the fit: a few of each kind that dominates CNN time.
pub fn representative(prior: &[Kernel], per_kind: usize) -> Vec<Kernel> {
    let mut out = Vec::new();
    for kind in [
        KernelKind::Conv,
        KernelKind::Pointwise,
        KernelKind::Depthwise,
        KernelKind::Elementwise,
    ] {
        let mut of: Vec<&Kernel> = prior.iter().filter(|k| k.kind == kind).collect();
        of.sort_by_key(|k| k.flops);
        // Small, middle and large of the kind (the middle one alone when `per_kind` is 1).
        let qs: &[f64] = if per_kind <= 1 {
            &[0.6]
        } else {
            &[0.25, 0.6, 0.9]
        };
        for &q in qs {
            if let Some(k) = of.get(((of.len() as f64 - 1.0) * q) as usize) {
                out.push((*k).clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_the_weights() {
        let rows: Vec<(f64, f64, f64)> = (1..20)
            .map(|i| {
                let (x1, x2) = (i as f64 * 0.1, ((i * 7) % 5) as f64 * 0.2);
                (x1, x2, 1.5 * x1 + 2.0 * x2)
            })
            .collect();
        let (cw, mw) = least_squares(&rows);
        assert!(
            (cw - 1.5).abs() < 1e-9 && (mw - 2.0).abs() < 1e-9,
            "{cw} {mw}"
        );
        // Nothing to fit on: the weights stay at 1.
        assert_eq!(least_squares(&[]), (1.0, 1.0));
        let fitted = Slowdown {
            cpu_weight: cw,
            memory_weight: mw,
            ..Slowdown::default()
        };
        assert_eq!(interval(&rows, &fitted), 0.05);
    }
}
