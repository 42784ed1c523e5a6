use super::choose::{Candidate, choose};
use super::*;
use crate::kernels::{FusionRules, decompose};
use crate::model::builder::GraphBuilder;
use crate::profile::{Profile, Roofline};

/// A profile with no regressors (every kernel from its roofline) at `gflops`.
fn profile(gflops: f64, threads: usize) -> Profile {
    let v = serde_json::json!({
        "format_version": crate::profile::FORMAT_VERSION,
        "augur_version": "test",
        "created_unix": 0,
        "device": {"cpu_model": "test", "cores": 4, "caches": [], "kernel": "", "arch": ""},
        "runtime": crate::profile::tract_runtime(),
        "threads": threads,
        "budget": "quick",
        "fusion": FusionRules::tract_default(),
        "roofline": {"flops_per_second": gflops * 1e9, "bytes_per_second": gflops * 1e9,
                      "overhead_seconds": 1e-6},
        "regressors": {},
        "measurements": []
    });
    serde_json::from_value(v).unwrap()
}

fn cnn(width: usize) -> Graph {
    let mut b = GraphBuilder::new(&format!("cnn{width}"));
    let x = b.input(&[1, 3, 64, 64]);
    let mut h = x;
    for (i, c) in [width, 2 * width, 4 * width].into_iter().enumerate() {
        let s = if i == 0 { 1 } else { 2 };
        h = b
            .conv(h, c, [3, 3], [s, s], [1, 1, 1, 1], [1, 1], 1, true)
            .unwrap();
        h = b.relu(h).unwrap();
    }
    let s = b.global_avg_pool(h).unwrap();
    let r = b.reshape(s, &[1, -1]).unwrap();
    let f = b.gemm(r, 10, true).unwrap();
    b.finish(&[f]).unwrap()
}

struct Board {
    predictor: Predictor,
    d: Decomposition,
    base: BasePrediction,
    threads: usize,
}

fn board(g: &Graph, gflops: f64, threads: usize) -> Board {
    board_of(g, profile(gflops, threads))
}

fn board_of(g: &Graph, p: Profile) -> Board {
    let threads = p.threads;
    let d = decompose(g, &p.fusion).unwrap();
    let predictor = Predictor::new(Some(p), Roofline::default());
    let base = predictor.base(&d);
    Board {
        predictor,
        d,
        base,
        threads,
    }
}

/// The plan of `g` on `here` (quiet, its own thread count) with `remotes`.
fn plan_here(g: &Graph, here: &Board, remotes: &[Remote], ask: &Ask) -> Result<Plan, PlanError> {
    plan_in(g, here, remotes, ask, &Snapshot::default())
}

/// [`plan_here`] with this board in `state`.
fn plan_in(
    g: &Graph,
    here: &Board,
    remotes: &[Remote],
    ask: &Ask,
    state: &Snapshot,
) -> Result<Plan, PlanError> {
    let m = Prepared::new(g, &here.d, CutOptions::default());
    let threads = [here.threads];
    let local = Local {
        predictor: &here.predictor,
        d: &here.d,
        base: &here.base,
        state,
        threads: &threads,
        learned: None,
    };
    plan(&m, &local, remotes, ask)
}

fn plan_of(g: &Graph, here: &Board, there: Option<&Board>, ask: &Ask) -> Result<Plan, PlanError> {
    let remotes: Vec<Remote> = there
        .iter()
        .map(|b| Remote {
            name: None,
            source: Source::Profile {
                predictor: &b.predictor,
                d: &b.d,
                base: &b.base,
            },
            threads: b.threads,
        })
        .collect();
    plan_here(g, here, &remotes, ask)
}

fn link(mbps: f64, rtt_ms: f64) -> Option<Link> {
    Some(Link::new(mbps, rtt_ms).unwrap())
}

