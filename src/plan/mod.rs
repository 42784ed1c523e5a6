//! Split and offload planning: where a model should run — all on this board, split at a cut point
//! (the prefix here, the suffix on another board), or all on another board — ranked by predicted
//! latency, by local memory or by this board's energy, each with its chance of meeting a deadline.
//!
//! Entry point: [`plan`]. Its parts: [`cuts`] (where a model can be cut), [`memory`] (peak memory of
//! each prefix), [`split`] (the two halves as graphs, for `augur split`), [`choose`] (the largest
//! variant that meets a deadline, the fastest board of each model).
//!
//! The local part comes from the live predictor (the sum of the per-kernel live predictions of the
//! prefix); the remote part ([`Source`]) either from another board's profile on a quiet state (a
//! profile alone knows nothing of that board's load now, so such options are not live), or from
//! the per-kernel live prediction another augur daemon answered for the model ([`Answered`]; such
//! options are marked `remote_live`); the transfer from the link the caller gives (bandwidth and
//! round-trip time), both ways: the crossing tensors up, the model's outputs back.
//!
//! An answered prediction names the graph nodes each of its kernels runs, in the order of the graph
//! the daemon imported; both sides import the same bytes with the same importer, so the indices
//! are this graph's too (the caller checks the model's MACs agree, and [`plan`] that every node is
//! within the graph), and a cut is offered only where it falls between the daemon's kernels.
//!
//! The interval of a sum is the sum of the parts' intervals (each part's interval scaled to its
//! share of its prediction): the errors of the parts are taken as fully correlated, which is the
//! widest, and so the cautious, reading; the transfer is taken as exact (the link is the caller's
//! figure). The deadline probability is [`crate::predict::deadline::ErrorModel`]'s on that interval.
pub mod choose;
pub mod cuts;
mod memory;
pub mod remote;
pub mod split;

pub use cuts::{Cut, CutOptions};

use crate::kernels::Decomposition;
use crate::model::Graph;
use crate::predict::deadline::ErrorModel;
use crate::predict::{BasePrediction, Job, Learner, Predictor};
use crate::profile::{CacheBytes, CacheCurve};
use crate::sense::Snapshot;
use serde::Serialize;

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("{0}")]
    Invalid(String),
    /// What the ask needs is not known on this board (energy without a power counter).
    #[error("{0}")]
    Unavailable(String),
}

/// Where an option runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    Local,
    Split,
    Remote,
}

/// One way to run the model, with what it costs.
#[derive(Clone, Debug, Serialize)]
pub struct PlanOption {
    pub placement: Placement,
    /// Threads of the part that runs here (of the remote board's profile for `remote`).
    pub threads: usize,
    /// The cut of a split (see [`Cut::name`]).
    pub cut: Option<String>,
    pub latency_ms: f64,
    pub interval_ms: [f64; 2],
    /// The chance of meeting the deadline; `null` without one.
    pub p_deadline: Option<f64>,
    pub local_ms: f64,
    pub remote_ms: f64,
    /// Bytes over the link, both ways.
    pub transfer_bytes: u64,
    /// Peak memory this board needs: the whole model, the prefix, or the input it sends.
    pub local_peak_memory_bytes: u64,
    /// Energy this board spends above idle, J: known for options that run wholly here, where the
    /// profile has power figures; absent for those that use the link, whose radio augur cannot
    /// price (absent, not null, so that without power figures an option is the contract's keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_joules: Option<f64>,
    /// The remote board, when the plan was asked for several by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub board: Option<String>,
    /// True where the remote part is another daemon's live prediction rather than a profile's
    /// quiet one (absent when false, so that options of profile boards keep the contract's keys).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub remote_live: bool,
}

/// The options, best first.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub options: Vec<PlanOption>,
}

/// What the options are ranked by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RankBy {
    #[default]
    Latency,
    /// Local peak memory, then latency.
    Memory,
    /// This board's energy per inference (options with none known last, by latency).
    Energy,
}

impl std::str::FromStr for RankBy {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<RankBy, PlanError> {
        match s {
            "latency" => Ok(RankBy::Latency),
            "memory" => Ok(RankBy::Memory),
            "energy" => Ok(RankBy::Energy),
            other => Err(PlanError::Invalid(format!(
                "cannot rank by `{}`: latency, memory or energy",
                other.chars().take(40).collect::<String>()
            ))),
        }
    }
}

/// The link between this board and the remote one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    pub mbps: f64,
    pub rtt_ms: f64,
}

