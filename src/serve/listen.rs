//! The accept loop: HTTP/1.1 connections served by hyper with a header read timeout (which also
//! bounds idle keep-alive connections: hyper runs it whenever a connection waits for the next
//! request's head), under a cap on connections open at once.
//!
//! At the cap, the oldest connection is asked to close: an idle one closes at once, a busy one
//! after its answer, and a half-sent request at its header timeout. A fresh client therefore gets
//! in even when thousands of idle or slow connections were opened before it, and descriptors stay
//! bounded. The cap is held below the process's descriptor limit, with room for the state
//! directory, the sensors and imports. (Written here, not taken from a crate: axum's `serve` has
//! no connection cap and no header timeout, and tower's concurrency limits count requests, not
//! connections.)
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

/// Descriptors kept free of connections, for the state directory, sensors, perf counters and
/// imports.
const RESERVED_FDS: u64 = 256;

/// How connections are bounded.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Raises the soft limit on open files to the hard limit (systemd's `LimitNOFILE`, or the
/// shell's), so that the connection cap, not the usual 1,024, is what bounds connections.
pub fn raise_fd_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                tracing::debug!("cannot raise the open-file limit");
            }
        }
    }
}

/// The connection cap, lowered to what the open-file limit leaves room for.
fn effective_cap(want: usize) -> usize {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0
        || rl.rlim_cur == libc::RLIM_INFINITY
    {
        return want;
    }
    let room = usize::try_from(rl.rlim_cur.saturating_sub(RESERVED_FDS))
        .unwrap_or(usize::MAX)
        .max(1);
    if want > room {
        tracing::warn!(
            "limits.max_connections = {want}, but the open-file limit ({}) leaves room for {room}; \
             serving at most {room} connections (raise LimitNOFILE)",
            rl.rlim_cur
        );
        return room;
    }
    want
}

/// Resolves once `stop` holds `true` (never, if its sender is gone without sending it).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The open connections, oldest first, each by the signal that asks it to close.
struct Open {
    order: VecDeque<Weak<Notify>>,
    slots: Arc<Semaphore>,
    cap: usize,
}

impl Open {
    /// A slot for a new connection; at the cap, the oldest connections are asked to close until
    /// one frees its slot.
    async fn admit(&mut self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(p) = Arc::clone(&self.slots).try_acquire_owned() {
                return p;
            }
            while let Some(w) = self.order.pop_front() {
                if let Some(n) = w.upgrade() {
                    n.notify_one();
                    break;
                }
            }
            let wait = Arc::clone(&self.slots).acquire_owned();
            if let Ok(Ok(p)) = tokio::time::timeout(Duration::from_millis(20), wait).await {
                return p;
            }
        }
    }

    fn push(&mut self, n: &Arc<Notify>) {
        self.order.push_back(Arc::downgrade(n));
        if self.order.len() > 2 * self.cap {
            self.order.retain(|w| w.strong_count() > 0);
        }
    }
}

/// Serves `router` on `listener` until `stop` turns `true`, then stops accepting, asks every
/// connection to finish its request and close, and returns once all have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let cap = effective_cap(limits.max_connections);
    let mut open = Open {
        order: VecDeque::new(),
        slots: Arc::new(Semaphore::new(cap)),
        cap,
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let permit = tokio::select! {
            p = open.admit() => p,
            () = stopped(&mut stop) => break,
        };
        // Answers are small and clients wait for each: Nagle would only add latency.
        let _ = tcp.set_nodelay(true);
        let evict = Arc::new(Notify::new());
        open.push(&evict);
        let conn =
            builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router.clone()));
        let stop = stop.clone();
        tokio::spawn(async move {
            run_connection(conn, evict, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let _ = open.slots.acquire_many(all).await;
}

type Conn = http1::Connection<TokioIo<tokio::net::TcpStream>, TowerToHyperService<Router>>;

async fn run_connection(conn: Conn, evict: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection closed: {e}");
                }
                return;
            }
            () = evict.notified(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = stopped(&mut stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// After a failed accept: a client that gave up is nothing; running out of descriptors or memory
/// is waited out briefly rather than spun on.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
