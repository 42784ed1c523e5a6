//! CPU time of the calling thread and of the process: how the sampler measures its own cost and
//! paces the probes, and how the reference workload is timed.

/// CPU seconds the calling thread has used; 0 if the clock is unavailable (never on Linux).
pub fn thread_cpu_seconds() -> f64 {
    cpu_seconds(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU seconds all of the process's threads have used; 0 if the clock is unavailable.
pub fn process_cpu_seconds() -> f64 {
    cpu_seconds(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_seconds(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to a local.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    #[test]
    fn thread_clock_advances_with_work() {
        let t0 = super::thread_cpu_seconds();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        assert!(super::thread_cpu_seconds() > t0);
    }

    #[test]
    fn process_clock_counts_another_threads_work() {
        let t0 = super::process_cpu_seconds();
        let worked = std::thread::spawn(|| {
            let t = super::thread_cpu_seconds();
            let mut x = 0u64;
            for i in 0..5_000_000u64 {
                x = std::hint::black_box(x.wrapping_add(i));
            }
            super::thread_cpu_seconds() - t
        })
        .join()
        .unwrap_or(0.0);
        assert!(worked > 0.0);
        assert!(super::process_cpu_seconds() - t0 >= worked);
    }
}
