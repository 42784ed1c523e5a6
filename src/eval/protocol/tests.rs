use super::*;
use crate::profile::Roofline;

fn subject(name: &str, base_ms: f64) -> Subject {
    let d: Decomposition = serde_json::from_value(serde_json::json!({
        "model": name, "runtime": "test", "macs": 1000, "params": 0, "weights_bytes": 0,
        "peak_activation_bytes": 0, "peak_memory_bytes": 0, "input_shapes": [], "kernels": []
    }))
    .unwrap();
    let mut kind_shares = [0.0; crate::predict::learner::KINDS];
    kind_shares[0] = 1.0;
    Subject {
        name: name.into(),
        d,
        base: BasePrediction {
            latency_ms: base_ms,
            kernels: vec![(base_ms, false)],
            memory_share: vec![0.0],
            fallback_kernels: 0,
            peak_memory_bytes: 0,
            calibrated: true,
            kind_shares,
            cache_ms: Vec::new(),
        },
    }
}

/// A board where model `i` takes `truth[i]` × the pass's factor, with the calls recorded.
struct Fake {
    truth: Vec<f64>,
    factor: Vec<f64>,
    calls: Vec<usize>,
    measured: usize,
}

impl Bench for Fake {
    fn state(&mut self) -> Result<Snapshot, EvalError> {
        Ok(Snapshot::default())
    }
    fn measure(&mut self, i: usize) -> Result<f64, EvalError> {
        let pass = self.measured / self.truth.len();
        self.measured += 1;
        self.calls.push(i);
        Ok(self.truth[i] * self.factor[pass.min(self.factor.len() - 1)])
    }
}

fn plan(passes: usize, observe: bool) -> Plan {
    Plan {
        passes: Passes::Fixed(passes),
        observe,
        seed: 3,
        threads: 1,
        flops: Some(FlopsProxy { a: 0.01, b: 0.0 }),
    }
}

#[test]
fn every_pass_visits_every_model_and_the_floor_uses_the_previous_pass() {
    let subjects = vec![subject("a", 10.0), subject("b", 20.0), subject("c", 5.0)];
    let mut bench = Fake {
        truth: vec![10.0, 20.0, 5.0],
        factor: vec![1.0, 1.2, 0.9],
        calls: Vec::new(),
        measured: 0,
    };
    let predictor = Predictor::new(None, Roofline::default());
    let mut seen = 0;
    let r = run(
        &predictor,
        &subjects,
        &mut bench,
        &plan(3, false),
        &mut |p| {
            seen += 1;
            assert_eq!(p.expected, 9);
            assert_eq!(p.done, seen);
        },
    )
    .unwrap();
    assert_eq!(seen, 9);
    assert_eq!(r.passes, 3);
    for pass in bench.calls.chunks(3) {
        let mut v = pass.to_vec();
        v.sort();
        assert_eq!(v, vec![0, 1, 2]);
    }
    for m in &r.models {
        assert_eq!(m.passes.len(), 3);
        let ms: Vec<f64> = m.passes.iter().map(|p| p.measured_ms).collect();
        // 1.0, 1.2, 0.9 × truth: the floor is the mean of |1.0/1.2 − 1| and |1.2/0.9 − 1|.
        let want = ((1.2 - 1.0) / 1.2 + (1.2 - 0.9) / 0.9) / 2.0 * 100.0;
        assert!(
            (m.floor_mape_pct - want).abs() < 1e-9,
            "{}",
            m.floor_mape_pct
        );
        let mean = ms.iter().sum::<f64>() / 3.0;
        assert!((m.measured_ms - mean).abs() < 1e-9);
        assert!((m.error_pct - error_pct(m.predicted_ms, m.measured_ms)).abs() < 1e-9);
        assert!((m.baseline_ms.unwrap() - 10.0).abs() < 1e-9);
    }
    assert_eq!(r.noise_floor.n, 6);
    let want = ((1.2 - 1.0) / 1.2 + (1.2 - 0.9) / 0.9) / 2.0 * 100.0;
    assert!((r.noise_floor.mape_pct - want).abs() < 1e-9);
    assert_eq!(r.per_pass.n, 9);
    assert_eq!(r.summary.n, 3);
    assert!(r.baseline_flops.is_some());
}

