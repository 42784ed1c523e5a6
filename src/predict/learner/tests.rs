use super::*;
use proptest::prelude::*;

#[test]
fn converges_on_synthetic_data() {
    // Truth: ln(obs/pred) = 0.05 + 0.8·cpu + 0.3·mem, plus a per-model bias.
    let mut l = Learner::new(16);
    let mut seed = 7u64;
    let mut rnd = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as f64 / (1u64 << 31) as f64
    };
    for i in 0..400 {
        let phi = [1.0, rnd(), rnd(), 0.0];
        let model = format!("m{}", i % 4);
        let bias = [0.0, 0.1, -0.1, 0.05][i % 4];
        let y = 0.05 + 0.8 * phi[1] + 0.3 * phi[2] + bias;
        l.observe(&model, &phi, 10.0, 10.0 * y.exp()).unwrap();
    }
    let phi = [1.0, 0.5, 0.5, 0.0];
    for (m, bias) in [("m0", 0.0), ("m1", 0.1), ("m2", -0.1), ("m3", 0.05)] {
        let truth = (0.05f64 + 0.4 + 0.15 + bias).exp();
        let got = l.correction(m, &phi);
        assert!((got / truth - 1.0).abs() < 0.03, "{m}: {got} vs {truth}");
    }
}

#[test]
fn rejects_bad_observations() {
    let mut l = Learner::new(4);
    let phi = [1.0, 0.0, 0.0, 0.0];
    assert!(matches!(
        l.observe("m", &phi, 10.0, f64::NAN),
        Err(Rejected::NotPositive(_))
    ));
    assert!(matches!(
        l.observe("m", &phi, 10.0, 0.0),
        Err(Rejected::NotPositive(_))
    ));
    assert!(matches!(
        l.observe("m", &phi, 10.0, -3.0),
        Err(Rejected::NotPositive(_))
    ));
    assert!(matches!(
        l.observe("m", &phi, 10.0, 1000.0),
        Err(Rejected::Outlier { .. })
    ));
    assert_eq!(l.observations, 0);
    assert_eq!(l.rejected, 4);
    assert!(l.observe("m", &phi, 10.0, 11.0).is_ok());
    assert_eq!(
        l.observe("m", &[1.0, f64::INFINITY, 0.0, 0.0], 10.0, 11.0),
        Err(Rejected::BadFeatures)
    );
}

#[test]
fn bounded_models() {
    let mut l = Learner::new(3);
    let phi = [1.0, 0.0, 0.0, 0.0];
    for i in 0..10 {
        l.observe(&format!("m{i}"), &phi, 10.0, 10.5).unwrap();
    }
    assert_eq!(l.residuals.len(), 3);
}

#[test]
fn persists_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("learner.json");
    let mut l = Learner::new(8);
    let phi = [1.0, 0.3, 0.1, 0.0];
    for _ in 0..5 {
        l.observe("a", &phi, 10.0, 12.0).unwrap();
    }
    l.save(&path).unwrap();
    let r = Learner::load(&path, 8).unwrap();
    assert_eq!(r.w, l.w);
    assert_eq!(r.observations, 5);
    assert_eq!(r.correction("a", &phi), l.correction("a", &phi));
    std::fs::write(&path, b"{torn").unwrap();
    assert!(Learner::load(&path, 8).is_err());
}

/// Observes `model` `n` times at `ratio` × a 10 ms prediction in a quiet state.
fn feed(l: &mut Learner, model: &str, kinds: Option<KindShares>, ratio: f64, n: usize) {
    let x = Features {
        phi: [1.0, 0.0, 0.0, 0.0],
        kinds,
    };
    for _ in 0..n {
        let _ = l.learn(model, &x, 10.0, 10.0 * ratio);
    }
}