#[test]
fn alone_the_board_offers_local_only() {
    let g = cnn(16);
    let here = board(&g, 2.0, 1);
    let p = plan_of(&g, &here, None, &Ask::default()).unwrap();
    assert_eq!(p.options.len(), 1);
    let o = &p.options[0];
    assert_eq!(o.placement, Placement::Local);
    assert_eq!(o.cut, None);
    assert_eq!(o.p_deadline, None);
    assert!(
        o.latency_ms > 0.0 && o.interval_ms[0] <= o.latency_ms && o.latency_ms <= o.interval_ms[1]
    );
    assert_eq!(o.local_peak_memory_bytes, here.d.peak_memory_bytes);
}

#[test]
fn splits_add_up_and_the_options_are_ranked() {
    let g = cnn(16);
    let here = board(&g, 1.0, 1);
    let there = board(&g, 50.0, 2);
    let ask = Ask {
        link: link(100.0, 2.0),
        ..Ask::default()
    };
    let p = plan_of(&g, &here, Some(&there), &ask).unwrap();
    let m = Prepared::new(&g, &here.d, CutOptions::default());
    // Local, each cut, remote.
    assert_eq!(p.options.len(), 1 + m.cuts.len() + 1);
    assert!(
        p.options
            .windows(2)
            .all(|w| w[0].latency_ms <= w[1].latency_ms)
    );
    let local = p
        .options
        .iter()
        .find(|o| o.placement == Placement::Local)
        .unwrap();
    let whole_remote = p
        .options
        .iter()
        .find(|o| o.placement == Placement::Remote)
        .unwrap();
    for o in p.options.iter().filter(|o| o.placement == Placement::Split) {
        let c = m
            .cuts
            .iter()
            .find(|c| Some(&c.name) == o.cut.as_ref())
            .unwrap();
        let transfer = ask.link.unwrap().transfer_ms(o.transfer_bytes);
        assert!((o.latency_ms - (o.local_ms + transfer + o.remote_ms)).abs() < 1e-9);
        assert_eq!(o.transfer_bytes, c.bytes + 10 * 4);
        // The prefix is part of the whole, here and there.
        assert!(o.local_ms > 0.0 && o.local_ms < local.local_ms);
        assert!(o.remote_ms > 0.0 && o.remote_ms < whole_remote.remote_ms);
        assert!(o.local_peak_memory_bytes <= local.local_peak_memory_bytes);
        assert!(o.interval_ms[0] < o.latency_ms && o.latency_ms < o.interval_ms[1]);
    }
    // A board fifty times faster over a fast link wins over running here.
    assert_ne!(p.options[0].placement, Placement::Local);
    // Over a slow link, the data is better kept here.
    let slow = Ask {
        link: link(0.01, 200.0),
        ..Ask::default()
    };
    let p = plan_of(&g, &here, Some(&there), &slow).unwrap();
    assert_eq!(p.options[0].placement, Placement::Local);
}

#[test]
fn ranking_by_memory_puts_the_smallest_local_footprint_first() {
    let g = cnn(16);
    let here = board(&g, 1.0, 1);
    let there = board(&g, 4.0, 1);
    let ask = Ask {
        link: link(100.0, 2.0),
        by: RankBy::Memory,
        ..Ask::default()
    };
    let p = plan_of(&g, &here, Some(&there), &ask).unwrap();
    assert!(
        p.options
            .windows(2)
            .all(|w| w[0].local_peak_memory_bytes <= w[1].local_peak_memory_bytes)
    );
    assert_eq!(p.options[0].placement, Placement::Remote);
    assert_eq!(p.options[0].local_peak_memory_bytes, 3 * 64 * 64 * 4);
}

#[test]
fn deadline_probabilities_follow_the_deadline() {
    let g = cnn(16);
    let here = board(&g, 1.0, 1);
    let loose = plan_of(
        &g,
        &here,
        None,
        &Ask {
            deadline_ms: Some(1e5),
            ..Ask::default()
        },
    )
    .unwrap();
    let ms = loose.options[0].latency_ms;
    assert!(loose.options[0].p_deadline.unwrap() > 0.99);
    let tight = plan_of(
        &g,
        &here,
        None,
        &Ask {
            deadline_ms: Some(ms / 10.0),
            ..Ask::default()
        },
    )
    .unwrap();
    assert!(tight.options[0].p_deadline.unwrap() < 0.01);
}

