//! `augur eval --scenarios`: prediction under background load. Per scenario, the load runs in a child
//! process; once the sensed state has settled, each model is predicted (runtime-aware and static) at
//! that moment and then measured, in rounds. An online run follows: predictions after k = 0, 1, 5
//! observations.
use super::summary::Summary;
use crate::kernels::Decomposition;
use crate::predict::{BasePrediction, Learner, Predictor};
use crate::runtime::{Prepared, RunSpec};
use crate::sense::{Sampler, SenseConfig, Snapshot, settle};
use crate::workload::background::BackgroundLoad;
use crate::workload::load::LoadKind;
use crate::workload::reference::SpeedNow;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

pub struct Model {
    pub name: String,
    pub d: Decomposition,
    pub base: BasePrediction,
    pub prepared: Prepared,
}

#[derive(Serialize, Clone)]
pub struct Row {
    pub model: String,
    pub scenario: String,
    pub measured_ms: f64,
    pub aware_ms: f64,
    pub static_ms: f64,
    pub aware_error_pct: f64,
    pub static_error_pct: f64,
    /// Factors of the aware prediction: time-sharing and the board's speed.
    pub cpu_factor: f64,
    pub speed_factor: f64,
    /// Each round's prediction and measurement, ms (the figures above are their means).
    pub rounds: Vec<(f64, f64)>,
}

/// One prediction of the online run: the `k`-th of a model, after `k` observations of it.
#[derive(Serialize, Clone)]
pub struct OnlineRow {
    pub model: String,
    pub k: usize,
    pub predicted_ms: f64,
    pub measured_ms: f64,
    pub speed_factor: f64,
    pub learned_factor: f64,
}

#[derive(Serialize, Clone, Copy)]
pub struct Pair {
    pub aware: Summary,
    #[serde(rename = "static")]
    pub static_: Summary,
    /// The aware predictor scored round by round (each prediction against the measurement after it).
    pub aware_rounds: Summary,
}

/// The load of a named scenario.
pub fn scenario_load(name: &str, llc: u64, cores: usize) -> Result<Option<LoadKind>, String> {
    let llc = llc.max(8 << 20) as usize;
    match name {
        "quiet" => Ok(None),
        // Every core busy with another job: the model's thread time-shares.
        "cpu" => Ok(Some(LoadKind::Cpu {
            threads: cores.max(1),
        })),
        "mem" => Ok(Some(LoadKind::Memory {
            threads: 1,
            bytes: llc * 8,
        })),
        "cache" => Ok(Some(LoadKind::Cache {
            threads: 1,
            bytes: llc,
        })),
        other => Err(format!(
            "unknown scenario `{other}` (quiet, cpu, mem, cache)"
        )),
    }
}

/// Latency of the model as a job that keeps running: 150 ms of warm-up first, because a thread that
/// has slept gets the CPU first when it wakes and a short burst would not see the load at all; then
/// runs for at least `window` (and `runs` runs), reporting the mean with the slowest and fastest 10 %
/// of runs dropped. Under time-sharing a thread's per-run latency swings between a core of its own and
/// half of one as the kernel's load balancer moves threads every few hundred milliseconds; over a
/// window of seconds the mean is the latency a scheduler plans with, and the trim drops spikes.
fn measure(m: &Model, runs: usize, window: f64) -> anyhow::Result<f64> {
    let burn = RunSpec {
        threads: 1,
        warmup: 0,
        runs: 10_000,
        max_seconds: 0.15,
    };
    m.prepared.time(&burn)?;
    let mut samples: Vec<f64> = Vec::new();
    let start = std::time::Instant::now();
    while samples.len() < runs || start.elapsed().as_secs_f64() < window {
        let spec = RunSpec {
            threads: 1,
            warmup: 0,
            runs: runs.max(1),
            max_seconds: window,
        };
        samples.extend(m.prepared.time(&spec)?.samples_ms);
        if start.elapsed().as_secs_f64() > 20.0 * window.max(1.0) {
            break;
        }
    }
    Ok(crate::util::trimmed_mean(samples, 0.1))
}

fn err_pct(p: f64, m: f64) -> f64 {
    (p - m) / m * 100.0
}

/// What to run: the scenarios, the online run's scenario (`none`: skip it), and how to measure.
pub struct Plan<'a> {
    pub scenarios: &'a [String],
    pub online_scenario: &'a str,
    /// Runs at least, per measurement.
    pub runs: usize,
    /// Seconds per model in the scenarios, and per measurement in the online run.
    pub window: f64,
    /// Rounds of (prediction, measurement) a scenario's window is cut into.
    pub rounds: usize,
    pub online_window: f64,
    pub progress: bool,
}

