//! The accept loop: HTTP/1.1 connections served by hyper with a header read timeout (which also
//! bounds idle keep-alive connections: hyper runs it whenever a connection waits for the next
//! request's head), under a cap on connections open at once.
//!
//! Within a few slots of the cap (1/32 of it), each new connection asks the oldest to close, so a
//! newcomer finds a slot free; at the cap itself the accept waits for one. A connection asked to
//! close that has a request in a handler or an answer being written closes after that answer; any
//! other — idle between requests, never used, or trickling a request's head — is closed at once,
//! so its slot is free without waiting for a timeout. A fresh client therefore gets in even when
//! thousands of idle or slow connections were opened before it, and descriptors stay bounded. The
//! cap is held below the process's descriptor limit, with room for the state directory, the
//! sensors and imports. (Written here, not taken from a crate: axum's `serve` has no connection
//! cap and no header timeout, and tower's concurrency limits count requests, not connections.)
use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

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
            self.evict_oldest();
            let wait = Arc::clone(&self.slots).acquire_owned();
            if let Ok(Ok(p)) = tokio::time::timeout(Duration::from_millis(20), wait).await {
                return p;
            }
        }
    }

    /// Asks the oldest open connection to close, without waiting for it.
    fn evict_oldest(&mut self) {
        while let Some(w) = self.order.pop_front() {
            if let Some(n) = w.upgrade() {
                n.notify_one();
                return;
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
    let headroom = cap / 32;
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
        // Near the cap, the oldest connection is asked to close as this one comes in, so that the
        // next newcomer finds a slot free rather than waiting in the accept loop for an eviction
        // (under a flood of reopened idle connections, those waits queued a fresh client behind
        // the whole backlog).
        if open.slots.available_permits() < headroom {
            open.evict_oldest();
        }
        // Answers are small and clients wait for each: Nagle would only add latency.
        let _ = tcp.set_nodelay(true);
        let evict = Arc::new(Notify::new());
        open.push(&evict);
        let service = Counted {
            router: router.clone(),
            busy: Arc::new(AtomicUsize::new(0)),
        };
        let busy = Arc::clone(&service.busy);
        let conn = builder.serve_connection(TokioIo::new(tcp), service);
        let stop = stop.clone();
        tokio::spawn(async move {
            run_connection(conn, &busy, evict, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let _ = open.slots.acquire_many(all).await;
}

/// The router as one connection's service, counting the requests of the connection that are in a
/// handler or whose answer is still being written.
#[derive(Clone)]
struct Counted {
    router: Router,
    busy: Arc<AtomicUsize>,
}

/// One request of a connection counted as busy until its answer's body is dropped (written, or
/// the connection gone).
struct BusyGuard(Arc<AtomicUsize>);

impl BusyGuard {
    fn enter(busy: &Arc<AtomicUsize>) -> BusyGuard {
        busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(Arc::clone(busy))
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Counted {
    type Response = hyper::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let guard = BusyGuard::enter(&self.busy);
        let router = self.router.clone();
        Box::pin(async move {
            let answer = router.oneshot(req).await?;
            // The guard rides with the answer's body, so the connection stays busy while it is
            // written.
            Ok(answer.map(move |body| {
                Body::new(body.map_frame(move |frame| {
                    let _busy = &guard;
                    frame
                }))
            }))
        })
    }
}

type Conn = http1::Connection<TokioIo<tokio::net::TcpStream>, Counted>;

async fn run_connection(
    conn: Conn,
    busy: &AtomicUsize,
    evict: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
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
                // Nothing of this connection's is in a handler or being answered: it waits for a
                // request's head, and dropping it closes the socket now.
                if busy.load(Ordering::Acquire) == 0 {
                    return;
                }
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
