//! Observed latencies: an append-only JSON-lines journal in the state directory, folded into the
//! online [`Learner`] that corrects predictions, whose state is checkpointed atomically.
//!
//! Flush policy: an observation is acknowledged only once it is on disk. One writer thread owns
//! the journal; it takes every observation waiting, appends them in one write, `fdatasync`s once,
//! then folds them into the learner and acknowledges them all (group commit), so the cost of the
//! sync is shared under load. The learner (`learner.json`: its state and the last journal sequence
//! number it covers) is written atomically (temp file, fsync, rename) every
//! `observe.checkpoint_seconds` while observations arrive, and at shutdown; on start-up the journal
//! lines after the checkpoint are folded in again, which gives the same learner, since learning
//! is deterministic. A `kill -9` can therefore lose nothing that was acknowledged: at worst it
//! leaves a torn last line that was never acknowledged, which start-up cuts off (and keeps aside).
use crate::predict::learner::{Features, KindShares, Learner, Phi, Rejected};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const JOURNAL: &str = "observations.jsonl";
const ROTATED: &str = "observations.1.jsonl";
const DAMAGED: &str = "observations.damaged";
const LEARNED: &str = "learner.json";
const FORMAT_VERSION: u32 = 1;
/// Most observations written by one sync.
const MAX_GROUP: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the journal writer has stopped")]
    Closed,
    #[error("cannot write the observation journal: cannot serialise the observation: {0}")]
    Serialise(serde_json::Error),
    /// Shared: one failed write refuses every observation of its group.
    #[error("cannot write the observation journal: {0}")]
    Write(Arc<std::io::Error>),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One kernel's observed latency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelObservation {
    pub name: String,
    pub latency_ms: f64,
}

/// What the caller observed, with what was predicted for it and the state features it was
/// predicted under (what the learner needs to learn it again on replay).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub model: String,
    /// The name the learner learned it under (the model's fingerprint); absent in older
    /// journals, whose observations are learned again under `model`, the id, as they were then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learn_as: Option<String>,
    pub latency_ms: f64,
    /// Base × slowdown, before the learner's correction.
    pub predicted_ms: f64,
    /// The prediction as answered, with the learner's correction.
    pub served_ms: f64,
    pub phi: Phi,
    /// The model's time per kernel kind, for the per-kind corrections (absent in older journals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<KindShares>,
    pub threads: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<Vec<KernelObservation>>,
}

/// One journal line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub unix_seconds: f64,
    #[serde(flatten)]
    pub observation: Observation,
}

/// The learner as checkpointed: its state and the journal line it covers up to.
#[derive(Deserialize)]
struct Checkpoint {
    format_version: u32,
    last_seq: u64,
    learner: Learner,
}

#[derive(Serialize)]
struct CheckpointRef<'a> {
    format_version: u32,
    last_seq: u64,
    learner: &'a Learner,
}

/// The learner shared between the writer (which teaches it) and predictions (which read it).
pub type SharedLearner = Arc<RwLock<Learner>>;

/// What an acknowledged observation did to the learner.
pub type Learned = Result<(), Rejected>;

/// What start-up found in the state directory.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// Journal lines folded in again (after the last checkpoint).
    pub replayed: u64,
    /// Bytes of a torn or damaged tail cut off the journal (kept in `observations.damaged`).
    pub cut_bytes: u64,
    /// Observations the learner has learned from.
    pub learned_observations: u64,
    pub last_seq: u64,
}

type Ack = tokio::sync::oneshot::Sender<Result<(u64, Learned), JournalError>>;

enum Msg {
    // Boxed: an observation is large beside `Stop`, and the channel holds one slot per message.
    Append(Box<Observation>, Ack),
    Stop,
}

/// The journal's writer thread and the way to it.
pub struct Journal {
    tx: Mutex<Option<Sender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    learner: SharedLearner,
}