#[test]
fn energy_ranks_the_options_that_run_here_and_needs_power_figures() {
    let g = cnn(8);
    let energy = Ask {
        by: RankBy::Energy,
        link: link(100.0, 1.0),
        ..Ask::default()
    };
    let there = board(&g, 4.0, 1);
    // No power figures: the ranking cannot be made, and says why.
    let plain = board(&g, 1.0, 1);
    match plan_of(&g, &plain, Some(&there), &energy) {
        Err(PlanError::Unavailable(why)) => assert!(why.contains("power"), "{why}"),
        other => panic!("{other:?}"),
    }
    // With them: convolutions draw 3 W above idle, everything else 1 W.
    let mut p = profile(1.0, 1);
    p.power = Some(
        serde_json::from_value(serde_json::json!({
            "source": "test", "idle_watts": 2.0,
            "above_idle_watts": {"conv": 3.0, "matmul": 1.0, "pool": 1.0, "elementwise": 1.0}
        }))
        .unwrap(),
    );
    let d = decompose(&g, &p.fusion).unwrap();
    let predictor = Predictor::new(Some(p), Roofline::default());
    let base = predictor.base(&d);
    let here = Board {
        predictor,
        d,
        base,
        threads: 1,
    };
    let plan = plan_of(&g, &here, Some(&there), &energy).unwrap();
    let first = &plan.options[0];
    assert_eq!(first.placement, Placement::Local);
    let j = first.energy_joules.unwrap();
    // Between 1 W and 3 W over the local latency.
    assert!(
        j >= first.latency_ms / 1e3 * 1.0 * 0.999 && j <= first.latency_ms / 1e3 * 3.0 * 1.001,
        "{j} J in {} ms",
        first.latency_ms
    );
    assert!(plan.options.len() > 2);
    for o in &plan.options[1..] {
        assert_eq!(o.energy_joules, None, "the link's energy is not known");
    }
    // The unknown ones follow by latency.
    assert!(
        plan.options[1..]
            .windows(2)
            .all(|w| w[0].latency_ms <= w[1].latency_ms)
    );
}

#[test]
fn bad_asks_are_refused() {
    let g = cnn(8);
    let here = board(&g, 1.0, 1);
    let there = board(&g, 4.0, 1);
    // A remote board without a link.
    assert!(matches!(
        plan_of(&g, &here, Some(&there), &Ask::default()),
        Err(PlanError::Invalid(_))
    ));
    for d in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e12] {
        let ask = Ask {
            deadline_ms: Some(d),
            ..Ask::default()
        };
        assert!(
            matches!(plan_of(&g, &here, None, &ask), Err(PlanError::Invalid(_))),
            "{d}"
        );
    }
    for (b, r) in [
        (0.0, 1.0),
        (-5.0, 1.0),
        (f64::NAN, 1.0),
        (10.0, -1.0),
        (10.0, f64::INFINITY),
    ] {
        assert!(Link::new(b, r).is_err(), "{b} {r}");
    }
    assert!("speed".parse::<RankBy>().is_err());
    assert_eq!("memory".parse::<RankBy>(), Ok(RankBy::Memory));
}

#[test]
fn an_option_has_exactly_the_contract_keys() {
    // Without power figures: `energy_joules` is added only where known.
    let g = cnn(8);
    let here = board(&g, 1.0, 1);
    let p = plan_of(&g, &here, None, &Ask::default()).unwrap();
    let v = serde_json::to_value(&p).unwrap();
    let o = v["options"][0].as_object().unwrap();
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cut",
            "interval_ms",
            "latency_ms",
            "local_ms",
            "local_peak_memory_bytes",
            "p_deadline",
            "placement",
            "remote_ms",
            "threads",
            "transfer_bytes"
        ]
    );
    assert_eq!(o["placement"], "local");
    assert!(o["cut"].is_null() && o["p_deadline"].is_null());
}