#[test]
fn an_observation_of_one_model_moves_the_next_prediction_of_another() {
    let mut l = Learner::new(16);
    for m in ["a", "b", "c"] {
        feed(&mut l, m, None, 1.0, 20);
    }
    let quiet = [1.0, 0.0, 0.0, 0.0];
    let before = l.correction("b", &quiet);
    // A regime the sensors miss: "a" runs 1.3× slower.
    feed(&mut l, "a", None, 1.3, 1);
    let after = l.correction("b", &quiet);
    assert!(after > before * 1.08, "{before} → {after}");
    // A few more jobs in the regime and an unseen model is close to it too.
    feed(&mut l, "c", None, 1.3, 1);
    feed(&mut l, "a", None, 1.3, 1);
    let unseen = l.correction("new", &quiet);
    assert!(unseen > 1.15, "{unseen}");
}

#[test]
fn kernel_kinds_carry_a_slowdown_to_models_that_share_them() {
    let mut l = Learner::new(16);
    let mut dw = [0.0; KINDS];
    dw[2] = 0.8; // depthwise
    dw[1] = 0.2;
    let mut conv = [0.0; KINDS];
    conv[0] = 1.0;
    for _ in 0..20 {
        feed(&mut l, "dw1", Some(dw), 1.0, 1);
        feed(&mut l, "conv1", Some(conv), 1.0, 1);
    }
    // Depthwise-heavy models slow down, conv-heavy ones do not.
    for _ in 0..3 {
        feed(&mut l, "dw1", Some(dw), 1.4, 1);
        feed(&mut l, "conv1", Some(conv), 1.0, 1);
    }
    let x = |k| Features {
        phi: [1.0, 0.0, 0.0, 0.0],
        kinds: Some(k),
    };
    let dw_new = l.correction_for("dw2", &x(dw));
    let conv_new = l.correction_for("conv2", &x(conv));
    assert!(dw_new > conv_new * 1.05, "{dw_new} vs {conv_new}");
}

#[test]
fn a_level_shift_is_learned_after_a_few_consistent_refusals() {
    let mut l = Learner::new(4);
    feed(&mut l, "m", None, 1.0, 30);
    let x = Features::from([1.0, 0.0, 0.0, 0.0]);
    assert!(matches!(
        l.learn("m", &x, 10.0, 20.0),
        Err(Rejected::Outlier { .. })
    ));
    assert!(l.learn("m", &x, 10.0, 20.0).is_err());
    assert!(l.learn("m", &x, 10.0, 20.0).is_ok(), "the third is a shift");
    feed(&mut l, "m", None, 2.0, 10);
    let c = l.correction("m", &[1.0, 0.0, 0.0, 0.0]);
    assert!((c / 2.0 - 1.0).abs() < 0.1, "{c}");
}

#[test]
fn an_unsound_saved_state_is_reset_on_load() {
    // The shape of the checkpoint a diverged learner left: shared weights −70.7 and +541, a
    // covariance with clamped diagonal, a model offset of −8.1.
    let json = r#"{"w":[-70.67708351458482,541.1285751466363,0.0,0.0],
        "p":[[1e-6,91494.1,0.0,0.0],[91494.1,1e-6,0.0,0.0],[0.0,0.0,1000.0,0.0],[0.0,0.0,0.0,1000.0]],
        "lambda":0.995,"residual_alpha":0.5,"observations":4018,"rejected":30222,
        "residuals":[4096,[["m",{"mean":-8.1,"count":4018,"recent":[0.004,0.001]}]]]}"#;
    let l: Learner = serde_json::from_str(json).unwrap();
    assert_eq!(l.resets, 1);
    assert!(l.last_reset.as_deref().unwrap_or("").contains("unsound"));
    assert_eq!(l.w, [0.0; N]);
    assert_eq!((l.observations, l.rejected), (4018, 30222));
    assert_eq!(l.correction("m", &[1.0, 0.1, 0.0, 0.0]), 1.0);
    assert_eq!(l.fault(), None);
}

