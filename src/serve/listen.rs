//! The accept loops: HTTP/1.1 connections served by hyper with a header read timeout (which also
//! bounds idle keep-alive connections: hyper runs it whenever a connection waits for the next
//! request's head), under a cap on connections open at once.
//!
//! Two accept loops (one per runtime worker, at most two) take connections from the one listener,
//! so that a burst queued in the kernel is drained on two cores. A connection that has sent nothing
//! yet is not given to hyper: it waits in a room held by the loop that accepted it, as its socket,
//! its slot and a cancel signal, with no task, no hyper connection and no timer of its own. One
//! peek after the accept tells the two apart (a fresh client has usually sent its request by then,
//! and goes straight to hyper); a waiting connection goes to hyper at its first byte, and one timer
//! per loop closes those still silent `header_timeout` after their accept. Hyper's header timeout
//! starts only at that first byte, so a client may take up to twice `header_timeout` from connect
//! to a complete head. The room is there for floods of connections that never send: each costs the
//! accept loop an accept, a peek, a small future and a close, and a fresh client queued in the
//! kernel behind a burst of them waits for that much, not for a task, a hyper connection and a
//! timer made and unmade for each. That close is a reset (`SO_LINGER` zero, inherited from the
//! listener, see [`bind`]): it frees the socket at once, with no system call to ask for it. Served
//! connections close in order.
//!
//! Within a few slots of the cap (1/32 of it), each new connection asks the oldest to close, so a
//! newcomer finds a slot free; at the cap itself the accept waits for one. The loops keep one
//! accept order between them: the oldest is the oldest silent connection while any waits, closed by
//! the loop whose room holds it (no connection task is woken), and otherwise the oldest served one.
//! A served connection asked to close that has a request in a handler or an answer being written
//! closes after that answer; any other — idle between requests, or trickling a request's head — is
//! closed at once, so its slot is free without waiting for a timeout. A fresh client therefore gets
//! in even when thousands of idle or slow connections were opened before it, clients that were
//! served keep their connections while silent ones make room, and descriptors stay bounded. The cap
//! is held below the process's descriptor limit, with room for the state directory, the sensors and
//! imports. (Written here, not taken from a crate: axum's `serve` has no connection cap and no
//! header timeout, and tower's concurrency limits count requests, not connections.)
use axum::Router;
use axum::body::Body;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::ReadBuf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
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

/// Pending connections the kernel may hold for the accept loop. tokio's `TcpListener::bind` asks
/// for 1,024; a flood of connects (the attack the connection cap is for) can fill that between two
/// turns of the accept loop, and a newcomer's SYN is then dropped and retried a second later. The
/// kernel caps the request at `net.core.somaxconn` (4,096 on current kernels).
const BACKLOG: u32 = 4096;

/// A listener on `addr` with a deeper accept queue than tokio's default ([`BACKLOG`]), address
/// reuse on, as `TcpListener::bind` sets it, and two options every accepted socket inherits from it
/// (Linux copies a listener's socket options to the sockets it accepts), so that a silent
/// connection costs no system call of its own for them:
/// - `SO_LINGER` zero: a connection closed without being served is reset. An RST frees the socket
///   at once, with no FIN handshake and no FIN_WAIT or TIME_WAIT state left in the kernel (under a
///   flood of idle clients reconnecting as soon as they are closed, that cost is the daemon's),
///   and a client that never spoke has no answer to lose. A connection handed to hyper has it
///   turned off ([`Hyper::serve`]), so served connections close in order.
/// - `TCP_NODELAY`: answers are small and clients wait for each; Nagle would only add latency.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_zero_linger()?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
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

/// What the accept loops share: the slots, and the open connections in accept order — those
/// served, each by the signal that asks it to close, and those waiting silent, each by its cancel
/// signal and deadline. Each loop polls the futures of its own silent connections; the order is
/// one, so "the oldest" is the oldest whichever loop accepted it. (A `std` mutex: each hold is a
/// few deque operations with no `.await` in it.)
struct Shared {
    slots: Arc<Semaphore>,
    cap: usize,
    accepted: AtomicU64,
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    served: VecDeque<(u64, Weak<Notify>)>,
    /// The silent connections' cancel signals with their deadlines, in accept order (so deadlines
    /// are in order too): closing one is dropping its signal, and the next poll of its future by
    /// the loop that holds it resets its socket and drops it and its slot.
    waiting: VecDeque<(Instant, oneshot::Sender<()>)>,
}

