//! The slowdown model: how much slower a kernel runs now than on the quiet board it was calibrated on,
//! from the CPU share left for the model's threads, the frequency, and the memory bandwidth left.
use crate::profile::Profile;
use crate::sense::Snapshot;

pub use crate::profile::Slowdown;

/// Factors for one state, computed once per prediction.
#[derive(Clone, Copy, Debug)]
pub struct Factors {
    pub cpu: f64,
    pub frequency: f64,
    pub memory: f64,
    /// The board's speed now relative to calibration, from the reference workload (1: unknown).
    pub speed: f64,
}

impl Factors {
    /// Slowdown of a kernel whose time is `memory_share` memory traffic.
    pub fn kernel(&self, memory_share: f64) -> f64 {
        self.kernel_at(memory_share, self.speed)
    }

    /// [`Factors::kernel`] with `speed` in place of the board's one speed term (a kind that follows
    /// the reading more or less than the whole).
    pub fn kernel_at(&self, memory_share: f64, speed: f64) -> f64 {
        let m = 1.0 + memory_share.clamp(0.0, 1.0) * (self.memory - 1.0);
        let c = 1.0 + (1.0 - memory_share.clamp(0.0, 1.0)) * (self.frequency - 1.0);
        self.cpu * m * c * speed
    }
}

impl Slowdown {
    pub fn from_profile(p: &Profile) -> Slowdown {
        let workload = if p.reference.workload == crate::workload::reference::identity() {
            p.reference.workload_cpu_ms
        } else {
            0.0
        };
        if let Some(s) = &p.slowdown {
            return Slowdown {
                reference_workload_cpu_ms: workload,
                ..s.clone()
            };
        }
        // Nothing fitted under load: the defaults, following the reference readings as far as
        // they persist (calibration brought its measurements to one speed by them).
        Slowdown {
            cores: p.device.cores.max(1) as f64,
            reference_hertz: p.reference.cpu_frequency_hertz,
            reference_bandwidth: p.reference.probe_bytes_per_second,
            reference_workload_cpu_ms: workload,
            speed_live: workload > 0.0,
            ..Slowdown::default()
        }
    }

    /// Speed now relative to calibration: the reference workload's CPU time now over then.
    pub fn reference_speed(&self, s: &Snapshot) -> Option<f64> {
        let now = s
            .probe
            .reference_recent_cpu_ms
            .or(s.probe.reference_cpu_ms.ewma)?;
        (self.reference_workload_cpu_ms > 0.0 && now > 0.0)
            .then(|| (now / self.reference_workload_cpu_ms).clamp(0.5, 3.0))
    }

    /// The factor the reference workload's speed applies, where the profile follows it
    /// ([`Slowdown::speed_live`], or a fixed [`Slowdown::speed_elasticity`] > 0). It runs the same
    /// runtime through the same caches and memory, so where it is applied it stands for the
    /// frequency and memory-bandwidth terms, which then stay at 1.
    ///
    /// Live, the reading is followed as far as the board's speed has been persisting: on a shared
    /// host a reading is partly a spell that lasts and partly one that is over before the job
    /// runs, and which share is which changes by the hour. A reading taken on demand just before
    /// the job (the snapshot carries its noise) is followed instead as far as it stands out of its
    /// own noise ([`signal_share`]): the job runs within the second, so what the history says of
    /// the speed's movement from one reading to the next (seconds to a minute apart) would shrink
    /// a spell the job still meets. The elasticity is the least-squares
    /// coefficient, through the origin, of each reading's log departure from calibration on the one
    /// before ([`persistence`]): a host held slow (a spell of minutes, a load, a throttled clock)
    /// gives about 1, readings that scatter about calibration give about 0.
    pub fn speed(&self, s: &Snapshot) -> Option<f64> {
        let ratio = self.reference_speed(s)?;
        if self.speed_live {
            let history = &s.probe.reference_history_cpu_ms;
            let e = match s.probe.reference_noise_var {
                Some(noise) => signal_share(history, self.reference_workload_cpu_ms, noise)?,
                None => persistence(history, self.reference_workload_cpu_ms)?,
            };
            return Some(ratio.powf(e));
        }
        self.applied_speed(ratio)
    }

