//! Start-up and shutdown: the engine (the device profile, or without one a roofline measured by a
//! short probe), the sampler, the readiness latch, the runtime heartbeat the watchdog relies on,
//! and the signals that stop the daemon.
use super::{App, Engine};
use crate::kernels::FusionRules;
use crate::predict::Predictor;
use crate::profile::{Profile, ProfileError, Roofline, tract_runtime};
use crate::sense::{Sampler, probe};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Loads the engine, starts the sampler, and opens the readiness latch once it has sampled.
pub async fn start(app: Arc<App>) {
    let path = app.cfg.profile.clone();
    let engine = match tokio::task::spawn_blocking(move || load_engine(&path)).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("loading the engine failed ({e}); serving from the default roofline");
            fallback_engine(Roofline::default(), format!("default roofline ({e})"))
        }
    };
    let calibrated = engine.predictor.calibrated();
    if !calibrated && app.cfg.calibrate_in_background {
        tokio::spawn(calibrate_in_background(Arc::clone(&app)));
    }
    let source = engine.source.clone();
    app.set_engine(engine);
    metrics::gauge!("augur_calibrated").set(if calibrated { 1.0 } else { 0.0 });

    // Started after the probe, so that the sampler's own probes do not skew the roofline.
    let notifier = Arc::clone(&app.notifier);
    let sampler = Sampler::start_with(
        app.cfg.sense.clone(),
        Box::new(move |_| notifier.on_sample()),
    );
    let _ = app.sampler.set(sampler);
    loop {
        let a = Arc::clone(&app);
        let seq = tokio::task::spawn_blocking(move || {
            a.sampler()
                .map(|s| s.wait_for(1, Duration::from_millis(500)).seq)
                .unwrap_or(0)
        })
        .await
        .unwrap_or(0);
        if seq >= 1 {
            break;
        }
    }
    app.ready.store(true, Ordering::Release);
    metrics::gauge!("augur_ready").set(1.0);
    tracing::info!("ready: {source}");
    app.notifier.ready(&format!(
        "serving {} predictions ({source})",
        if calibrated {
            "calibrated"
        } else {
            "uncalibrated"
        }
    ));
}

/// The engine from the profile at `path`; without a usable one, from a roofline probed now.
pub fn load_engine(path: &Path) -> Engine {
    match Profile::load(path, &tract_runtime()) {
        Ok((p, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            let rules = p.fusion.clone();
            let threads = p.threads.max(1);
            Engine {
                predictor: Predictor::new(Some(p), Roofline::default()),
                rules,
                threads,
                generation: 1,
                source: format!("profile {}", path.display()),
            }
        }
        Err(e) => {
            let why = match &e {
                ProfileError::Read { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    format!("no profile at {}", path.display())
                }
                _ => e.to_string(),
            };
            let r = probe_roofline();
            tracing::warn!(
                "{why}: serving uncalibrated predictions from a roofline measured now \
                 ({:.2} GFLOP/s, {:.2} GB/s); run `augur calibrate` for calibrated ones",
                r.flops_per_second / 1e9,
                r.bytes_per_second / 1e9
            );
            fallback_engine(r, format!("roofline probe; {why}"))
        }
    }
}

fn fallback_engine(r: Roofline, source: String) -> Engine {
    Engine {
        predictor: Predictor::new(None, r),
        rules: FusionRules::tract_default(),
        threads: 1,
        generation: 1,
        source,
    }
}

/// A roofline from the one-shot probes (a few tenths of a second); defaults where a probe fails.
pub fn probe_roofline() -> Roofline {
    let d = Roofline::default();
    let ok = |v: f64, default: f64| if v.is_finite() && v > 0.0 { v } else { default };
    Roofline {
        flops_per_second: ok(probe::compute_rate(), d.flops_per_second),
        bytes_per_second: ok(probe::memory_bandwidth(), d.bytes_per_second),
        overhead_seconds: 5e-6,
    }
}

/// Beats once a second while the runtime schedules tasks; the watchdog pings only while it does.
pub async fn heartbeat(n: Arc<super::notify::Notifier>) {
    let mut t = tokio::time::interval(Duration::from_secs(1));
    loop {
        t.tick().await;
        n.heartbeat();
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                () = ctrl_c => tracing::info!("SIGINT: shutting down"),
            }
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            ctrl_c.await;
        }
    }
}

/// Runs `augur calibrate --budget quick` as a child process at the lowest priority, then swaps the
/// calibrated engine in; cached models re-predict their base under it on next use.
async fn calibrate_in_background(app: Arc<App>) {
    let path = app.cfg.profile.clone();
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("background calibration: cannot find augur's own binary ({e})");
            return;
        }
    };
    tracing::info!(
        "no profile: calibrating in the background (quick budget) into {}",
        path.display()
    );
    let status = tokio::process::Command::new("nice")
        .arg("-n")
        .arg("10")
        .arg(&exe)
        .args(["calibrate", "--budget", "quick", "--quiet", "--out"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await;
    match status {
        Ok(s) if s.success() => {
            let p = path.clone();
            match tokio::task::spawn_blocking(move || load_engine(&p)).await {
                Ok(engine) if engine.predictor.calibrated() => {
                    app.set_engine(engine);
                    metrics::gauge!("augur_calibrated").set(1.0);
                    tracing::info!("background calibration done: serving calibrated predictions");
                }
                _ => tracing::warn!(
                    "background calibration wrote {}, but it could not be loaded",
                    path.display()
                ),
            }
        }
        Ok(s) => tracing::warn!("background calibration failed ({s}); serving uncalibrated"),
        Err(e) => {
            tracing::warn!("background calibration could not start ({e}); serving uncalibrated")
        }
    }
}