/// An accepted connection with its slot, and its place in accept order.
struct Accepted {
    tcp: TcpStream,
    permit: OwnedSemaphorePermit,
    seq: u64,
}

/// What wakes an accept waiting at the cap.
enum AtCap {
    Room(Option<Accepted>),
    Slot(OwnedSemaphorePermit),
    Retry,
}

/// One accept loop's silent connections, each a future that resolves once it speaks or closes.
type Room = FuturesUnordered<Waiting>;

impl Shared {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // A panic elsewhere while holding the book leaves deques that are still well formed.
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a new connection; at the cap, the oldest connections are asked to close until
    /// one frees its slot.
    async fn admit(&self, room: &mut Room, hyper: &Hyper) -> OwnedSemaphorePermit {
        loop {
            if let Ok(p) = Arc::clone(&self.slots).try_acquire_owned() {
                return p;
            }
            self.evict_oldest();
            let retry = tokio::time::sleep(Duration::from_millis(20));
            let mut retry = std::pin::pin!(retry);
            loop {
                // This loop's room is polled here too: a waiting connection just evicted gives its
                // slot back only when its future is polled, and one that speaks meanwhile is
                // served. One evicted from another loop's room is closed by that loop.
                let woke = tokio::select! {
                    biased;
                    Some(r) = room.next() => AtCap::Room(r),
                    r = Arc::clone(&self.slots).acquire_owned() => match r {
                        Ok(p) => AtCap::Slot(p),
                        Err(_) => AtCap::Retry,
                    },
                    () = &mut retry => AtCap::Retry,
                };
                match woke {
                    AtCap::Room(Some(conn)) => hyper.serve(self, conn),
                    AtCap::Room(None) => {
                        if let Ok(p) = Arc::clone(&self.slots).try_acquire_owned() {
                            return p;
                        }
                    }
                    AtCap::Slot(p) => return p,
                    AtCap::Retry => break,
                }
            }
        }
    }

    /// Asks the oldest open connection to close, without waiting for it: the oldest silent one if
    /// any waits, else the oldest served one.
    fn evict_oldest(&self) {
        let mut book = self.book();
        while let Some((_, cancel)) = book.waiting.pop_front() {
            if !cancel.is_closed() {
                // Dropped once the book is let go: the drop wakes the loop that holds it.
                drop(book);
                drop(cancel);
                return;
            }
        }
        while let Some((_, w)) = book.served.pop_front() {
            if let Some(n) = w.upgrade() {
                drop(book);
                n.notify_one();
                return;
            }
        }
    }

    /// Counts a connection served. One that waited in the room may come after younger ones that
    /// spoke at once; it takes its place by accept order, so that "oldest" stays the oldest.
    fn push_served(&self, seq: u64, n: &Arc<Notify>) {
        let mut book = self.book();
        let at = book.served.partition_point(|(s, _)| *s < seq);
        book.served.insert(at, (seq, Arc::downgrade(n)));
        if book.served.len() > 2 * self.cap {
            book.served.retain(|(_, w)| w.strong_count() > 0);
        }
    }

    /// Puts a silent connection in `room`, and its signal in the shared order.
    fn wait(&self, room: &mut Room, conn: Accepted, deadline: Instant) {
        let (cancel, cancelled) = oneshot::channel();
        room.push(Waiting {
            conn: Some(conn),
            deadline,
            cancelled,
        });
        let mut book = self.book();
        book.waiting.push_back((deadline, cancel));
        // The signals of connections gone to hyper stay until their deadline passes; under a
        // stream of them that is many more than can wait at once.
        if book.waiting.len() > 2 * self.cap {
            book.waiting.retain(|(_, c)| !c.is_closed());
        }
    }

