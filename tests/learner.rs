//! The online learner on the state directory that once drove it to diverge: 4,018 learned of
//! 34,240 observations of one model at about 25 ms under background CPU load, shared weights at
//! bias −70.7 and cpu +541, predictions of 1.4 ms, every later observation refused. Replayed the
//! way `augur serve --state-dir` recovers it on start-up, it must stay sane.
use augur::predict::learner::{Learner, W_MAX};
use augur::serve::journal::{Journal, Record};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Unpacks the fixture into a fresh temporary directory; returns it and the state directory.
fn state_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let archive =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/learner-divergence.tar.xz");
    let ok = Command::new("tar")
        .arg("-xJf")
        .arg(&archive)
        .arg("-C")
        .arg(tmp.path())
        .status()
        .expect("run tar");
    assert!(ok.success(), "cannot unpack {}", archive.display());
    let dir = tmp.path().join("st4");
    (tmp, dir)
}

fn records(dir: &Path) -> Vec<Record> {
    std::fs::read_to_string(dir.join("observations.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Sound state, bounded weights, and the model predicted within 10 % of what it runs at.
fn assert_sane(l: &Learner, last: &Record) {
    assert_eq!(l.fault(), None);
    for (w, max) in l.w.iter().zip(W_MAX) {
        assert!(w.abs() <= max, "weights {:?}", l.w);
    }
    let o = &last.observation;
    let predicted = o.predicted_ms * l.correction(&o.model, &o.phi);
    assert!(
        (predicted / 25.5 - 1.0).abs() < 0.10,
        "predicted {predicted:.2} ms for a model that runs at about 25.5 ms"
    );
}

#[test]
fn the_diverged_checkpoint_is_reset_and_a_full_replay_stays_sane() {
    let (_tmp, dir) = state_dir();
    let all = records(&dir);
    assert_eq!(all.len(), 34_240);
    let last = all.last().unwrap();

    // As it was left: the checkpoint covers every line; its state is unsound, so it is reset.
    let (j, rec) = Journal::open(&dir, Duration::from_secs(3600), 1 << 40).unwrap();
    assert_eq!(rec.replayed, 0);
    {
        let l = j.learner().read().unwrap();
        assert!(l.resets >= 1, "the diverged checkpoint was trusted");
        assert_eq!(l.fault(), None);
        assert_eq!(l.w, [0.0; 4]);
    }
    drop(j);

    // Without the checkpoint, every line is learned again, as after its loss.
    std::fs::remove_file(dir.join("learner.json")).unwrap();
    let (j, rec) = Journal::open(&dir, Duration::from_secs(3600), 1 << 40).unwrap();
    assert_eq!(rec.replayed, 34_240);
    let l = j.learner().read().unwrap().clone();
    drop(j);
    eprintln!(
        "full replay: {} learned, {} refused, {} resets, weights {:?}",
        l.observations, l.rejected, l.resets, l.w
    );
    assert_sane(&l, last);
    assert!(
        l.observations > 34_240 * 9 / 10,
        "{} of 34,240 learned ({} refused)",
        l.observations,
        l.rejected
    );
}

#[test]
fn replayed_one_by_one_the_corrected_predictions_stay_close_throughout() {
    let (_tmp, dir) = state_dir();
    let all = records(&dir);
    let mut l = Learner::default();
    let (mut err, mut n) = (0.0, 0usize);
    for (i, r) in all.iter().enumerate() {
        let o = &r.observation;
        let served = o.predicted_ms * l.correction(&o.model, &o.phi);
        if i >= 100 {
            err += (served / o.latency_ms - 1.0).abs();
            n += 1;
        }
        let _ = l.observe(&o.model, &o.phi, o.predicted_ms, o.latency_ms);
        assert_eq!(l.fault(), None, "after observation {i}");
    }
    let mape = err / n as f64 * 100.0;
    eprintln!(
        "one by one: corrected MAPE {mape:.2} %, {} learned, {} refused, {} resets",
        l.observations, l.rejected, l.resets
    );
    // The model runs at 25–26 ms; a learner that follows it is off by a few per cent at most.
    assert!(
        mape < 5.0,
        "corrected predictions off by {mape:.1} % on average"
    );
    assert_eq!(
        l.resets, 0,
        "a sound learner should not need resetting here"
    );
    assert_sane(&l, all.last().unwrap());
}