/// The largest figures a link may be given: beyond them a number is a mistake, not a link.
const MAX_MBPS: f64 = 1e7;
const MAX_RTT_MS: f64 = 3.6e6;
/// The longest deadline: an hour.
pub const MAX_DEADLINE_MS: f64 = 3.6e6;

impl Link {
    /// A link of `mbps` megabits per second and `rtt_ms` round trip; refuses what no link is.
    pub fn new(mbps: f64, rtt_ms: f64) -> Result<Link, PlanError> {
        if !(mbps.is_finite() && mbps > 0.0 && mbps <= MAX_MBPS) {
            return Err(PlanError::Invalid(format!(
                "link bandwidth {mbps} Mb/s: give a number above 0 and at most {MAX_MBPS}"
            )));
        }
        if !(rtt_ms.is_finite() && (0.0..=MAX_RTT_MS).contains(&rtt_ms)) {
            return Err(PlanError::Invalid(format!(
                "round-trip time {rtt_ms} ms: give a number from 0 to {MAX_RTT_MS}"
            )));
        }
        Ok(Link { mbps, rtt_ms })
    }

    /// Milliseconds to send `bytes` and hear back: serialisation at the bandwidth, plus one RTT.
    pub fn transfer_ms(&self, bytes: u64) -> f64 {
        bytes as f64 * 8.0 / (self.mbps * 1e3) + self.rtt_ms
    }
}

/// Checks that this board's options can be ranked by `by`: energy needs its profile's power figures.
pub fn check_by(by: RankBy, here: &Predictor) -> Result<RankBy, PlanError> {
    match by {
        RankBy::Energy => here
            .energy_available()
            .map(|()| by)
            .map_err(|e| PlanError::Unavailable(format!("cannot rank by energy: {e}"))),
        by => Ok(by),
    }
}

/// Checks a deadline: finite, above 0, at most [`MAX_DEADLINE_MS`].
pub fn check_deadline(ms: f64) -> Result<f64, PlanError> {
    if ms.is_finite() && ms > 0.0 && ms <= MAX_DEADLINE_MS {
        Ok(ms)
    } else {
        Err(PlanError::Invalid(format!(
            "deadline {ms} ms: give a number above 0 and at most {MAX_DEADLINE_MS}"
        )))
    }
}

/// A model ready to plan: what depends only on the graph and this board's decomposition of it.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub cuts: Vec<Cut>,
    /// Peak local bytes of each number of leading kernels (see [`memory::prefix_peaks`]).
    pub prefix_peaks: Vec<u64>,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub nodes: usize,
    pub macs: u64,
}

impl Prepared {
    pub fn new(g: &Graph, d: &Decomposition, opts: CutOptions) -> Prepared {
        let bytes = |ts: &[usize]| -> u64 {
            ts.iter()
                .filter_map(|&t| g.tensors.get(t))
                .map(|t| t.bytes())
                .sum()
        };
        Prepared {
            cuts: cuts::cut_points(g, d, opts),
            prefix_peaks: memory::prefix_peaks(g, d),
            input_bytes: bytes(&g.inputs),
            output_bytes: bytes(&g.outputs),
            nodes: g.nodes.len(),
            macs: d.macs,
        }
    }
}

/// This board: its live predictor and state, and the thread counts to offer.
pub struct Local<'a> {
    pub predictor: &'a Predictor,
    pub d: &'a Decomposition,
    pub base: &'a BasePrediction,
    pub state: &'a Snapshot,
    pub threads: &'a [usize],
    /// What this board's online learner has learned, and the model's name there: the local
    /// figures are then corrected as `/v1/predict` corrects its answer, so that a plan and a
    /// prediction of the same model agree. None (the command line) plans from the state alone.
    pub learned: Option<(&'a Learner, &'a str)>,
}

/// A board that can run a suffix or the whole model.
pub struct Remote<'a> {
    /// Its name in the answer (options of several boards are told apart by it).
    pub name: Option<&'a str>,
    pub source: Source<'a>,
    /// The threads it runs its part with (for [`Source::Answered`], those the daemon answered for).
    pub threads: usize,
}

/// Where a remote board's figures come from.
pub enum Source<'a> {
    /// Its profile, predicting a quiet board.
    Profile {
        predictor: &'a Predictor,
        /// The model decomposed under that board's fusion rules.
        d: &'a Decomposition,
        base: &'a BasePrediction,
    },
    /// Another augur daemon's live prediction of the whole model, kernel by kernel.
    Answered(&'a Answered),
}

/// What another augur daemon answered for the model: its kernels, in its order, and its interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Answered {
    pub kernels: Vec<AnsweredKernel>,
    pub latency_ms: f64,
    pub interval_ms: [f64; 2],
}