impl Journal {
    /// Recovers the state in `dir` (blocking) and starts the writer.
    pub fn open(
        dir: &Path,
        checkpoint_every: Duration,
        journal_max_bytes: u64,
    ) -> Result<(Journal, Recovery), JournalError> {
        super::store::create_private_dir(dir).map_err(io(dir))?;
        let (learner, file, recovery) = recover(dir)?;
        let learner = Arc::new(RwLock::new(learner));
        let (tx, rx) = mpsc::channel();
        let w = Writer {
            dir: dir.to_path_buf(),
            file,
            learner: Arc::clone(&learner),
            last_seq: recovery.last_seq,
            dirty: recovery.replayed > 0,
            checkpoint_every,
            journal_max_bytes,
        };
        w.publish();
        let thread = std::thread::Builder::new()
            .name("augur-journal".into())
            .spawn(move || w.run(rx))
            .map_err(io(dir))?;
        Ok((
            Journal {
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                learner,
            },
            recovery,
        ))
    }

    /// The learner, for predictions to read.
    pub fn learner(&self) -> &SharedLearner {
        &self.learner
    }

    /// Appends an observation; resolves once it is on disk, with its sequence number and what the
    /// learner made of it.
    pub async fn append(&self, o: Observation) -> Result<(u64, Learned), JournalError> {
        let (ack, done) = tokio::sync::oneshot::channel();
        {
            let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
            let tx = tx.as_ref().ok_or(JournalError::Closed)?;
            tx.send(Msg::Append(Box::new(o), ack))
                .map_err(|_| JournalError::Closed)?;
        }
        done.await.unwrap_or(Err(JournalError::Closed))
    }

    /// Writes what is pending, checkpoints the learned state and stops the writer (blocking).
    pub fn close(&self) {
        if let Some(tx) = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = tx.send(Msg::Stop);
        }
        if let Some(t) = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            && t.join().is_err()
        {
            tracing::error!("the journal writer panicked; the journal itself is intact");
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reads the checkpoint and the journal, folds the lines after the checkpoint into the learner,
/// and cuts a torn tail off the journal.
fn recover(dir: &Path) -> Result<(Learner, File, Recovery), JournalError> {
    let lpath = dir.join(LEARNED);
    let (mut learner, mut last_seq) = match std::fs::read(&lpath) {
        Ok(b) => match serde_json::from_slice::<Checkpoint>(&b) {
            Ok(c) if c.format_version == FORMAT_VERSION => (c.learner, c.last_seq),
            parsed => {
                // Written atomically, so this is outside damage or another version: keep it aside
                // and rebuild from the journal rather than refuse to start.
                let aside = dir.join(format!("{LEARNED}.unreadable"));
                tracing::warn!(
                    "{}: unreadable learner checkpoint ({}); moved to {} and rebuilt from the journal",
                    lpath.display(),
                    match parsed {
                        Err(e) => e.to_string(),
                        Ok(c) => format!("format {}", c.format_version),
                    },
                    aside.display()
                );
                std::fs::rename(&lpath, &aside).map_err(io(&lpath))?;
                (Learner::default(), 0)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Learner::default(), 0),
        Err(e) => return Err(io(&lpath)(e)),
    };
    let mut rec = Recovery::default();
    // Without a checkpoint, what a rotation moved away is learned again first.
    if last_seq == 0 {
        let rotated = std::fs::read(dir.join(ROTATED)).unwrap_or_default();
        for line in rotated.split(|&b| b == b'\n') {
            if let Ok(r) = serde_json::from_slice::<Record>(line) {
                // An outlier rejected now was rejected the first time too: replay is deterministic.
                let _ = fold(&mut learner, &mut last_seq, &r);
                rec.replayed += 1;
            }
        }
    }
    let jpath = dir.join(JOURNAL);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&jpath)
        .map_err(io(&jpath))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io(&jpath))?;
    // Appends are sequential, so a crash can only tear the tail: an unterminated last line is cut.
    // A complete line that does not parse is outside damage; it is skipped, not a reason to lose
    // the acknowledged lines after it.
    let mut good = 0usize;
    let mut max_seq = last_seq;
    let mut skipped = 0u64;
    while let Some(nl) = bytes[good..].iter().position(|&b| b == b'\n') {
        match serde_json::from_slice::<Record>(&bytes[good..good + nl]) {
            Ok(r) => {
                max_seq = max_seq.max(r.seq);
                if r.seq > last_seq {
                    let _ = fold(&mut learner, &mut last_seq, &r);
                    rec.replayed += 1;
                }
            }
            Err(_) => skipped += 1,
        }
        good += nl + 1;
    }
    if skipped > 0 {
        tracing::warn!(
            "{}: skipped {skipped} damaged lines that are not the tail",
            jpath.display()
        );
    }
    if good < bytes.len() {
        let dpath = dir.join(DAMAGED);
        let mut d = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&dpath)
            .map_err(io(&dpath))?;
        d.write_all(&bytes[good..]).map_err(io(&dpath))?;
        d.sync_all().map_err(io(&dpath))?;
        file.set_len(good as u64).map_err(io(&jpath))?;
        file.sync_all().map_err(io(&jpath))?;
        rec.cut_bytes = (bytes.len() - good) as u64;
        tracing::warn!(
            "{}: cut {} bytes of a torn or damaged tail (never acknowledged); kept in {}",
            jpath.display(),
            rec.cut_bytes,
            dpath.display()
        );
    }
    // Numbering goes on from the journal and the checkpoint, whichever is further.
    rec.last_seq = last_seq.max(max_seq);
    rec.learned_observations = learner.observations;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((learner, file, rec))
}