    /// The factor a reading `ratio` (now over calibration) applies under a load held steady (the
    /// load fit's): the whole ratio where the profile follows live (a held load persists),
    /// ratio^elasticity for a fixed elasticity, None where the profile does not follow the reference.
    pub fn applied_speed(&self, ratio: f64) -> Option<f64> {
        if self.speed_live {
            return Some(ratio);
        }
        (self.speed_elasticity.is_finite() && self.speed_elasticity > 0.0)
            .then(|| ratio.powf(self.speed_elasticity.min(1.0)))
    }

    pub fn factors(&self, s: &Snapshot, threads: usize) -> Factors {
        let cpu = self.cpu_factor(s, threads);
        let frequency = match (s.freq_ratio, self.reference_hertz > 0.0) {
            (Some(r), true) if r > 0.05 => {
                let now = s.cpus.iter().filter_map(|c| c.frequency_hertz).sum::<f64>()
                    / s.cpus
                        .iter()
                        .filter(|c| c.frequency_hertz.is_some())
                        .count()
                        .max(1) as f64;
                if now > 0.0 {
                    (self.reference_hertz / now).clamp(0.2, 5.0)
                } else {
                    1.0
                }
            }
            _ => 1.0,
        };
        let memory = match s.probe.memory_bandwidth_bytes_per_second.ewma {
            Some(bw) if bw > 0.0 && self.reference_bandwidth > 0.0 => {
                1.0 + self.memory_weight
                    * ((self.reference_bandwidth / bw).clamp(0.2, 10.0) - 1.0).max(0.0)
            }
            _ => 1.0,
        };
        match self.speed(s) {
            Some(speed) => Factors {
                cpu,
                frequency: 1.0,
                memory: 1.0,
                speed,
            },
            None => Factors {
                cpu,
                frequency,
                memory,
                speed: 1.0,
            },
        }
    }

    /// The time-sharing factor of [`Factors::cpu`] alone, for `threads` model threads.
    pub fn cpu_factor(&self, s: &Snapshot, threads: usize) -> f64 {
        let threads = threads.max(1) as f64;
        // Time-sharing: others' runnable work plus ours over the cores, when it exceeds them.
        // Others' demand in cores: their busy share; on a saturated board that understates it, so
        // also (a) the run queue (four hogs on two cores keep both busy at 100 %, as two would, but
        // queue twice as deep; the sampler's two threads are running when it reads the queue, hence
        // the − 2), and (b) when augur itself runs (a measurement in the same process) with N
        // threads and gets `o` cores' worth under fair sharing with others, their demand is
        // `N·cores / o − N` threads: one hog beside one thread of ours on two cores leaves us a
        // whole core (demand 1), two leave us two thirds of the cores' worth … (demand 2); one hog
        // beside two threads of ours leaves them four thirds of a core's worth (demand 1).
        // Each of the N + others runnable threads then gets min(1, cores / (N + others)) of a core:
        // the model's time grows by the inverse.
        let others_busy = s.others_busy().unwrap_or(0.0) * self.cores;
        let total = s.utilization.busy.mean.unwrap_or(0.0) * self.cores;
        // The window's mean, not the EWMA: a measurement's own share swings between a core and half
        // of one as threads move, and the EWMA (about a second) follows the swings. After a pause
        // the window still holds idle seconds, so whoever measures keeps busy while a load settles
        // (`eval --scenarios` times the reference workload meanwhile).
        let own = s.own_cpu.mean.unwrap_or(0.0) * self.cores;
        let saturated = total >= 0.95 * self.cores || others_busy >= 0.95 * self.cores;
        let queued = s
            .procs_running
            .map(|r| r.saturating_sub(2) as f64)
            .unwrap_or(0.0);
        let others = match (saturated, own >= 0.1) {
            (false, _) => others_busy,
            // A short dip in augur's own share (between two runs) must not read as a crowd of
            // hogs: the estimate is held to twice what the others were seen to use.
            (true, true) => others_busy
                .max((threads * self.cores / own - threads).min(2.0 * others_busy.max(0.5))),
            (true, false) => others_busy.max(queued),
        };
        let demand = others + threads;
        let share = if demand > self.cores {
            demand / self.cores
        } else {
            1.0
        };
        let cpu = 1.0 + self.cpu_weight * (share - 1.0);
        cpu.max(0.1)
    }