/// One kernel of an answered prediction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnsweredKernel {
    pub latency_ms: f64,
    /// The first and last graph node it runs.
    pub nodes: [usize; 2],
    /// This kernel and the rest run as a model of their own, where the daemon says.
    pub suffix_ms: Option<f64>,
}

impl Answered {
    /// Refuses an answer that cannot be of this graph (`nodes` nodes) or gives no usable figure:
    /// it came over the network.
    fn check(&self, nodes: usize) -> Result<(), PlanError> {
        let bad = |why: String| {
            Err(PlanError::Invalid(format!(
                "the remote daemon's prediction cannot be used: {why}"
            )))
        };
        if self.kernels.is_empty() {
            return bad("it has no kernels".into());
        }
        let finite = |v: f64| v.is_finite() && v >= 0.0;
        if !(finite(self.latency_ms) && self.interval_ms.iter().all(|&v| finite(v))) {
            return bad("its latency or interval is not a finite number".into());
        }
        for (i, k) in self.kernels.iter().enumerate() {
            if !finite(k.latency_ms) || k.suffix_ms.is_some_and(|v| !finite(v)) {
                return bad(format!("kernel {i} has no finite latency"));
            }
            let [lo, hi] = k.nodes;
            if lo > hi || hi >= nodes {
                return bad(format!(
                    "kernel {i} runs nodes {lo}..={hi}, not within this graph's {nodes} (is it the same model and importer?)"
                ));
            }
        }
        Ok(())
    }
}

impl Remote<'_> {
    fn is_live(&self) -> bool {
        matches!(self.source, Source::Answered(_))
    }
}

/// What the caller asks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ask {
    pub link: Option<Link>,
    pub deadline_ms: Option<f64>,
    pub by: RankBy,
}

/// A part's per-kernel milliseconds as running sums, and its interval as ratios to its total.
struct Part {
    cumulative: Vec<f64>,
    ratio: [f64; 2],
}

impl Part {
    fn of(p: &crate::predict::Prediction) -> Part {
        Part::new(
            p.kernels.iter().flatten().map(|k| k.latency_ms),
            p.latency_ms,
            p.interval_ms,
        )
    }

    fn answered(a: &Answered) -> Part {
        Part::new(
            a.kernels.iter().map(|k| k.latency_ms),
            a.latency_ms,
            a.interval_ms,
        )
    }

    fn new(kernels: impl Iterator<Item = f64>, latency_ms: f64, interval_ms: [f64; 2]) -> Part {
        let mut cumulative = vec![0.0];
        let mut sum = 0.0;
        for ms in kernels {
            sum += ms;
            cumulative.push(sum);
        }
        let ratio = if latency_ms > 0.0 {
            [interval_ms[0] / latency_ms, interval_ms[1] / latency_ms]
        } else {
            [1.0, 1.0]
        };
        Part { cumulative, ratio }
    }

    fn total(&self) -> f64 {
        self.cumulative.last().copied().unwrap_or(0.0)
    }

    /// Milliseconds of kernels `..k`.
    fn head(&self, k: usize) -> f64 {
        self.cumulative
            .get(k)
            .copied()
            .unwrap_or_else(|| self.total())
    }

    fn interval(&self, ms: f64) -> [f64; 2] {
        [ms * self.ratio[0], ms * self.ratio[1]]
    }
}

/// A board's kernels of one model, re-priced for a part run as a model of its own (a prefix deployed
/// here, a suffix there): the cache cost each carried at the whole model's working set is swapped
/// for the one at the part's, in the same live ratio as the rest of its time. A part smaller than
/// the caches runs faster alone than inside the whole, where the rest of the model evicts it.
struct Alone<'a> {
    predictor: &'a Predictor,
    d: &'a Decomposition,
    base: &'a BasePrediction,
    live: Vec<f64>,
    /// The board's cache curve as streamed now and its cost per byte at the whole model's
    /// working set, where the live state has one and the profile models the cache.
    now: Option<(CacheCurve, f64)>,
}