#[test]
fn with_observe_a_first_prediction_follows_other_models_observations_only() {
    // The board runs every model 1.3× slower than its profile says, from the start.
    let names = ["a", "b", "c", "d", "e", "f"];
    let subjects: Vec<Subject> = names.iter().map(|n| subject(n, 10.0)).collect();
    let mut bench = Fake {
        truth: vec![13.0; names.len()],
        factor: vec![1.0],
        calls: Vec::new(),
        measured: 0,
    };
    let predictor = Predictor::new(None, Roofline::default());
    let r = run(
        &predictor,
        &subjects,
        &mut bench,
        &plan(2, true),
        &mut |_| {},
    )
    .unwrap();
    let first_order = &bench.calls[..names.len()];
    for (pos, &i) in first_order.iter().enumerate() {
        let p1 = &r.models[i].passes[0];
        assert_eq!(p1.observed_before_own, 0);
        assert_eq!(p1.observed_before_all, pos as u64);
        assert_eq!(p1.learned, Some(true));
        assert_eq!(r.models[i].passes[1].observed_before_own, 1);
    }
    // Cross-model learning: the last model of pass 1 is predicted much better than the first.
    let err = |pos: usize| r.models[first_order[pos]].passes[0].error_pct.abs();
    assert!(err(0) > 20.0, "{}", err(0));
    assert!(
        err(names.len() - 1) < err(0) / 2.0,
        "{}",
        err(names.len() - 1)
    );
    assert!(r.first_pass.mape_pct < r.static_.mape_pct);
    assert_eq!(r.observations_refused, 0);
}

#[test]
fn a_span_runs_passes_until_the_time_is_spent() {
    let subjects = vec![subject("a", 10.0)];
    let mut bench = Fake {
        truth: vec![10.0],
        factor: vec![1.0],
        calls: Vec::new(),
        measured: 0,
    };
    let predictor = Predictor::new(None, Roofline::default());
    let mut p = plan(0, false);
    p.passes = Passes::Span {
        seconds: 0.0,
        min: 2,
    };
    let r = run(&predictor, &subjects, &mut bench, &p, &mut |_| {}).unwrap();
    assert_eq!(r.passes, 2);
    let none: Vec<Subject> = Vec::new();
    assert!(matches!(
        run(&predictor, &none, &mut bench, &p, &mut |_| {}),
        Err(EvalError::Empty)
    ));
}

#[test]
fn every_pass_and_model_asks_every_deadline_of_the_ladder() {
    // A board 1.1× slower than predicted in every pass: each prediction's deadlines at or above
    // 1.1 × the prediction are met, those below are missed.
    let subjects = vec![subject("a", 10.0), subject("b", 20.0)];
    let mut bench = Fake {
        truth: vec![11.0, 22.0],
        factor: vec![1.0],
        calls: Vec::new(),
        measured: 0,
    };
    let predictor = Predictor::new(None, Roofline::default());
    let r = run(
        &predictor,
        &subjects,
        &mut bench,
        &plan(3, false),
        &mut |_| {},
    )
    .unwrap();
    let ladder = super::reliability::LADDER;
    assert_eq!(r.reliability.n, 2 * 3 * ladder.len());
    let rec = &r.models[0].passes[0];
    assert!(rec.interval_ms[0] < rec.predicted_ms && rec.predicted_ms < rec.interval_ms[1]);
    let met: usize = r
        .reliability
        .bins
        .iter()
        .map(|b| (b.observed.unwrap_or(0.0) * b.count as f64).round() as usize)
        .sum();
    let over = r
        .models
        .iter()
        .flat_map(|m| &m.passes)
        .map(|p| {
            ladder
                .iter()
                .filter(|f| p.measured_ms <= p.predicted_ms * **f)
                .count()
        })
        .sum::<usize>();
    assert_eq!(met, over);
    assert!(over > 0 && over < r.reliability.n);
}
