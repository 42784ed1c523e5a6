//! Bounded background loads for tests and calibration: a CPU hog, a memory streamer and a cache
//! thrasher, on in-process threads. A [`LoadGuard`] always ends its load: on [`LoadGuard::stop`], on
//! drop (also while unwinding from a failed assertion), and at its deadline at the latest.
use std::hint::black_box;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadKind {
    /// Floating-point spin on `threads` threads.
    Cpu { threads: usize },
    /// Each thread reads and writes its own `bytes`-sized buffer sequentially (DRAM bandwidth).
    Memory { threads: usize, bytes: usize },
    /// Each thread touches cache lines of its own `bytes`-sized buffer in a scattered order, so
    /// that neighbours lose their cached data.
    Cache { threads: usize, bytes: usize },
}

/// A running load; it stops when dropped.
pub struct LoadGuard {
    stop: Arc<AtomicBool>,
    work: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
    kind: LoadKind,
}

const LINE_WORDS: usize = 8;

impl LoadGuard {
    /// Starts `kind`; it ends by itself after `max_duration` even if never stopped.
    pub fn start(kind: LoadKind, max_duration: Duration) -> io::Result<LoadGuard> {
        let stop = Arc::new(AtomicBool::new(false));
        let work = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + max_duration;
        let (n, bytes) = match kind {
            LoadKind::Cpu { threads } => (threads, 0),
            LoadKind::Memory { threads, bytes } | LoadKind::Cache { threads, bytes } => {
                (threads, bytes)
            }
        };
        let mut guard = LoadGuard {
            stop: Arc::clone(&stop),
            work: Arc::clone(&work),
            threads: Vec::new(),
            kind,
        };
        for i in 0..n.max(1) {
            let (stop, work) = (Arc::clone(&stop), Arc::clone(&work));
            let running = move || !stop.load(Ordering::Relaxed) && Instant::now() < deadline;
            let h = std::thread::Builder::new()
                .name(format!("augur-load-{i}"))
                .spawn(move || match kind {
                    LoadKind::Cpu { .. } => cpu_hog(running, &work),
                    LoadKind::Memory { .. } => {
                        if let Some(buf) = buffer(bytes) {
                            streamer(buf, running, &work)
                        }
                    }
                    LoadKind::Cache { .. } => {
                        if let Some(buf) = buffer(bytes) {
                            thrasher(buf, running, &work)
                        }
                    }
                });
            // On a failed spawn the guard drops here and stops the threads already running.
            guard.threads.push(h?);
        }
        Ok(guard)
    }

    pub fn kind(&self) -> LoadKind {
        self.kind
    }

    /// Units of work done so far (loop blocks, bytes/64, or lines touched), to see that it ran.
    pub fn work_done(&self) -> u64 {
        self.work.load(Ordering::Relaxed)
    }

    /// True once every thread has ended (stopped, or past the deadline).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Stops the load and waits for its threads.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.work_done()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.halt();
    }
}

fn buffer(bytes: usize) -> Option<Vec<u64>> {
    let words = (bytes / 8).max(LINE_WORDS * 64);
    let mut v = Vec::new();
    v.try_reserve_exact(words).ok()?;
    v.extend((0..words as u64).map(|i| i ^ 0x5555));
    Some(v)
}

fn cpu_hog(running: impl Fn() -> bool, work: &AtomicU64) {
    let mut x = [1.0f64; 8];
    while running() {
        for _ in 0..20_000 {
            for v in x.iter_mut() {
                *v = black_box(*v * 0.999_999 + 1e-6);
            }
        }
        work.fetch_add(1, Ordering::Relaxed);
    }
    black_box(x);
}

fn streamer(mut buf: Vec<u64>, running: impl Fn() -> bool, work: &AtomicU64) {
    // 512 KiB between checks of the stop flag.
    const BLOCK: usize = 64 * 1024;
    'outer: loop {
        for chunk in buf.chunks_mut(BLOCK) {
            if !running() {
                break 'outer;
            }
            for w in chunk.iter_mut() {
                *w = w.wrapping_add(1);
            }
            work.fetch_add((chunk.len() / LINE_WORDS) as u64, Ordering::Relaxed);
        }
    }
    black_box(&buf);
}

fn thrasher(mut buf: Vec<u64>, running: impl Fn() -> bool, work: &AtomicU64) {
    let lines = buf.len() / LINE_WORDS;
    // An odd stride coprime with the line count visits every line in an order prefetchers miss.
    let mut stride = (lines / 2 + 1) | 1;
    while gcd(stride, lines) != 1 {
        stride += 2;
    }
    let mut i = 0usize;
    while running() {
        for _ in 0..4096 {
            i = (i + stride) % lines;
            let w = &mut buf[i * LINE_WORDS];
            *w = w.wrapping_add(1);
        }
        work.fetch_add(4096, Ordering::Relaxed);
    }
    black_box(&buf);
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_run_and_always_stop() {
        for kind in [
            LoadKind::Cpu { threads: 1 },
            LoadKind::Memory {
                threads: 1,
                bytes: 1 << 20,
            },
            LoadKind::Cache {
                threads: 1,
                bytes: 1 << 20,
            },
        ] {
            let g = LoadGuard::start(kind, Duration::from_secs(30)).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            let t = Instant::now();
            assert!(g.stop() > 0, "{kind:?} did no work");
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{kind:?} was slow to stop"
            );
        }
        let g = LoadGuard::start(LoadKind::Cpu { threads: 1 }, Duration::from_millis(50)).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert!(g.is_finished(), "the deadline ends a load nobody stops");
    }
}