impl<'a> Alone<'a> {
    fn new(
        predictor: &'a Predictor,
        d: &'a Decomposition,
        base: &'a BasePrediction,
        p: &crate::predict::Prediction,
        state: Option<&Snapshot>,
    ) -> Alone<'a> {
        Alone {
            predictor,
            d,
            base,
            live: p.kernels.iter().flatten().map(|k| k.latency_ms).collect(),
            now: state
                .filter(|_| predictor.cache_curve().is_some())
                .and_then(crate::predict::live_cache_curve)
                .and_then(|c| {
                    let whole = c.seconds_per_byte(crate::predict::footprint(d))?;
                    Some((c, whole))
                }),
        }
    }

    /// Live ms of kernels `range` run as a model of their own; None where the profile has no cache
    /// curve (the whole model's figures stand).
    ///
    /// With the cache curve the board streams now, each kernel keeps its live figure inside the
    /// whole less what the whole's working set costs its bytes now over the part's: a neighbour
    /// holding part of the last-level cache makes a model's working set miss where a smaller part
    /// of it still hits, which calibration's curve (taken when it did not) cannot say. The bytes
    /// are the weights and the writes: halves of generated networks timed in a slow spell beside
    /// the live curve fit that rule, and not the weights alone (docs/evaluation.md, d57).
    fn ms(&self, range: std::ops::Range<usize>) -> Option<f64> {
        let footprint = crate::predict::footprint_of(self.d.kernels.get(range.clone())?);
        if let Some((now, whole)) = &self.now {
            let delta = now.seconds_per_byte(footprint)? - whole;
            let mut sum = 0.0;
            for i in range {
                let k = self.d.kernels.get(i)?;
                let bytes = crate::predict::recycled_bytes(k, CacheBytes::WeightsAndWrites, false);
                sum += (*self.live.get(i)? + bytes * delta * 1e3).max(0.0);
            }
            return Some(sum);
        }
        let mut sum = 0.0;
        for i in range {
            let (base, _) = *self.base.kernels.get(i)?;
            let live = *self.live.get(i)?;
            let alone = self
                .predictor
                .repriced_ms(self.d, self.base, i, footprint)?;
            sum += if base > 0.0 {
                live * alone / base
            } else {
                live
            };
        }
        Some(sum)
    }
}

/// Fills each kernel's `suffix_ms` in `p` (made by `predictor` from `d` and `base`, with its
/// kernels): what a board that sends the rest of the model here after a cut at that kernel would
/// have it cost, the part's working set its own (priced with the cache curve the board streams now
/// where `state` has one). Nothing where the profile has no cache curve.
pub fn suffixes(
    predictor: &Predictor,
    d: &Decomposition,
    base: &BasePrediction,
    p: &mut crate::predict::Prediction,
    state: &Snapshot,
) {
    let alone = Alone::new(predictor, d, base, p, Some(state));
    let n = alone.live.len();
    let figures: Vec<Option<f64>> = (0..n).map(|k| alone.ms(k..n)).collect();
    for (k, ms) in p.kernels.iter_mut().flatten().zip(figures) {
        k.suffix_ms = ms;
    }
}