#[test]
fn a_learner_doing_harm_is_reset() {
    let mut l = Learner::new(4);
    feed(&mut l, "m", None, 1.0, 5);
    // Corrupt the shared state in a way each bound allows, but that makes every prediction wrong:
    // the model's offset says 3× faster.
    if let Some(r) = l.residuals.get_mut("m") {
        r.mean = -OFFSET_MAX;
        r.var = 1e-6;
    }
    for _ in 0..200 {
        let _ = l.observe("m", &[1.0, 0.0, 0.0, 0.0], 10.0, 10.0);
        if l.resets > 0 {
            break;
        }
    }
    // Either the level-shift rule or the health check recovers; the correction is sane again.
    let c = l.correction("m", &[1.0, 0.0, 0.0, 0.0]);
    assert!((c - 1.0).abs() < 0.1, "{c}");
}

fn observed() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-6.0f64..9.0).prop_map(|e| 10f64.powf(e)),
        Just(25.0),
        Just(1e300),
        Just(1e-300),
        Just(f64::NAN),
        Just(0.0),
    ]
}

fn phi() -> impl Strategy<Value = Phi> {
    prop_oneof![
        Just([1.0, 0.13, 0.0, 0.0]),
        (-3.0f64..3.0).prop_map(|c| [1.0, c, c, c]),
        proptest::array::uniform4(-100.0f64..100.0),
        Just([1.0, f64::NAN, 0.0, 0.0]),
    ]
}

fn kinds() -> impl Strategy<Value = Option<KindShares>> {
    prop_oneof![
        Just(None),
        proptest::array::uniform11(0.0f64..1.0).prop_map(|mut h| {
            let s: f64 = h.iter().sum();
            if s > 0.0 {
                h.iter_mut().for_each(|x| *x /= s);
            }
            Some(h)
        }),
        Just(Some([2.0; KINDS])),
    ]
}

#[derive(Clone, Debug)]
struct Step {
    model: u8,
    x: Features,
    predicted: f64,
    observed: f64,
    /// Alternate with the previous step's observation (a flip-flopping latency).
    alternate: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u8..4,
        phi(),
        kinds(),
        prop_oneof![(-3.0f64..6.0).prop_map(|e| 10f64.powf(e)), Just(25.0)],
        observed(),
        any::<bool>(),
    )
        .prop_map(|(model, phi, kinds, predicted, observed, alternate)| Step {
            model,
            x: Features { phi, kinds },
            predicted,
            observed,
            alternate,
        })
}

fn check(l: &Learner) -> Result<(), TestCaseError> {
    prop_assert_eq!(l.fault(), None);
    for (w, max) in l.w.iter().zip(W_MAX) {
        prop_assert!(w.abs() <= max);
    }
    for (_, r) in l.residuals.iter() {
        prop_assert!(r.mean.abs() <= OFFSET_MAX && r.var > 0.0 && r.var.is_finite());
    }
    for m in ["m0", "m1", "m2", "m3", "never"] {
        let c = l.correction(m, &[1.0, 0.5, 0.5, 0.5]);
        prop_assert!(c.is_finite());
        prop_assert!((-CORRECTION_MAX - 1e-9..=CORRECTION_MAX + 1e-9).contains(&c.ln()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn adversarial_sequences_keep_the_learner_sound_and_it_recovers(
        steps in proptest::collection::vec(step(), 1..400)
    ) {
        let mut l = Learner::new(8);
        let mut prev = 25.0;
        for (i, s) in steps.iter().enumerate() {
            let observed = if s.alternate && i % 2 == 1 { prev } else { s.observed };
            prev = s.observed;
            let model = format!("m{}", s.model);
            let _ = l.learn(&model, &s.x, s.predicted, observed);
            prop_assert_eq!(l.observations + l.rejected, i as u64 + 1);
            check(&l)?;
        }
        // Whatever came before, a steady truth is learned again: 1.25× the prediction.
        let x = Features::from([1.0, 0.1, 0.0, 0.0]);
        for i in 0..400 {
            let _ = l.learn(&format!("m{}", i % 4), &x, 20.0, 25.0);
        }
        check(&l)?;
        for m in ["m0", "m1", "m2", "m3"] {
            let c = l.correction_for(m, &x);
            prop_assert!((c / 1.25 - 1.0).abs() < 0.1, "{}: {}", m, c);
        }
    }
}