#[test]
fn the_largest_variant_that_meets_the_deadline_is_chosen() {
    let graphs: Vec<Graph> = [8, 16, 32].into_iter().map(cnn).collect();
    let boards: Vec<Board> = graphs.iter().map(|g| board(g, 1.0, 1)).collect();
    let solo: Vec<f64> = graphs
        .iter()
        .zip(&boards)
        .map(|(g, b)| plan_of(g, b, None, &Ask::default()).unwrap().options[0].latency_ms)
        .collect();
    assert!(solo.windows(2).all(|w| w[0] < w[1]), "{solo:?}");
    let pick = |deadline: f64| {
        let ask = Ask {
            deadline_ms: Some(deadline),
            ..Ask::default()
        };
        let plans: Vec<Plan> = graphs
            .iter()
            .zip(&boards)
            .map(|(g, b)| plan_of(g, b, None, &ask).unwrap())
            .collect();
        let cands: Vec<Candidate> = plans
            .iter()
            .zip(&boards)
            .zip(["w8", "w16", "w32"])
            .map(|((p, b), name)| Candidate {
                model: name,
                macs: b.d.macs,
                plan: p,
            })
            .collect();
        let c = choose(&cands);
        assert_eq!(c.fastest.len(), 3);
        assert!(c.fastest.iter().all(|f| f.board == "local" && f.live));
        c.choice.map(|c| c.model)
    };
    // Twice the middle one's time: the middle one is met, the largest (about 4× it) is not.
    assert_eq!(pick(solo[1] * 2.0).as_deref(), Some("w16"));
    assert_eq!(pick(solo[2] * 2.0).as_deref(), Some("w32"));
    assert_eq!(pick(solo[0] / 4.0), None);
}

/// What a daemon running `b` would answer: kernel `i` takes `i + 1` ms, over the nodes it runs.
fn answered_by(b: &Board) -> Answered {
    let kernels: Vec<AnsweredKernel> =
        b.d.kernel_nodes
            .iter()
            .enumerate()
            .map(|(i, n)| AnsweredKernel {
                latency_ms: (i + 1) as f64,
                nodes: [*n.iter().min().unwrap(), *n.iter().max().unwrap()],
                suffix_ms: None,
            })
            .collect();
    let total: f64 = kernels.iter().map(|k| k.latency_ms).sum();
    Answered {
        kernels,
        latency_ms: total,
        interval_ms: [0.8 * total, 1.5 * total],
    }
}

fn plan_answered(g: &Graph, here: &Board, a: &Answered, ask: &Ask) -> Result<Plan, PlanError> {
    let remotes = [Remote {
        name: None,
        source: Source::Answered(a),
        threads: 3,
    }];
    plan_here(g, here, &remotes, ask)
}

#[test]
fn an_answered_remote_part_is_the_sum_of_its_kernels_after_the_cut() {
    let g = cnn(16);
    let here = board(&g, 1.0, 1);
    let there = board(&g, 50.0, 2);
    let a = answered_by(&there);
    let ask = Ask {
        link: link(100.0, 2.0),
        ..Ask::default()
    };
    let p = plan_answered(&g, &here, &a, &ask).unwrap();
    let m = Prepared::new(&g, &here.d, CutOptions::default());
    let bounds = cuts::kernel_boundaries(&there.d, m.nodes);
    let splits: Vec<&PlanOption> = p
        .options
        .iter()
        .filter(|o| o.placement == Placement::Split)
        .collect();
    assert_eq!(splits.len(), m.cuts.len());
    for o in &splits {
        let c = m.cuts.iter().find(|c| Some(&c.name) == o.cut.as_ref());
        let k = bounds[c.unwrap().position].unwrap();
        let after: f64 = a.kernels[k..].iter().map(|k| k.latency_ms).sum();
        assert!((o.remote_ms - after).abs() < 1e-9, "{o:?}");
        assert!(o.remote_live);
    }
    let whole = p
        .options
        .iter()
        .find(|o| o.placement == Placement::Remote)
        .unwrap();
    assert_eq!(whole.remote_ms, a.latency_ms);
    assert_eq!(whole.threads, 3);
    assert!(whole.remote_live);
    let transfer = ask.link.unwrap().transfer_ms(whole.transfer_bytes);
    assert!((whole.interval_ms[0] - (transfer + 0.8 * a.latency_ms)).abs() < 1e-9);
    assert!((whole.interval_ms[1] - (transfer + 1.5 * a.latency_ms)).abs() < 1e-9);
    let local = p
        .options
        .iter()
        .find(|o| o.placement == Placement::Local)
        .unwrap();
    assert!(!local.remote_live);
    // `remote_live` is in the JSON only where true.
    let v = serde_json::to_value(whole).unwrap();
    assert_eq!(v["remote_live"], true);
    assert!(
        serde_json::to_value(local)
            .unwrap()
            .get("remote_live")
            .is_none()
    );
}