    /// Closes the connections still silent at their deadline, in every loop's room.
    fn expire(&self, now: Instant) {
        let mut expired = Vec::new();
        {
            let mut book = self.book();
            while book.waiting.front().is_some_and(|(d, _)| *d <= now) {
                expired.extend(book.waiting.pop_front());
            }
        }
        drop(expired);
    }
}

/// A connection that has sent nothing yet: resolves to it and its slot once it has, or to nothing
/// (its socket reset, its slot free) once cancelled, hung up, failed, or heard from only after its
/// deadline.
struct Waiting {
    conn: Option<Accepted>,
    deadline: Instant,
    cancelled: oneshot::Receiver<()>,
}

impl Future for Waiting {
    type Output = Option<Accepted>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // The signal first: an evicted connection must give its slot back even if it has just
        // spoken, or the eviction frees nothing.
        if Pin::new(&mut this.cancelled).poll(cx).is_ready() {
            this.conn = None;
            return Poll::Ready(None);
        }
        let Some(conn) = &this.conn else {
            return Poll::Ready(None);
        };
        // A peek, not the readiness alone: readiness may be reported with nothing to read (a
        // silent connection just accepted is, on some kernels), and a peek that finds nothing
        // clears it and waits again.
        let mut byte = [0u8; 1];
        match conn.tcp.poll_peek(cx, &mut ReadBuf::new(&mut byte)) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(n)) if n > 0 && Instant::now() < this.deadline => {
                Poll::Ready(this.conn.take())
            }
            Poll::Ready(Ok(_)) => {
                this.conn = None;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                tracing::debug!("waiting connection failed: {e}");
                this.conn = None;
                Poll::Ready(None)
            }
        }
    }
}

/// Whether the client of a just-accepted connection has sent something (or hung up, or its socket
/// failed: hyper deals with those at once); `false` only while it is silent.
fn heard_from(tcp: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: a read of at most one byte into a local, on the descriptor `tcp` holds open;
    // MSG_PEEK leaves the byte for hyper, MSG_DONTWAIT keeps the accept loop from blocking.
    let n = unsafe {
        libc::recv(
            tcp.as_raw_fd(),
            (&raw mut byte).cast::<libc::c_void>(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
}

/// `t` from now, or as far as the clock safely reaches (a header timeout of centuries is never).
fn after(t: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(t)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

/// What gives a connection to hyper.
struct Hyper {
    router: Router,
    builder: http1::Builder,
    stop: watch::Receiver<bool>,
}

impl Hyper {
    /// Serves the connection on its own task, which holds its slot until it closes.
    fn serve(&self, shared: &Shared, conn: Accepted) {
        let Accepted { tcp, permit, seq } = conn;
        // The reset on close that the socket inherited from the listener ([`bind`]) is for
        // connections closed unserved; a served one closes in order, its last answer sent.
        #[allow(deprecated)] // deprecated for its blocking close, which `None` does not ask for
        if let Err(e) = tcp.set_linger(None) {
            tracing::warn!("cannot restore the orderly close of a connection: {e}");
        }
        let evict = Arc::new(Notify::new());
        shared.push_served(seq, &evict);
        let service = Counted {
            router: self.router.clone(),
            busy: Arc::new(AtomicUsize::new(0)),
        };
        let busy = Arc::clone(&service.busy);
        let conn = self.builder.serve_connection(TokioIo::new(tcp), service);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            run_connection(conn, &busy, evict, stop).await;
            drop(permit);
        });
    }
}

/// Lets the connection task just spawned run before the accept loop goes on. tokio puts a task
/// spawned from a worker in that worker's LIFO slot, which no other worker may steal, so it runs
/// only once the spawning task yields; under a burst of silent connections the accept loop is
/// always ready (the next accept, the next eviction) and yields only when its cooperative budget
/// of 128 operations runs out, so a fresh client's request, accepted and spawned, waited for up to
/// that many turns of the loop before hyper read it.
async fn handed_over() {
    tokio::task::yield_now().await;
}

/// What wakes the accept loop.
enum Step {
    Room(Option<Accepted>),
    Stop,
    Expire,
    Accepted(std::io::Result<TcpStream>),
}

/// Accept loops on one listener: a burst of reopened silent connections queued in the kernel is
/// drained on two cores at once, so a fresh client queued behind it waits about half as long.
/// More loops would each be woken by every new connection for little more.
const MAX_LOOPS: usize = 2;

/// Serves `router` on `listener` until `stop` turns `true`, then stops accepting, closes the
/// connections that have sent nothing, asks every other connection to finish its request and
/// close, and returns once all have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
) {
    let cap = effective_cap(limits.max_connections);
    let shared = Arc::new(Shared {
        slots: Arc::new(Semaphore::new(cap)),
        cap,
        accepted: AtomicU64::new(0),
        book: Mutex::new(Book::default()),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let hyper = Arc::new(Hyper {
        router,
        builder,
        stop: stop.clone(),
    });
    let listener = Arc::new(listener);
    let loops = tokio::runtime::Handle::current()
        .metrics()
        .num_workers()
        .clamp(1, MAX_LOOPS);
    // A set, so that aborting this future (the drain limit) aborts the loops too.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..loops {
        set.spawn(accept_loop(
            Arc::clone(&listener),
            Arc::clone(&shared),
            Arc::clone(&hyper),
            limits.header_timeout,
            stop.clone(),
        ));
    }
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            tracing::error!("an accept loop ended abnormally: {e}");
        }
    }
    drop(listener);
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let _ = shared.slots.acquire_many(all).await;
}

