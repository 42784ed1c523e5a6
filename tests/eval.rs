//! The evaluation protocol on this board, in miniature: two small models, two passes, short
//! windows, no profile (roofline predictions; the figures are not what is checked here, the
//! protocol is).
mod common;

use augur::eval::protocol::{self, Passes, Plan, Subject};
use augur::eval::{Board, FlopsProxy};
use augur::kernels::{FusionRules, decompose};
use augur::predict::Predictor;
use augur::profile::Roofline;
use common::zoo_model as zoo;

#[test]
fn a_small_run_reports_every_pass_and_the_floor_from_the_previous_pass() {
    let predictor = Predictor::new(None, Roofline::default());
    let backend = augur::runtime::TractBackend::default();
    let mut subjects = Vec::new();
    let mut prepared = Vec::new();
    for name in ["squeezenet1_1_224", "mobilenet_v3_small_224"] {
        let path = zoo(name);
        let g = augur::model::import_path(&path, None).unwrap();
        let d = decompose(&g, &FusionRules::tract_default()).unwrap();
        let base = predictor.base(&d);
        prepared.push(backend.prepare(&std::fs::read(&path).unwrap()).unwrap());
        subjects.push(Subject {
            name: name.into(),
            d,
            base,
        });
    }
    let mut board = Board::new(prepared, 0.1, 3, 1, false).unwrap();
    for observe in [false, true] {
        let plan = Plan {
            passes: Passes::Fixed(2),
            observe,
            seed: 7,
            threads: 1,
            flops: Some(FlopsProxy { a: 1e-6, b: 0.0 }),
        };
        let mut events = 0;
        let r = protocol::run(&predictor, &subjects, &mut board, &plan, &mut |_| {
            events += 1
        })
        .unwrap();
        assert_eq!(events, 4);
        assert_eq!((r.passes, r.observe, r.models.len()), (2, observe, 2));
        let mut floor_pairs = Vec::new();
        for m in &r.models {
            assert_eq!(m.passes.len(), 2);
            assert_eq!(m.passes[0].pass, 1);
            assert_eq!(m.passes[1].pass, 2);
            assert_eq!(m.passes[0].observed_before_own, 0);
            let (m1, m2) = (m.passes[0].measured_ms, m.passes[1].measured_ms);
            assert!(m1 > 0.0 && m2 > 0.0);
            assert!((m.measured_ms - (m1 + m2) / 2.0).abs() < 1e-9);
            // The floor of a model measured twice: the second measurement predicted by the first.
            assert!((m.floor_mape_pct - ((m1 - m2) / m2).abs() * 100.0).abs() < 1e-9);
            floor_pairs.push((m1, m2));
            assert!(m.predicted_ms > 0.0 && m.baseline_ms.is_some());
        }
        assert_eq!(r.noise_floor.n, 2);
        let want = floor_pairs
            .iter()
            .map(|(a, b)| ((a - b) / b).abs())
            .sum::<f64>()
            / 2.0
            * 100.0;
        assert!((r.noise_floor.mape_pct - want).abs() < 1e-9);
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "summary",
            "per_pass",
            "first_pass",
            "static",
            "baseline_flops",
            "noise_floor",
        ] {
            assert!(v[key]["mape_pct"].as_f64().is_some(), "{key}");
        }
        // Every (pass, model) prediction asked each deadline of the ladder.
        let rel = &v["reliability"];
        let ladder = rel["ladder"].as_array().unwrap().len();
        assert_eq!(rel["n"].as_u64().unwrap() as usize, 2 * 2 * ladder);
        assert_eq!(rel["bins"].as_array().unwrap().len(), 10);
        assert!((0.0..=1.0).contains(&rel["brier"].as_f64().unwrap()));
        if observe {
            // Every second-pass prediction came after the learner was shown the model's first
            // measurement (which it may refuse: an uncalibrated prediction can be far off).
            for m in &r.models {
                let took = m.passes[0].learned.expect("observed");
                assert_eq!(m.passes[1].observed_before_own, u64::from(took));
                assert!(m.passes[1].learned.is_some());
            }
            let refused = r
                .models
                .iter()
                .flat_map(|m| &m.passes)
                .filter(|p| p.learned == Some(false))
                .count();
            assert_eq!(r.observations_refused, refused as u64);
        } else {
            assert!(r.models.iter().all(|m| m.passes[0].learned.is_none()));
        }
    }
}