    /// How far the speed may move under a prediction that follows it live ([`step_spread`] of the
    /// snapshot's readings); 0 for a profile that does not follow it, or with too few readings.
    /// A band that left it out was far too sure on a host whose readings jump: a reading at
    /// calibration's speed between two slow ones gave the quiet board's narrow band.
    pub fn speed_spread(&self, s: &Snapshot) -> f64 {
        if !self.speed_live {
            return 0.0;
        }
        step_spread(
            &s.probe.reference_history_cpu_ms,
            self.reference_workload_cpu_ms,
        )
        .unwrap_or(0.0)
    }

    pub fn interval(&self, calibrated: bool) -> (f64, f64) {
        let i = if calibrated {
            self.interval_calibrated
        } else {
            self.interval_uncalibrated
        };
        (i[0], i[1])
    }
}

/// Readings a live elasticity needs (three consecutive pairs); with fewer the speed is not applied.
const MIN_READINGS: usize = 4;

/// Standard deviations of a normal error within a 90 % band (its 95th percentile).
const Z90: f64 = 1.645;

/// Each usable reading's log departure from `nominal`, oldest first; None with fewer than
/// [`MIN_READINGS`].
fn departures(history: &[f64], nominal: f64) -> Option<Vec<f64>> {
    if !(nominal.is_finite() && nominal > 0.0) {
        return None;
    }
    let x: Vec<f64> = history
        .iter()
        .filter(|v| v.is_finite() && **v > 0.0)
        .map(|v| (v / nominal).ln())
        .collect();
    (x.len() >= MIN_READINGS).then_some(x)
}

/// The least-squares coefficient, through the origin, of each departure on the one before.
fn kept_share(x: &[f64]) -> f64 {
    let (num, den) = x
        .windows(2)
        .fold((0.0, 0.0), |(n, d), w| (n + w[0] * w[1], d + w[0] * w[0]));
    if den > 0.0 {
        (num / den).clamp(0.0, 1.0)
    } else {
        // Every reading at calibration's speed exactly: nothing departs, nothing to follow.
        0.0
    }
}

/// How much of a reading's log departure from `nominal` the next reading kept, over `history`
/// (oldest first), in 0..=1; None with fewer than [`MIN_READINGS`] usable readings. Through the
/// origin, not about the readings' own mean: a spell that has lasted the whole history is a
/// departure that persists, not a new normal to measure noise around.
pub fn persistence(history: &[f64], nominal: f64) -> Option<f64> {
    departures(history, nominal).map(|x| kept_share(&x))
}

/// How far to follow a reading taken just before the job, in 0..=1: the share of the readings'
/// mean square departure from `nominal` (over `history`, the latest included) that is not the
/// reading's own noise `noise` (log variance) — the shrinkage of a noisy measurement toward
/// calibration's speed with the history as the prior's spread. A board held slow gives about 1;
/// readings that scatter about calibration no more than their noise give about 0. None with fewer
/// than [`MIN_READINGS`] usable readings.
pub fn signal_share(history: &[f64], nominal: f64, noise: f64) -> Option<f64> {
    let x = departures(history, nominal)?;
    let mean_square = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let noise = if noise.is_finite() {
        noise.max(0.0)
    } else {
        0.0
    };
    Some(if mean_square > 0.0 {
        (1.0 - noise / mean_square).clamp(0.0, 1.0)
    } else {
        0.0
    })
}