fn fold(learner: &mut Learner, last_seq: &mut u64, r: &Record) -> Learned {
    *last_seq = (*last_seq).max(r.seq);
    let o = &r.observation;
    let x = Features {
        phi: o.phi,
        kinds: o.kinds,
    };
    let key = o.learn_as.as_deref().unwrap_or(&o.model);
    learner.learn(key, &x, o.predicted_ms, o.latency_ms)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

struct Writer {
    dir: PathBuf,
    file: File,
    learner: SharedLearner,
    /// Highest sequence number written (and folded into the learner).
    last_seq: u64,
    dirty: bool,
    checkpoint_every: Duration,
    journal_max_bytes: u64,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut next_checkpoint = Instant::now() + self.checkpoint_every;
        loop {
            let wait = if self.dirty {
                next_checkpoint.saturating_duration_since(Instant::now())
            } else {
                Duration::from_secs(3600)
            };
            let mut stop = false;
            let mut batch = Vec::new();
            match rx.recv_timeout(wait) {
                Ok(Msg::Append(o, ack)) => batch.push((*o, ack)),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => stop = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            while !stop && batch.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(Msg::Append(o, ack)) => batch.push((*o, ack)),
                    Ok(Msg::Stop) => stop = true,
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.write_group(batch);
            }
            // Past its size limit the journal is rotated at once (after a checkpoint that covers
            // it), not only at the next periodic checkpoint: a burst of observations must not
            // grow it without bound, nor the replay at the next start.
            if stop || (self.dirty && (Instant::now() >= next_checkpoint || self.oversized())) {
                self.checkpoint();
                next_checkpoint = Instant::now() + self.checkpoint_every;
            }
            if stop {
                return;
            }
        }
    }

    fn write_group(&mut self, batch: Vec<(Observation, Ack)>) {
        let t0 = Instant::now();
        let now = unix_now();
        let mut buf = Vec::with_capacity(batch.len() * 256);
        let mut records = Vec::with_capacity(batch.len());
        for (observation, ack) in batch {
            let r = Record {
                seq: self.last_seq + records.len() as u64 + 1,
                unix_seconds: now,
                observation,
            };
            let mark = buf.len();
            match serde_json::to_writer(&mut buf, &r) {
                Ok(()) => {
                    buf.push(b'\n');
                    records.push((r, ack));
                }
                Err(e) => {
                    buf.truncate(mark);
                    let _ = ack.send(Err(JournalError::Serialise(e)));
                }
            }
        }
        if records.is_empty() {
            return;
        }
        let before = self.file.metadata().map(|m| m.len()).ok();
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        metrics::histogram!("augur_journal_sync_seconds").record(t0.elapsed().as_secs_f64());
        match written {
            Ok(()) => {
                let mut learner = self.learner.write().unwrap_or_else(PoisonError::into_inner);
                for (r, ack) in records {
                    let learned = fold(&mut learner, &mut self.last_seq, &r);
                    let _ = ack.send(Ok((r.seq, learned)));
                }
                drop(learner);
                self.dirty = true;
            }
            Err(e) => {
                // Take back a partial write so that the journal never holds a torn line mid-file.
                if let Some(len) = before {
                    let _ = self.file.set_len(len);
                }
                tracing::error!("observation journal: {e}");
                let e = Arc::new(e);
                for (_, ack) in records {
                    let _ = ack.send(Err(JournalError::Write(Arc::clone(&e))));
                }
            }
        }
        self.publish();
    }

    fn checkpoint(&mut self) {
        if !self.dirty {
            return;
        }
        let path = self.dir.join(LEARNED);
        let json = {
            let learner = self.learner.read().unwrap_or_else(PoisonError::into_inner);
            serde_json::to_vec(&CheckpointRef {
                format_version: FORMAT_VERSION,
                last_seq: self.last_seq,
                learner: &learner,
            })
        };
        let json = match json {
            Ok(j) => j,
            Err(e) => {
                tracing::error!("cannot serialise the learner: {e}");
                return;
            }
        };
        if let Err(e) = super::store::write_private_atomic(&path, |w| w.write_all(&json)) {
            tracing::error!("{}: cannot checkpoint the learner: {e}", path.display());
            return;
        }
        self.dirty = false;
        metrics::gauge!("augur_learner_checkpoint_timestamp_seconds").set(unix_now());
        if self.oversized() {
            self.rotate();
        }
        self.publish();
    }

    fn oversized(&self) -> bool {
        self.file
            .metadata()
            .is_ok_and(|m| m.len() > self.journal_max_bytes)
    }

    /// Starts a new journal; the checkpoint just written covers everything in the old one.
    fn rotate(&mut self) {
        let (jpath, rpath) = (self.dir.join(JOURNAL), self.dir.join(ROTATED));
        let reopened = std::fs::rename(&jpath, &rpath).and_then(|()| {
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&jpath)
        });
        match reopened {
            Ok(f) => {
                self.file = f;
                if let Ok(d) = File::open(&self.dir) {
                    let _ = d.sync_all();
                }
                tracing::info!("rotated {} to {}", jpath.display(), rpath.display());
            }
            Err(e) => tracing::error!("{}: cannot rotate the journal: {e}", jpath.display()),
        }
    }

    fn publish(&self) {
        {
            let l = self.learner.read().unwrap_or_else(PoisonError::into_inner);
            metrics::counter!("augur_learner_observations_total").absolute(l.observations);
            metrics::counter!("augur_learner_rejected_total").absolute(l.rejected);
            metrics::gauge!("augur_learner_models").set(l.residuals.len() as f64);
            for (term, w) in ["bias", "cpu", "memory", "frequency"].iter().zip(l.w) {
                metrics::gauge!("augur_learner_weight", "term" => *term).set(w);
            }
        }
        metrics::gauge!("augur_learner_last_seq").set(self.last_seq as f64);
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        metrics::gauge!("augur_journal_bytes").set(len as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(ms: f64) -> Observation {
        Observation {
            model: "m".into(),
            learn_as: None,
            latency_ms: ms,
            predicted_ms: 10.0,
            served_ms: 10.0,
            phi: [1.0, 0.2, 0.0, 0.0],
            kinds: None,
            threads: 1,
            kernels: None,
        }
    }

    fn checkpoint(dir: &Path) -> Checkpoint {
        serde_json::from_slice(&std::fs::read(dir.join(LEARNED)).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn acknowledged_observations_survive_a_torn_tail_and_a_lost_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let (j, r) = Journal::open(dir.path(), Duration::from_secs(3600), 1 << 30).unwrap();
            assert_eq!(r.replayed, 0);
            for i in 1..=5 {
                let (seq, learned) = j.append(obs(10.0 + i as f64)).await.unwrap();
                assert_eq!(seq, i);
                assert!(learned.is_ok());
            }
            let w = j.learner().read().unwrap().w;
            // No close: as after kill -9, nothing was checkpointed.
            std::mem::forget(j);
            w
        };
        let jp = dir.path().join(JOURNAL);
        let mut f = OpenOptions::new().append(true).open(&jp).unwrap();
        f.write_all(br#"{"seq":6,"unix_sec"#).unwrap();
        drop(f);
        let (j, r) = Journal::open(dir.path(), Duration::from_secs(3600), 1 << 30).unwrap();
        assert_eq!(r.replayed, 5);
        assert!(r.cut_bytes > 0);
        assert_eq!(
            j.learner().read().unwrap().w,
            before,
            "replay learns the same"
        );
        assert_eq!(j.append(obs(12.0)).await.unwrap().0, 6);
        j.close();
        let c = checkpoint(dir.path());
        assert_eq!((c.last_seq, c.learner.observations), (6, 6));
        assert!(c.learner.correction("m", &[1.0, 0.2, 0.0, 0.0]) > 1.0);
        let (_, r) = Journal::open(dir.path(), Duration::from_secs(3600), 1 << 30).unwrap();
        assert_eq!((r.replayed, r.cut_bytes, r.learned_observations), (0, 0, 6));
    }

    #[tokio::test]
    async fn an_observation_is_learned_under_its_fingerprint_and_an_older_line_under_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let x = [1.0, 0.2, 0.0, 0.0];
        {
            let (j, _) = Journal::open(dir.path(), Duration::from_secs(3600), 1 << 30).unwrap();
            for _ in 0..4 {
                let o = Observation {
                    learn_as: Some("arch-1".into()),
                    ..obs(13.0)
                };
                assert!(j.append(o).await.unwrap().1.is_ok());
            }
            let l = j.learner().read().unwrap();
            assert!(l.residuals.peek("arch-1").is_some());
            assert!(l.residuals.peek("m").is_none(), "not under the id");
            // No close: the replay below learns the lines again.
            drop(l);
            std::mem::forget(j);
        }
        // A line from before fingerprints: no `learn_as`, learned under its model id.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap();
        let old = r#"{"seq":5,"unix_seconds":1.0,"model":"old-id","latency_ms":13.0,"predicted_ms":10.0,"served_ms":10.0,"phi":[1.0,0.2,0.0,0.0],"threads":1}"#;
        writeln!(f, "{old}").unwrap();
        drop(f);
        let (j, r) = Journal::open(dir.path(), Duration::from_secs(3600), 1 << 30).unwrap();
        assert_eq!(r.replayed, 5);
        let l = j.learner().read().unwrap();
        assert!(l.residuals.peek("arch-1").is_some_and(|r| r.count == 4));
        assert!(l.residuals.peek("old-id").is_some_and(|r| r.count == 1));
        assert!(l.correction("arch-1", &x) > 1.0);
    }

    #[tokio::test]
    async fn the_journal_rotates_by_size_as_it_grows_not_only_at_a_checkpoint() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // No periodic checkpoint within the test: only the size can trigger the rotation.
        let (j, _) = Journal::open(dir.path(), Duration::from_secs(3600), 2048).unwrap();
        for i in 0..200 {
            assert!(j.append(obs(9.0 + (i % 3) as f64)).await.unwrap().1.is_ok());
            let len = std::fs::metadata(dir.path().join(JOURNAL)).unwrap().len();
            assert!(
                len <= 2048 + 1024,
                "journal at {len} bytes after {i} appends"
            );
        }
        assert!(dir.path().join(ROTATED).is_file());
        let c = checkpoint(dir.path());
        assert!(c.last_seq > 150, "the rotation checkpointed first");
        for f in [JOURNAL, ROTATED, LEARNED] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{f} is {mode:o}");
        }
        j.close();
        let (_, r) = Journal::open(dir.path(), Duration::from_secs(3600), 2048).unwrap();
        assert_eq!(r.learned_observations, 200);
    }

    #[tokio::test]
    async fn the_journal_rotates_after_a_checkpoint_and_outliers_are_kept_but_not_learned() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), Duration::from_millis(1), 100).unwrap();
        for _ in 0..3 {
            assert!(j.append(obs(9.0)).await.unwrap().1.is_ok());
            std::thread::sleep(Duration::from_millis(5));
        }
        let (seq, learned) = j.append(obs(9000.0)).await.unwrap();
        assert_eq!(seq, 4);
        assert!(matches!(learned, Err(Rejected::Outlier { .. })));
        j.close();
        assert!(dir.path().join(ROTATED).is_file());
        let (j, r) = Journal::open(dir.path(), Duration::from_secs(1), 100).unwrap();
        assert_eq!((r.learned_observations, r.last_seq), (3, 4));
        assert_eq!(j.append(obs(9.0)).await.unwrap().0, 5);
    }
}