#[test]
fn cuts_inside_an_answered_kernel_are_skipped() {
    let g = cnn(16);
    let here = board(&g, 1.0, 1);
    let there = board(&g, 50.0, 2);
    let m = Prepared::new(&g, &here.d, CutOptions::default());
    assert!(m.cuts.len() >= 2, "{:?}", m.cuts);
    // The daemon fused the kernels on both sides of the first cut into one.
    let mut a = answered_by(&there);
    let k = cuts::kernel_boundaries(&there.d, m.nodes)[m.cuts[0].position].unwrap();
    let merged = AnsweredKernel {
        latency_ms: a.kernels[k - 1].latency_ms + a.kernels[k].latency_ms,
        nodes: [a.kernels[k - 1].nodes[0], a.kernels[k].nodes[1]],
        suffix_ms: None,
    };
    a.kernels.splice(k - 1..=k, [merged]);
    let ask = Ask {
        link: link(100.0, 2.0),
        ..Ask::default()
    };
    let p = plan_answered(&g, &here, &a, &ask).unwrap();
    let cuts: Vec<&str> = p.options.iter().filter_map(|o| o.cut.as_deref()).collect();
    assert_eq!(cuts.len(), m.cuts.len() - 1);
    assert!(!cuts.contains(&m.cuts[0].name.as_str()));
    // One kernel over the whole graph: no cut at all, the whole model still offered there.
    let n = m.nodes;
    let one = Answered {
        kernels: vec![AnsweredKernel {
            latency_ms: 5.0,
            nodes: [0, n - 1],
            suffix_ms: None,
        }],
        latency_ms: 5.0,
        interval_ms: [4.0, 6.0],
    };
    let p = plan_answered(&g, &here, &one, &ask).unwrap();
    assert_eq!(p.options.len(), 2);
    assert!(p.options.iter().all(|o| o.placement != Placement::Split));
}

