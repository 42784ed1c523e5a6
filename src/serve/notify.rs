//! systemd notification: `READY=1` once the daemon answers predictions, `WATCHDOG=1` from the
//! sampling loop, `STOPPING=1` at shutdown. Without `NOTIFY_SOCKET` every call is a no-op.
//!
//! The watchdog is pinged by the sampler's per-sample hook, and only while the HTTP runtime has
//! shown a heartbeat recently: a hung sampler and a hung server both stop the pings, and systemd
//! restarts the unit. Pings are rate-limited to half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
//! advises.
use sd_notify::NotifyState;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Notifier {
    /// Half the watchdog period; `None` when systemd did not ask for pings.
    ping_every: Option<Duration>,
    last_ping: Mutex<Option<Instant>>,
    /// Milliseconds since `start` of the runtime's last heartbeat.
    heartbeat_ms: AtomicU64,
    start: Instant,
}

impl Notifier {
    /// Reads `WATCHDOG_USEC` (and `WATCHDOG_PID`, which must be this process if set).
    pub fn from_env() -> Notifier {
        let mut usec = 0u64;
        // sd-notify insists on WATCHDOG_PID; systemd always sets it, a test harness may not.
        let enabled = sd_notify::watchdog_enabled(false, &mut usec)
            || (std::env::var_os("WATCHDOG_PID").is_none()
                && std::env::var("WATCHDOG_USEC")
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .inspect(|&u| usec = u)
                    .is_some());
        Notifier {
            ping_every: (enabled && usec > 0).then(|| Duration::from_micros(usec / 2)),
            last_ping: Mutex::new(None),
            heartbeat_ms: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    fn send(&self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!("cannot notify systemd: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Called by a runtime task every second or so.
    pub fn heartbeat(&self) {
        self.heartbeat_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Called by the sampler after each sample: pings the watchdog when one is due and the runtime
    /// is alive.
    pub fn on_sample(&self) {
        let Some(every) = self.ping_every else { return };
        let now = Instant::now();
        let beat = Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        // The runtime beats every second; three missed beats (or a whole period) mean it is stuck.
        let stale =
            self.start.elapsed().saturating_sub(beat) > (every * 2).max(Duration::from_secs(3));
        if stale {
            return;
        }
        let mut last = self.last_ping.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < every) {
            return;
        }
        *last = Some(now);
        drop(last);
        self.send(&[NotifyState::Watchdog]);
    }

    pub fn watchdog_period(&self) -> Option<Duration> {
        self.ping_every.map(|d| d * 2)
    }
}