/// The 90 % half-width, in log, of what [`persistence`] missed from one reading to the next over
/// `history`: the root mean square of each departure less the share of the one before that it
/// foretold, in standard deviations of a normal. It is how far the speed a job meets may lie from
/// the speed the prediction applied; a steady board's readings give a few hundredths.
pub fn step_spread(history: &[f64], nominal: f64) -> Option<f64> {
    let x = departures(history, nominal)?;
    let e = kept_share(&x);
    let squares: f64 = x.windows(2).map(|w| (w[1] - e * w[0]).powi(2)).sum();
    Some(Z90 * (squares / (x.len() - 1) as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(total: f64, own: f64, running: u64) -> Snapshot {
        let mut s = Snapshot::default();
        s.utilization.busy.mean = Some(total);
        s.own_cpu.mean = Some(own);
        s.procs_running = Some(running);
        s
    }

    fn cpu(s: &Snapshot) -> f64 {
        Slowdown {
            cores: 2.0,
            ..Default::default()
        }
        .factors(s, 1)
        .cpu
    }

    #[test]
    fn time_sharing_follows_the_others_demand() {
        // Quiet board: no slowdown.
        assert_eq!(cpu(&state(0.05, 0.01, 2)), 1.0);
        // One hog on two cores while we run: we keep a core.
        assert!((cpu(&state(1.0, 0.5, 4)) - 1.0).abs() < 1e-9);
        // Two hogs while we run: we get two thirds of the cores → 1.5×.
        assert!((cpu(&state(1.0, 1.0 / 3.0, 5)) - 1.5).abs() < 1e-9);
        // Two hogs while we do not run (a daemon): their busy share says two cores.
        assert!((cpu(&state(1.0, 0.0, 4)) - 1.5).abs() < 1e-9);
        // Four hogs while we do not run: the run queue says four.
        assert!((cpu(&state(1.0, 0.0, 6)) - 2.5).abs() < 1e-9);
    }

    fn cpu_n(s: &Snapshot, threads: usize) -> f64 {
        Slowdown {
            cores: 2.0,
            ..Default::default()
        }
        .factors(s, threads)
        .cpu
    }

    #[test]
    fn n_threads_beside_busy_cores_get_their_fair_share() {
        // Two threads on a quiet two-core board: each has a core.
        assert_eq!(cpu_n(&state(0.0, 0.0, 2), 2), 1.0);
        // One hog (a daemon predicting, not running): three runnable threads on two cores, each
        // gets two thirds of a core → 1.5×; one thread of ours beside it still has a core.
        assert!((cpu_n(&state(0.5, 0.0, 3), 2) - 1.5).abs() < 1e-9);
        assert_eq!(cpu_n(&state(0.5, 0.0, 3), 1), 1.0);
        // Two hogs: four threads on two cores → 2×; one of ours → 1.5×.
        assert!((cpu_n(&state(1.0, 0.0, 4), 2) - 2.0).abs() < 1e-9);
        assert!((cpu_n(&state(1.0, 0.0, 4), 1) - 1.5).abs() < 1e-9);
        // Measuring two threads of ours beside one hog: ours hold four thirds of a core (two thirds
        // of the board), which says one other thread → 1.5×.
        assert!((cpu_n(&state(1.0, 2.0 / 3.0, 5), 2) - 1.5).abs() < 1e-9);
        // Beside two hogs ours hold one core (half of the board): two others → 2×.
        assert!((cpu_n(&state(1.0, 0.5, 6), 2) - 2.0).abs() < 1e-9);
        // More threads than cores on a quiet board time-share among themselves.
        assert!((cpu_n(&state(0.0, 0.0, 2), 4) - 2.0).abs() < 1e-9);
        // Never faster than on the quiet board, and monotone in the threads asked.
        for s in [state(0.3, 0.0, 2), state(1.0, 0.0, 5), state(1.0, 0.5, 5)] {
            let f: Vec<f64> = (1..=4).map(|n| cpu_n(&s, n)).collect();
            assert!(f.iter().all(|x| *x >= 1.0), "{f:?}");
            assert!(f.windows(2).all(|w| w[1] >= w[0] - 1e-12), "{f:?}");
        }
    }

    #[test]
    fn reference_workload_sets_the_speed() {
        let sd = Slowdown {
            cores: 2.0,
            reference_workload_cpu_ms: 20.0,
            speed_elasticity: 1.0,
            memory_weight: 1.0,
            reference_bandwidth: 10e9,
            ..Default::default()
        };
        let mut s = state(0.05, 0.01, 2);
        // Not measured: speed unknown, the bandwidth probe counts.
        s.probe.memory_bandwidth_bytes_per_second.ewma = Some(5e9);
        let f = sd.factors(&s, 1);
        assert_eq!(f.speed, 1.0);
        assert!((f.memory - 2.0).abs() < 1e-9);
        // Measured 10 % slower than at calibration: every kernel 1.1×, bandwidth term subsumed.
        s.probe.reference_recent_cpu_ms = Some(22.0);
        let f = sd.factors(&s, 1);
        assert!((f.speed - 1.1).abs() < 1e-9);
        assert_eq!(f.memory, 1.0);
        assert!((f.kernel(0.7) - 1.1).abs() < 1e-9);
        // A profile without a reference ignores the measurement.
        let none = Slowdown {
            reference_workload_cpu_ms: 0.0,
            ..sd
        };
        assert_eq!(none.factors(&s, 1).speed, 1.0);
        // The default profile reads the speed but does not apply it: the bandwidth term counts.
        let off = Slowdown {
            speed_elasticity: 0.0,
            ..sd
        };
        assert_eq!(off.reference_speed(&s), Some(1.1));
        let f = off.factors(&s, 1);
        assert_eq!(f.speed, 1.0);
        assert!((f.memory - 2.0).abs() < 1e-9);
        // Half elasticity: √1.1.
        let half = Slowdown {
            speed_elasticity: 0.5,
            ..sd
        };
        assert!((half.factors(&s, 1).speed - 1.1f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn live_the_reading_is_followed_as_far_as_the_speed_has_persisted() {
        let sd = Slowdown {
            cores: 2.0,
            reference_workload_cpu_ms: 20.0,
            speed_live: true,
            // Not used live.
            speed_elasticity: 0.0,
            memory_weight: 1.0,
            reference_bandwidth: 10e9,
            ..Default::default()
        };
        let mut s = state(0.05, 0.01, 2);
        s.probe.memory_bandwidth_bytes_per_second.ewma = Some(5e9);
        s.probe.reference_recent_cpu_ms = Some(28.0);
        // Too few readings to tell a spell from a blip: the speed is not applied, the bandwidth
        // term counts as without a reference.
        s.probe.reference_history_cpu_ms = vec![20.0, 28.0];
        let f = sd.factors(&s, 1);
        assert_eq!(f.speed, 1.0);
        assert!((f.memory - 2.0).abs() < 1e-9);
        // A host held 1.4× slow for the whole history: followed in full.
        s.probe.reference_history_cpu_ms = vec![28.0; 10];
        let f = sd.factors(&s, 1);
        assert!((f.speed - 1.4).abs() < 1e-9, "{f:?}");
        assert_eq!(f.memory, 1.0);
        // Readings that scatter about calibration, each departure gone by the next: not followed.
        s.probe.reference_history_cpu_ms = vec![20.0, 23.0, 17.5, 22.5, 18.0, 23.0, 17.0, 28.0];
        let e = persistence(&s.probe.reference_history_cpu_ms, 20.0).unwrap();
        assert_eq!(e, 0.0);
        assert_eq!(sd.factors(&s, 1).speed, 1.0);
        // A departure seen once is not followed until the next reading keeps it.
        let just: Vec<f64> = [vec![20.0; 7], vec![28.0]].concat();
        assert_eq!(persistence(&just, 20.0), Some(0.0));
        let kept: Vec<f64> = [vec![20.0; 6], vec![28.0; 2]].concat();
        assert_eq!(persistence(&kept, 20.0), Some(1.0));
        // Two blips gone by the next reading, then a spell that lasted: half the departures kept.
        let mixed = [20.0, 28.0, 20.0, 28.0, 20.0, 28.0, 28.0, 28.0];
        assert!((persistence(&mixed, 20.0).unwrap() - 0.5).abs() < 1e-9);
        // Under a held load (the load fit) the live profile takes the whole ratio.
        assert_eq!(sd.applied_speed(1.3), Some(1.3));
        // Unusable readings are skipped, and a profile without a reference timing has none to follow.
        assert_eq!(persistence(&[f64::NAN, 0.0, 28.0, 28.0, 28.0], 20.0), None);
        assert_eq!(persistence(&[28.0; 6], 0.0), None);
    }

    #[test]
    fn a_reading_taken_just_before_is_followed_as_far_as_it_stands_out_of_its_noise() {
        let sd = Slowdown {
            cores: 2.0,
            reference_workload_cpu_ms: 20.0,
            speed_live: true,
            ..Default::default()
        };
        let mut s = state(0.05, 0.01, 2);
        // A spell that moves between 1.2× and 1.6× from one reading to the next: the readings'
        // persistence about calibration is below 1, yet every reading stands far out of a noise of
        // 2 % — the job, run within the second, meets the speed just read.
        let moving = [24.0, 32.0, 25.0, 31.0, 24.5, 30.0, 26.0, 32.0];
        s.probe.reference_history_cpu_ms = moving.to_vec();
        s.probe.reference_recent_cpu_ms = Some(32.0);
        let e = persistence(&moving, 20.0).unwrap();
        assert!(e < 0.95, "{e}");
        let noise = 0.02f64.powi(2);
        let b = signal_share(&moving, 20.0, noise).unwrap();
        assert!(b > 0.99, "{b}");
        let sampled = sd.factors(&s, 1).speed;
        s.probe.reference_noise_var = Some(noise);
        let fresh = sd.factors(&s, 1).speed;
        assert!((fresh - 1.6f64.powf(b)).abs() < 1e-9, "{fresh}");
        assert!(fresh > sampled, "{fresh} {sampled}");
        // Readings that scatter about calibration no more than their own noise: not followed.
        let quiet = [20.4, 19.6, 20.2, 19.8, 20.4, 19.6];
        let mean_square = quiet
            .iter()
            .map(|v: &f64| (v / 20.0).ln().powi(2))
            .sum::<f64>()
            / quiet.len() as f64;
        assert_eq!(signal_share(&quiet, 20.0, mean_square), Some(0.0));
        assert_eq!(signal_share(&quiet, 20.0, 2.0 * mean_square), Some(0.0));
        // Half the mean square is noise: half followed.
        let half = signal_share(&quiet, 20.0, mean_square / 2.0).unwrap();
        assert!((half - 0.5).abs() < 1e-9, "{half}");
        // Every reading at calibration, too few readings, an unknown noise taken as none.
        assert_eq!(signal_share(&[20.0; 6], 20.0, noise), Some(0.0));
        assert_eq!(signal_share(&[28.0; 3], 20.0, noise), None);
        assert_eq!(signal_share(&[28.0; 6], 20.0, f64::NAN), Some(1.0));
    }

    #[test]
    fn the_spread_is_what_persistence_did_not_foretell() {
        // A host held slow, or at calibration's speed: each reading foretold the next exactly.
        assert_eq!(step_spread(&[28.0; 10], 20.0), Some(0.0));
        assert_eq!(step_spread(&[20.0; 10], 20.0), Some(0.0));
        // Readings that jump between two speeds: e = 0, so each departure is missed in full.
        let jumpy = [20.0, 28.0, 20.0, 28.0, 20.0, 28.0, 20.0, 28.0];
        let want = Z90 * ((4.0 * 1.4f64.ln().powi(2)) / 7.0).sqrt();
        let got = step_spread(&jumpy, 20.0).unwrap();
        assert!((got - want).abs() < 1e-9, "{got} {want}");
        // Too few readings, or no calibration to compare with: none.
        assert_eq!(step_spread(&[28.0; 3], 20.0), None);
        assert_eq!(step_spread(&[28.0; 6], f64::NAN), None);
        // Only a profile that follows the speed live carries it.
        let mut s = state(0.05, 0.01, 2);
        s.probe.reference_history_cpu_ms = jumpy.to_vec();
        let live = Slowdown {
            reference_workload_cpu_ms: 20.0,
            speed_live: true,
            ..Default::default()
        };
        assert!((live.speed_spread(&s) - want).abs() < 1e-9);
        let fixed = Slowdown {
            speed_live: false,
            ..live
        };
        assert_eq!(fixed.speed_spread(&s), 0.0);
    }
}