#[test]
fn an_answer_of_another_graph_is_refused() {
    let g = cnn(16);
    let here = board(&g, 1.0, 1);
    let ask = Ask {
        link: link(100.0, 2.0),
        ..Ask::default()
    };
    let n = g.nodes.len();
    let of = |nodes: [usize; 2], ms: f64| Answered {
        kernels: vec![AnsweredKernel {
            latency_ms: ms,
            nodes,
            suffix_ms: None,
        }],
        latency_ms: 1.0,
        interval_ms: [0.5, 2.0],
    };
    for (a, says) in [
        (of([0, n], 1.0), "not within"),
        (of([3, 2], 1.0), "not within"),
        (of([0, 1], f64::NAN), "no finite latency"),
        (
            Answered {
                kernels: vec![],
                latency_ms: 1.0,
                interval_ms: [0.5, 2.0],
            },
            "no kernels",
        ),
    ] {
        match plan_answered(&g, &here, &a, &ask) {
            Err(PlanError::Invalid(e)) => assert!(e.contains(says), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}

/// `board` with a cache curve that is hot up to 3 MiB and ten times dearer from 6 MiB.
fn cached_board(g: &Graph, gflops: f64, threads: usize) -> Board {
    let mut p = profile(gflops, threads);
    p.cache_model = true;
    p.reference.cache = crate::profile::CacheCurve::from_bandwidths(&[
        (1 << 20, 100e9),
        (3 << 20, 100e9),
        (6 << 20, 10e9),
    ]);
    board_of(g, p)
}

#[test]
fn a_prefix_that_fits_the_caches_is_priced_as_it_runs_alone_not_as_its_share_of_the_whole() {
    let g = cnn(128);
    let ask = Ask {
        link: link(100.0, 2.0),
        ..Ask::default()
    };
    let (plain, cached) = (board(&g, 1000.0, 1), cached_board(&g, 1000.0, 1));
    assert!(crate::predict::footprint(&cached.d) > (6 << 20) as f64);
    let first = |b: &Board| {
        let p = plan_of(&g, b, Some(b), &ask).unwrap();
        let local = p.options.iter().find(|o| o.placement == Placement::Local);
        let first_cut = p
            .options
            .iter()
            .filter(|o| o.placement == Placement::Split)
            .min_by(|a, b| a.local_ms.total_cmp(&b.local_ms));
        (local.unwrap().latency_ms, first_cut.unwrap().clone())
    };
    let ((whole_plain, cut_plain), (whole_cached, cut_cached)) = (first(&plain), first(&cached));
    // The whole model outgrows the caches: dearer with the curve.
    assert!(
        whole_cached > whole_plain * 1.05,
        "{whole_cached} vs {whole_plain}"
    );
    // Its first kernel alone fits: priced as it was timed, though inside the whole it pays.
    let k0 = &cached.d.kernels[0];
    assert!(crate::predict::footprint_of(std::slice::from_ref(k0)) < (3 << 20) as f64);
    assert!(cached.base.cache_ms[0] > 0.0);
    assert!((cut_cached.local_ms - cut_plain.local_ms).abs() < 1e-9 * cut_plain.local_ms.max(1.0));
    // The suffix (the rest, still larger than the caches) keeps a cost beyond the plain board's.
    assert!(cut_cached.remote_ms > cut_plain.remote_ms);
}

#[test]
fn a_daemon_s_suffix_figures_price_the_suffix_as_its_profile_would() {
    let g = cnn(128);
    let ask = Ask {
        link: link(100.0, 2.0),
        ..Ask::default()
    };
    let (here, there) = (board(&g, 1000.0, 1), cached_board(&g, 1000.0, 1));
    // What the daemon running `there` answers with `"kernels": true`.
    let mut p = there
        .predictor
        .predict(&there.d, &there.base, &Snapshot::default(), 1, true);
    suffixes(
        &there.predictor,
        &there.d,
        &there.base,
        &mut p,
        &Snapshot::default(),
    );
    let kernels: Vec<AnsweredKernel> = p
        .kernels
        .iter()
        .flatten()
        .map(|k| AnsweredKernel {
            latency_ms: k.latency_ms,
            nodes: k.nodes.unwrap(),
            suffix_ms: k.suffix_ms,
        })
        .collect();
    assert!(kernels.iter().all(|k| k.suffix_ms.is_some()));
    let sum: f64 = kernels.iter().map(|k| k.latency_ms).sum();
    // The whole model from its first kernel is the whole model's own figure, not a part's.
    assert!((kernels[0].suffix_ms.unwrap() - sum).abs() < 1e-9 * sum);
    let answered = Answered {
        kernels,
        latency_ms: p.latency_ms,
        interval_ms: p.interval_ms,
    };
    let by_daemon = plan_answered(&g, &here, &answered, &ask).unwrap();
    let by_file = plan_of(&g, &here, Some(&there), &ask).unwrap();
    let m = Prepared::new(&g, &here.d, CutOptions::default());
    let bounds = cuts::kernel_boundaries(&there.d, m.nodes);
    let by_cut = |p: &Plan, cut: &str| {
        p.options
            .iter()
            .find(|o| o.placement == Placement::Split && o.cut.as_deref() == Some(cut))
            .map(|o| o.remote_ms)
            .unwrap()
    };
    let mut cheaper = 0;
    for c in &m.cuts {
        let (daemon, file) = (by_cut(&by_daemon, &c.name), by_cut(&by_file, &c.name));
        assert!(
            (daemon - file).abs() < 1e-9 * file.max(1.0),
            "{}: {daemon} vs {file}",
            c.name
        );
        // A tail that fits the caches costs less than its share of the whole.
        let k = bounds[c.position].unwrap();
        let share: f64 = answered.kernels[k..].iter().map(|k| k.latency_ms).sum();
        cheaper += usize::from(daemon < share * 0.99);
    }
    assert!(cheaper > 0, "no suffix ran cheaper alone");
}

#[test]
fn a_part_is_priced_by_the_cache_curve_the_board_streams_now() {
    let g = cnn(128);
    let b = cached_board(&g, 1000.0, 1);
    let ask = Ask {
        link: link(100.0, 2.0),
        ..Ask::default()
    };
    let whole = crate::predict::footprint(&b.d);
    let live = b
        .predictor
        .predict(&b.d, &b.base, &Snapshot::default(), 1, true);
    let live: Vec<f64> = live
        .kernels
        .iter()
        .flatten()
        .map(|k| k.latency_ms)
        .collect();
    let m = Prepared::new(&g, &b.d, CutOptions::default());
    let split = |p: &Plan, cut: &str| {
        p.options
            .iter()
            .find(|o| o.placement == Placement::Split && o.cut.as_deref() == Some(cut))
            .cloned()
            .unwrap()
    };
    // Now the knee sits between the smallest part's working set and the whole's.
    let smallest = crate::predict::footprint_of(&b.d.kernels[..m.cuts[0].kernels_before]);
    let (hot, cold) = (1.0 / 100e9, 1.0 / 10e9);
    let mut now = Snapshot::default();
    now.probe.cache_curve = [(smallest, hot), (whole, cold)]
        .map(|(b, s)| crate::sense::snapshot::CachePoint {
            bytes: b.ceil() as u64,
            seconds_per_byte: s,
        })
        .to_vec();
    let curve = crate::predict::live_cache_curve(&now).unwrap();
    // Splits need a remote board: this board's profile stands in.
    let remotes = [Remote {
        name: None,
        source: Source::Profile {
            predictor: &b.predictor,
            d: &b.d,
            base: &b.base,
        },
        threads: 1,
    }];
    let with_knee = plan_in(&g, &b, &remotes, &ask, &now).unwrap();
    let quiet = plan_in(&g, &b, &remotes, &ask, &Snapshot::default()).unwrap();
    let mut cheaper = 0;
    for c in &m.cuts {
        let k = c.kernels_before;
        let part = crate::predict::footprint_of(&b.d.kernels[..k]);
        let delta = curve.seconds_per_byte(part).unwrap() - curve.seconds_per_byte(whole).unwrap();
        let want: f64 = (0..k)
            .map(|i| {
                let bytes = crate::predict::recycled_bytes(
                    &b.d.kernels[i],
                    CacheBytes::WeightsAndWrites,
                    false,
                );
                (live[i] + bytes * delta * 1e3).max(0.0)
            })
            .sum();
        let got = split(&with_knee, &c.name).local_ms;
        assert!(
            (got - want).abs() < 1e-9 * want,
            "{}: {got} vs {want}",
            c.name
        );
        let share: f64 = live[..k].iter().sum();
        assert!(
            got <= share * (1.0 + 1e-12),
            "{}: {got} over its share {share}",
            c.name
        );
        cheaper += usize::from(got < share * 0.99);
        // The remote board here is a profile file, a quiet board: its suffixes keep the
        // calibration's curve whatever this board streams now.
        assert_eq!(
            split(&with_knee, &c.name).remote_ms,
            split(&quiet, &c.name).remote_ms
        );
    }
    assert!(cheaper > 0, "no prefix priced below its share of the whole");
    // One point says nothing of the knee: the calibration's curve stands.
    now.probe.cache_curve.truncate(1);
    assert!(crate::predict::live_cache_curve(&now).is_none());
    let one = plan_in(&g, &b, &remotes, &ask, &now).unwrap();
    for c in &m.cuts {
        assert_eq!(
            split(&one, &c.name).local_ms,
            split(&quiet, &c.name).local_ms
        );
    }
}