/// The options for a model, best first by `ask.by`: all local at each of `local.threads`; with
/// remote boards (which need `ask.link`), each cut that is a kernel boundary on both boards as a
/// split, and all remote.
pub fn plan(m: &Prepared, local: &Local, remotes: &[Remote], ask: &Ask) -> Result<Plan, PlanError> {
    check_by(ask.by, local.predictor)?;
    if let Some(d) = ask.deadline_ms {
        check_deadline(d)?;
    }
    if local.threads.is_empty() || local.threads.contains(&0) {
        return Err(PlanError::Invalid("thread counts start at 1".into()));
    }
    let link = match (remotes.is_empty(), ask.link) {
        (true, _) => None,
        (false, Some(l)) => Some(l),
        (false, None) => {
            return Err(PlanError::Invalid(
                "a remote board needs the link: its bandwidth (Mb/s) and round-trip time (ms)"
                    .into(),
            ));
        }
    };
    let quiet = Snapshot::default();
    type RemotePart<'a> = (Part, Vec<Option<usize>>, Option<Alone<'a>>);
    let mut remote_parts: Vec<RemotePart> = Vec::with_capacity(remotes.len());
    for r in remotes {
        remote_parts.push(match &r.source {
            Source::Profile { predictor, d, base } => {
                let p = predictor.predict(d, base, &quiet, r.threads.max(1), true);
                (
                    Part::of(&p),
                    cuts::kernel_boundaries(d, m.nodes),
                    Some(Alone::new(predictor, d, base, &p, None)),
                )
            }
            Source::Answered(a) => {
                a.check(m.nodes)?;
                let ranges = a.kernels.iter().map(|k| (k.nodes[0], k.nodes[1]));
                (Part::answered(a), cuts::boundaries(ranges, m.nodes), None)
            }
        });
    }
    let whole_peak = m.prefix_peaks.last().copied().unwrap_or(0);
    let mut options = Vec::new();
    for &threads in local.threads {
        let p = match local.learned {
            Some((learner, model)) => {
                let job = Job {
                    model,
                    d: local.d,
                    base: local.base,
                    threads,
                };
                local
                    .predictor
                    .predict_live(&job, local.state, learner, true)
            }
            None => local
                .predictor
                .predict(local.d, local.base, local.state, threads, true),
        };
        let here = Part::of(&p);
        let alone_here = Alone::new(local.predictor, local.d, local.base, &p, Some(local.state));
        let total = here.total();
        options.push(PlanOption {
            placement: Placement::Local,
            threads,
            cut: None,
            latency_ms: total,
            interval_ms: here.interval(total),
            p_deadline: None,
            local_ms: total,
            remote_ms: 0.0,
            transfer_bytes: 0,
            local_peak_memory_bytes: local.d.peak_memory_bytes,
            energy_joules: p.energy_joules,
            board: None,
            remote_live: false,
        });
        let Some(link) = link else { continue };
        for (r, (there, bounds, alone_there)) in remotes.iter().zip(&remote_parts) {
            for c in &m.cuts {
                // A cut that falls inside a kernel the remote board fuses is no cut there.
                let Some(Some(rk)) = bounds.get(c.position).copied() else {
                    continue;
                };
                let local_ms = alone_here
                    .ms(0..c.kernels_before)
                    .unwrap_or_else(|| here.head(c.kernels_before));
                let remote_ms = match (alone_there, &r.source) {
                    (Some(a), _) => a.ms(rk..a.d.kernels.len()),
                    (None, Source::Answered(a)) => a.kernels.get(rk).and_then(|k| k.suffix_ms),
                    _ => None,
                }
                .unwrap_or_else(|| there.total() - there.head(rk));
                let bytes = c.bytes + m.output_bytes;
                let transfer = link.transfer_ms(bytes);
                let [a, b] = here.interval(local_ms);
                let [x, y] = there.interval(remote_ms);
                options.push(PlanOption {
                    placement: Placement::Split,
                    threads,
                    cut: Some(c.name.clone()),
                    latency_ms: local_ms + transfer + remote_ms,
                    interval_ms: [a + transfer + x, b + transfer + y],
                    p_deadline: None,
                    local_ms,
                    remote_ms,
                    transfer_bytes: bytes,
                    local_peak_memory_bytes: m
                        .prefix_peaks
                        .get(c.kernels_before)
                        .copied()
                        .unwrap_or(whole_peak),
                    energy_joules: None,
                    board: r.name.map(str::to_string),
                    remote_live: r.is_live(),
                });
            }
        }
    }
    if let Some(link) = link {
        for (r, (there, _, _)) in remotes.iter().zip(&remote_parts) {
            let bytes = m.input_bytes + m.output_bytes;
            let transfer = link.transfer_ms(bytes);
            let remote_ms = there.total();
            let [x, y] = there.interval(remote_ms);
            options.push(PlanOption {
                placement: Placement::Remote,
                threads: r.threads,
                cut: None,
                latency_ms: transfer + remote_ms,
                interval_ms: [transfer + x, transfer + y],
                p_deadline: None,
                local_ms: 0.0,
                remote_ms,
                transfer_bytes: bytes,
                local_peak_memory_bytes: m.input_bytes,
                energy_joules: None,
                board: r.name.map(str::to_string),
                remote_live: r.is_live(),
            });
        }
    }
    if let Some(deadline) = ask.deadline_ms {
        for o in &mut options {
            let e = ErrorModel::from_interval(o.latency_ms, o.interval_ms);
            o.p_deadline = Some(e.p_within(o.latency_ms, deadline));
        }
    }
    rank(&mut options, ask.by);
    Ok(Plan { options })
}

/// Best first; the sort is stable, so equal options keep the order they were made in (local first).
fn rank(options: &mut [PlanOption], by: RankBy) {
    match by {
        RankBy::Memory => options.sort_by(|a, b| {
            a.local_peak_memory_bytes
                .cmp(&b.local_peak_memory_bytes)
                .then(a.latency_ms.total_cmp(&b.latency_ms))
        }),
        RankBy::Energy => options.sort_by(|a, b| {
            // Known energies first, least first; the unknown after them, by latency.
            let e = |o: &PlanOption| o.energy_joules.unwrap_or(f64::INFINITY);
            e(a).total_cmp(&e(b))
                .then(a.latency_ms.total_cmp(&b.latency_ms))
        }),
        RankBy::Latency => options.sort_by(|a, b| a.latency_ms.total_cmp(&b.latency_ms)),
    }
}

#[cfg(test)]
mod tests;
