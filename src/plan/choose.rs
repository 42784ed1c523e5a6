//! Choosing among variants and boards from their plans: the largest model (by MACs) that meets a
//! deadline with enough confidence now, and, for each model, the board where it runs fastest now.
//!
//! Entry point: [`choose`].
use super::{Placement, Plan, PlanOption};
use serde::Serialize;

/// The confidence a choice needs: the deadline met nine times in ten.
pub const CONFIDENCE: f64 = 0.9;

/// One model with its plan.
pub struct Candidate<'a> {
    pub model: &'a str,
    pub macs: u64,
    pub plan: &'a Plan,
}

/// The model chosen for a deadline, and how to run it.
#[derive(Clone, Debug, Serialize)]
pub struct Choice {
    pub model: String,
    pub macs: u64,
    pub option: PlanOption,
}

/// Where a model runs fastest now.
#[derive(Clone, Debug, Serialize)]
pub struct Fastest {
    pub model: String,
    /// `local` for this board, else the remote board's name.
    pub board: String,
    /// True when every part comes from a live state; a remote board known by its profile alone
    /// is predicted on a quiet state.
    pub live: bool,
    pub placement: Placement,
    pub cut: Option<String>,
    pub latency_ms: f64,
    pub interval_ms: [f64; 2],
    pub p_deadline: Option<f64>,
}

/// What [`choose`] answers.
#[derive(Clone, Debug, Serialize)]
pub struct Choices {
    /// The largest model whose best option meets the deadline with at least [`CONFIDENCE`]; `None`
    /// when none does (or no deadline was given: the options carry no probability then).
    pub choice: Option<Choice>,
    pub fastest: Vec<Fastest>,
}

/// The choice among `candidates` (their options carrying deadline probabilities when a deadline
/// was asked) and the fastest placement of each.
pub fn choose(candidates: &[Candidate]) -> Choices {
    let mut choice: Option<Choice> = None;
    for c in candidates {
        // Among a model's options that meet the deadline, the most likely to, then the fastest.
        let best = c
            .plan
            .options
            .iter()
            .filter(|o| o.p_deadline.is_some_and(|p| p >= CONFIDENCE))
            .max_by(|a, b| {
                a.p_deadline
                    .unwrap_or(0.0)
                    .total_cmp(&b.p_deadline.unwrap_or(0.0))
                    .then(b.latency_ms.total_cmp(&a.latency_ms))
            });
        if let Some(o) = best
            && choice.as_ref().is_none_or(|ch| c.macs > ch.macs)
        {
            choice = Some(Choice {
                model: c.model.to_string(),
                macs: c.macs,
                option: o.clone(),
            });
        }
    }
    let fastest = candidates
        .iter()
        .filter_map(|c| {
            let o = c
                .plan
                .options
                .iter()
                .min_by(|a, b| a.latency_ms.total_cmp(&b.latency_ms))?;
            Some(Fastest {
                model: c.model.to_string(),
                board: match o.placement {
                    Placement::Local => "local".to_string(),
                    _ => o.board.clone().unwrap_or_else(|| "remote".to_string()),
                },
                live: o.placement == Placement::Local || o.remote_live,
                placement: o.placement,
                cut: o.cut.clone(),
                latency_ms: o.latency_ms,
                interval_ms: o.interval_ms,
                p_deadline: o.p_deadline,
            })
        })
        .collect();
    Choices { choice, fastest }
}