/// Runs the scenarios and the online run; returns the JSON report.
pub fn run(
    predictor: &Predictor,
    models: &[Model],
    plan: &Plan,
) -> anyhow::Result<serde_json::Value> {
    let Plan {
        scenarios,
        online_scenario,
        runs,
        window,
        rounds,
        online_window,
        progress,
    } = *plan;
    let rounds = rounds.max(1);
    let device = crate::profile::DeviceInfo::detect(&crate::util::roots::Roots::default());
    let sampler = Sampler::start(SenseConfig::for_measuring());
    let say = |s: String| {
        if progress {
            eprintln!("{s}");
        }
    };
    // The board's speed, timed before each measurement (see `SpeedNow`).
    let mut speed = if predictor.slowdown.reference_workload_cpu_ms > 0.0 {
        Some(SpeedNow::new()?)
    } else {
        None
    };
    let now = |speed: &mut Option<SpeedNow>| -> anyhow::Result<Snapshot> {
        let mut snap = sampler.snapshot();
        if let Some(sp) = speed {
            sp.read()?;
            snap.probe.reference_recent_cpu_ms = sp.latest();
        }
        Ok(snap)
    };
    // A new load: settle busy — timing the reference workload for the sampler's window — so that the
    // state's means hold this process running under the new load (as it will while measuring), not
    // idle seconds.
    let settle_busy = SenseConfig::for_measuring().window_seconds.max(2.0);
    let prime = |speed: &mut Option<SpeedNow>| -> anyhow::Result<()> {
        let start = std::time::Instant::now();
        match speed {
            Some(sp) => {
                while start.elapsed().as_secs_f64() < settle_busy {
                    sp.read()?;
                }
            }
            None => std::thread::sleep(Duration::from_secs_f64(settle_busy)),
        }
        Ok(())
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut per: BTreeMap<String, Pair> = BTreeMap::new();
    let max = Duration::from_secs(1800);
    for sc in scenarios {
        let load =
            scenario_load(sc, device.llc_bytes(), device.cores).map_err(anyhow::Error::msg)?;
        let guard = load.map(|k| BackgroundLoad::start(k, max)).transpose()?;
        settle(&sampler, 2.0);
        prime(&mut speed)?;
        let mut pairs_a = Vec::new();
        let mut pairs_s = Vec::new();
        let mut pairs_r = Vec::new();
        for m in models {
            // A prediction is for the state now; the state under a neighbour moves in spells of
            // seconds (see `SpeedNow`), so the window is cut into rounds, each predicted just before
            // it is measured, and the model scored on the means.
            let mut round = Vec::with_capacity(rounds);
            let mut factors = (0.0, 0.0);
            for _ in 0..rounds {
                let snap = now(&mut speed)?;
                let p = predictor.predict(&m.d, &m.base, &snap, 1, false);
                let measured = measure(m, runs.div_ceil(rounds), window / rounds as f64)?;
                round.push((p.latency_ms, measured));
                factors.0 += p.state.cpu_factor / rounds as f64;
                factors.1 += p.state.speed_factor / rounds as f64;
            }
            let aware = round.iter().map(|r| r.0).sum::<f64>() / rounds as f64;
            let measured = round.iter().map(|r| r.1).sum::<f64>() / rounds as f64;
            let stat = m.base.latency_ms;
            pairs_a.push((aware, measured));
            pairs_s.push((stat, measured));
            pairs_r.extend(round.iter().copied());
            rows.push(Row {
                model: m.name.clone(),
                scenario: sc.clone(),
                measured_ms: measured,
                aware_ms: aware,
                static_ms: stat,
                aware_error_pct: err_pct(aware, measured),
                static_error_pct: err_pct(stat, measured),
                cpu_factor: factors.0,
                speed_factor: factors.1,
                rounds: round,
            });
            say(format!(
                "{sc:<6} {:<26} measured {:>9.2} ms  aware {:>9.2} ms ({:+6.1} %)  static {:>9.2} ms ({:+6.1} %)",
                m.name,
                measured,
                aware,
                err_pct(aware, measured),
                stat,
                err_pct(stat, measured)
            ));
        }
        drop(guard);
        per.insert(
            sc.clone(),
            Pair {
                aware: Summary::of(&pairs_a),
                static_: Summary::of(&pairs_s),
                aware_rounds: Summary::of(&pairs_r),
            },
        );
    }
    // Online: one learner for all models, so each model also benefits from the others' observations.
    let mut at: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
    let mut online_rows = Vec::new();
    if online_scenario != "none" {
        let load = scenario_load(online_scenario, device.llc_bytes(), device.cores)
            .map_err(anyhow::Error::msg)?;
        let guard = load.map(|k| BackgroundLoad::start(k, max)).transpose()?;
        settle(&sampler, 2.0);
        prime(&mut speed)?;
        let mut learner = Learner::new(4096);
        for m in models {
            for k in 0..=5usize {
                let snap = now(&mut speed)?;
                let p =
                    predictor.predict_learned(&m.d, &m.base, &snap, 1, false, &learner, &m.name);
                let plain = predictor.predict(&m.d, &m.base, &snap, 1, false);
                let phi = predictor.phi(&m.base, &plain);
                let measured = measure(m, runs, online_window)?;
                if matches!(k, 0 | 1 | 5) {
                    at.entry(k).or_default().push((p.latency_ms, measured));
                }
                online_rows.push(OnlineRow {
                    model: m.name.clone(),
                    k,
                    predicted_ms: p.latency_ms,
                    measured_ms: measured,
                    speed_factor: p.state.speed_factor,
                    learned_factor: p.state.learned_factor,
                });
                if let Err(e) = learner.observe(&m.name, &phi, plain.latency_ms, measured) {
                    say(format!("observation of {} rejected: {e}", m.name));
                }
            }
            say(format!("online {:<26} k5 error {:+.1} %", m.name, {
                let v = &at[&5];
                let (p, me) = v[v.len() - 1];
                err_pct(p, me)
            }));
        }
        drop(guard);
    }
    let online: BTreeMap<String, Summary> = at
        .iter()
        .map(|(k, v)| (format!("k{k}"), Summary::of(v)))
        .collect();
    Ok(serde_json::json!({
        "scenarios": per,
        "online": online,
        "online_scenario": online_scenario,
        "models": rows,
        "online_models": online_rows,
    }))
}