/// One accept loop: accepts until `stop`, hands connections that have spoken to hyper and keeps
/// silent ones in its room; on `stop`, closes its room's connections.
async fn accept_loop(
    listener: Arc<TcpListener>,
    shared: Arc<Shared>,
    hyper: Arc<Hyper>,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let headroom = shared.cap / 32;
    let mut room = Room::new();
    // One timer per loop for the whole room: a silent connection lives at most an eighth of the
    // timeout past its deadline (the hour's bound only keeps an absurd timeout from overflowing
    // the clock).
    let period = (header_timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(3600));
    let mut expiry = tokio::time::interval(period);
    expiry.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // The room first, so that connections just evicted give their slots back before the next
        // accept counts them; the stop before the accept, which a flood would never leave idle.
        let step = tokio::select! {
            biased;
            Some(r) = room.next() => Step::Room(r),
            () = stopped(&mut stop) => Step::Stop,
            _ = expiry.tick(), if !room.is_empty() => Step::Expire,
            r = listener.accept() => Step::Accepted(r.map(|(tcp, _)| tcp)),
        };
        let tcp = match step {
            Step::Room(Some(conn)) => {
                hyper.serve(&shared, conn);
                handed_over().await;
                continue;
            }
            Step::Room(None) => continue,
            Step::Stop => break,
            Step::Expire => {
                shared.expire(Instant::now());
                continue;
            }
            Step::Accepted(Ok(tcp)) => tcp,
            Step::Accepted(Err(e)) => {
                accept_failed(e).await;
                continue;
            }
        };
        let permit = tokio::select! {
            p = shared.admit(&mut room, &hyper) => p,
            () = stopped(&mut stop) => break,
        };
        // Near the cap, the oldest connection is asked to close as this one comes in, so that the
        // next newcomer finds a slot free rather than waiting in the accept loop for an eviction
        // (under a flood of reopened idle connections, those waits queued a fresh client behind
        // the whole backlog).
        if shared.slots.available_permits() < headroom {
            shared.evict_oldest();
        }
        let spoke = heard_from(&tcp);
        let conn = Accepted {
            tcp,
            permit,
            seq: shared.accepted.fetch_add(1, Ordering::Relaxed) + 1,
        };
        if spoke {
            hyper.serve(&shared, conn);
            handed_over().await;
        } else {
            shared.wait(&mut room, conn, after(header_timeout));
        }
    }
    // Silent connections would hold their slots until their deadline.
    drop(room);
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
