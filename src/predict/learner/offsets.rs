//! The fast corrections: log-ratio offsets with a short memory for the whole board and for each
//! kernel kind, and a long-memory one per model, learned together by a decoupled Kalman filter.
//!
//! Each offset is a random walk (the model's own) or a mean-reverting one (board and kinds, which
//! fade back to 0 over a few observations: a regime the sensors miss is a passing thing). An
//! observation's innovation is shared among the offsets in proportion to how uncertain each is, so
//! a model seen for the first time mostly learns its own offset, while a well-known model's
//! surprise moves the board and its kernel kinds — and so the very next prediction of every other
//! model. Each offset keeps its own variance only (no cross-covariances): the update is O(kinds),
//! and every variance stays positive by construction. The observation noise is estimated online, so
//! a noisy board smooths more.
use crate::kernels::KernelKind;
use serde::{Deserialize, Serialize};

/// Number of kernel kinds.
pub const KINDS: usize = KernelKind::ALL.len();

/// Share of a model's base time spent in each kernel kind (index as in [`KernelKind::ALL`]).
pub type KindShares = [f64; KINDS];

/// Largest |offset| (a factor of 3 either way).
pub const OFFSET_MAX: f64 = 1.0986;
/// Per-observation mean reversion of the board and kind offsets: half-life of about 4
/// observations.
const RHO_FAST: f64 = 0.85;
/// Stationary standard deviation of the board offset (a regime moves the board by ±15 % or so).
const BOARD_SD: f64 = 0.15;
/// ... and of a kind's offset beside the board's.
const KIND_SD: f64 = 0.10;
/// Prior standard deviation of a model's own offset: the profile's error on a model not seen yet.
pub const MODEL_SD0: f64 = 0.20;
/// Per-observation drift of a model's own offset.
const MODEL_DRIFT_SD: f64 = 0.003;
/// Bounds and start of the observation noise variance (log-ratio², 1 %–50 %).
const NOISE_MIN: f64 = 1e-4;
const NOISE_MAX: f64 = 0.25;
const NOISE0: f64 = 9e-4;
/// Weight of one innovation in the noise estimate.
const NOISE_ALPHA: f64 = 0.05;

/// One offset: its mean (a log-ratio) and variance.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offset {
    pub mean: f64,
    pub var: f64,
}

impl Offset {
    fn sound(&self, var_max: f64) -> bool {
        self.mean.is_finite()
            && self.mean.abs() <= OFFSET_MAX + 1e-9
            && self.var.is_finite()
            && self.var > 0.0
            && self.var <= var_max * (1.0 + 1e-9)
    }
}

fn board_stationary() -> Offset {
    Offset {
        mean: 0.0,
        var: BOARD_SD * BOARD_SD,
    }
}

fn kind_stationary() -> Offset {
    Offset {
        mean: 0.0,
        var: KIND_SD * KIND_SD,
    }
}

/// A model's own offset before its first observation.
pub fn model_prior() -> Offset {
    Offset {
        mean: 0.0,
        var: MODEL_SD0 * MODEL_SD0,
    }
}

/// The board-wide and per-kind offsets, and the noise estimate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fast {
    pub board: Offset,
    pub kinds: [Offset; KINDS],
    /// Observation noise variance of the log-ratio.
    pub noise: f64,
}

impl Default for Fast {
    fn default() -> Self {
        Fast {
            board: board_stationary(),
            kinds: [kind_stationary(); KINDS],
            noise: NOISE0,
        }
    }
}

/// Process noise that keeps a mean-reverting offset at its stationary variance.
fn fast_q(sd: f64) -> f64 {
    sd * sd * (1.0 - RHO_FAST * RHO_FAST)
}

impl Fast {
    /// The board's and the kinds' log-offset for a model with `kinds` shares (None: unknown).
    pub fn predict(&self, kinds: Option<&KindShares>) -> f64 {
        let k = kinds.map_or(0.0, |h| {
            h.iter().zip(&self.kinds).map(|(h, o)| h * o.mean).sum()
        });
        self.board.mean + k
    }

    /// Time update (one observation's worth of mean reversion), then the measurement update with
    /// innovation `e` against the model's own offset `own`. Returns the innovation's variance.
    pub fn update(&mut self, kinds: Option<&KindShares>, own: &mut Offset, e: f64) -> f64 {
        let rev = |o: &mut Offset, q: f64| {
            o.mean *= RHO_FAST;
            o.var = RHO_FAST * RHO_FAST * o.var + q;
        };
        rev(&mut self.board, fast_q(BOARD_SD));
        for k in &mut self.kinds {
            rev(k, fast_q(KIND_SD));
        }
        own.var += MODEL_DRIFT_SD * MODEL_DRIFT_SD;
        let h = kinds.copied().unwrap_or([0.0; KINDS]);
        let s_pred = self.board.var
            + own.var
            + h.iter()
                .zip(&self.kinds)
                .map(|(h, o)| h * h * o.var)
                .sum::<f64>();
        let s = s_pred + self.noise;
        // Huber: one surprise moves the offsets by at most three standard deviations of it.
        let lim = 3.0 * s.sqrt();
        let e = e.clamp(-lim, lim);
        let step = |o: &mut Offset, h: f64| {
            let k = o.var * h / s;
            o.mean = (o.mean + k * e).clamp(-OFFSET_MAX, OFFSET_MAX);
            o.var *= 1.0 - k * h;
        };
        step(&mut self.board, 1.0);
        step(own, 1.0);
        for (o, h) in self.kinds.iter_mut().zip(h) {
            if h > 0.0 {
                step(o, h);
            }
        }
        let noise = (e * e - s_pred).max(NOISE_MIN);
        self.noise = ((1.0 - NOISE_ALPHA) * self.noise + NOISE_ALPHA * noise).min(NOISE_MAX);
        s
    }

    /// Why this state cannot be trusted, if it cannot.
    pub fn fault(&self) -> Option<String> {
        if !self.board.sound(BOARD_SD * BOARD_SD) {
            return Some(format!("board offset {:?} out of bounds", self.board));
        }
        if let Some(i) = self.kinds.iter().position(|o| !o.sound(KIND_SD * KIND_SD)) {
            return Some(format!(
                "{} offset {:?} out of bounds",
                KernelKind::ALL[i].name(),
                self.kinds[i]
            ));
        }
        if !(self.noise.is_finite() && (NOISE_MIN..=NOISE_MAX).contains(&self.noise)) {
            return Some(format!("noise variance {} out of bounds", self.noise));
        }
        None
    }
}

/// A model's own offset is sound: finite, bounded, positive variance no larger than its prior's
/// plus what drift could add in a long absence.
pub fn model_sound(o: &Offset) -> bool {
    o.sound(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_model_moves_the_board_and_a_new_one_mostly_itself() {
        let mut f = Fast::default();
        let mut known = model_prior();
        for _ in 0..50 {
            f.update(None, &mut known, 0.0);
        }
        let before = f.board.mean;
        f.update(None, &mut known, 0.3);
        let board_from_known = f.board.mean - before;
        let mut f2 = f.clone();
        let mut fresh = model_prior();
        f2.update(None, &mut fresh, 0.3);
        let board_from_fresh = f2.board.mean - f.board.mean * RHO_FAST;
        assert!(board_from_known > 0.15, "{board_from_known}");
        assert!(board_from_fresh < board_from_known, "{board_from_fresh}");
        assert!(fresh.mean > board_from_fresh, "{fresh:?}");
    }

    #[test]
    fn kinds_learn_in_proportion_to_their_share() {
        let mut f = Fast::default();
        let mut m = model_prior();
        m.var = 1e-4;
        let mut h = [0.0; KINDS];
        h[0] = 0.9;
        h[2] = 0.1;
        f.update(Some(&h), &mut m, 0.2);
        assert!(f.kinds[0].mean > f.kinds[2].mean && f.kinds[2].mean > 0.0);
        assert_eq!(f.kinds[1].mean, 0.0);
        assert_eq!(f.fault(), None);
    }

    #[test]
    fn the_board_offset_fades_when_observations_agree_with_the_base() {
        let mut f = Fast::default();
        let mut m = model_prior();
        m.var = 1e-4;
        f.update(None, &mut m, 0.3);
        let after = f.board.mean;
        for _ in 0..20 {
            let e = -f.predict(None) - m.mean;
            f.update(None, &mut m, e);
        }
        assert!(
            f.board.mean.abs() < after / 4.0,
            "{} vs {after}",
            f.board.mean
        );
    }
}
