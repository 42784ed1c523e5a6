//! Imported models: the graph of each kept on disk in the state directory (so a restart does not
//! import again), and its decomposition with its base prediction kept in memory in an LRU bounded
//! in bytes, so that a prediction on a known model costs one lookup.
//!
//! A model's id is the SHA-256 of the bytes it was posted as (and of the input shape, if one was
//! given). Disk holds graphs rather than decompositions: a new profile may bring other fusion rules,
//! and re-decomposing a stored graph takes milliseconds where importing ONNX takes seconds.
use super::Engine;
use crate::kernels::{Decomposition, decompose};
use crate::model::Graph;
use crate::predict::BasePrediction;
use lru::LruCache;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Bumped when the stored graph's meaning changes; older files are replaced by a re-POST.
const FORMAT_VERSION: u32 = 1;
/// Prefix of the temporary files uploads are written through; any left by a crash are removed
/// when the store opens.
const TEMP_PREFIX: &str = ".upload-";
/// Suffix a damaged stored model is renamed to, kept aside for a look.
const DAMAGED: &str = "damaged";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The disk (or the quota) is full: the upload could not be kept.
    #[error("{path}: no space left: {source}")]
    Full {
        path: String,
        source: std::io::Error,
    },
    /// The state directory cannot be written (read-only, removed, wrong permissions …).
    #[error("{path}: cannot write: {source}")]
    Unwritable {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Decompose(String),
}

/// Creates `dir` (and its parents) for the daemon's user alone; one that exists open to others
/// (made by an older version) is closed to them.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` durably and privately (0600): a temporary file beside it, fsync,
/// rename, fsync of the directory. The temporary file is removed on any failure.
pub fn write_private_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // tempfile creates the file 0600 with a unique name, and deletes it when dropped unpersisted.
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file());
        write(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// What a failed write means for the client: a full disk, or a store that cannot be written.
fn write_error(path: &Path, source: std::io::Error) -> StoreError {
    let path = path.display().to_string();
    let full = source.kind() == std::io::ErrorKind::StorageFull
        || source.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
    if full {
        StoreError::Full { path, source }
    } else {
        StoreError::Unwritable { path, source }
    }
}

/// One model ready to predict: its decomposition and its base prediction under one engine.
#[derive(Debug)]
pub struct ModelEntry {
    pub id: String,
    /// The name the online learner knows the model by ([`Decomposition::fingerprint`]): the
    /// same for every file of the architecture, so a model posted again as another daemon's
    /// export keeps what was learned of it.
    pub learn_key: String,
    pub decomposition: Decomposition,
    pub base: BasePrediction,
    /// The engine generation the base prediction was computed with.
    pub generation: u64,
    /// Estimated memory the entry takes, bytes.
    pub size: u64,
}

#[derive(Deserialize)]
struct Stored {
    format_version: u32,
    graph: Graph,
}

#[derive(Serialize)]
struct StoredRef<'a> {
    format_version: u32,
    augur_version: &'a str,
    graph: &'a Graph,
}

/// Only the version of a stored file, to tell an older format from damage.
#[derive(Deserialize)]
struct StoredVersion {
    format_version: u32,
}

struct Inner {
    lru: LruCache<String, Arc<ModelEntry>>,
    bytes: u64,
}

pub struct ModelStore {
    dir: PathBuf,
    cap: u64,
    inner: Mutex<Inner>,
}

/// True for what a model id looks like (64 lowercase hex digits): anything else is unknown, and
/// never reaches the file system.
pub fn valid_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The id of a posted model: SHA-256 of its bytes, and of the input shape when one was given.
pub fn digest(bytes: &[u8], input_shape: Option<&[usize]>) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    if let Some(s) = input_shape {
        h.update(b"\0input_shape:");
        for d in s {
            h.update(d.to_le_bytes());
        }
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

/// Checks that every tensor a graph names exists, so that a damaged file cannot make decomposition
/// index out of bounds.
fn check_graph(g: &Graph) -> Result<(), StoreError> {
    let n = g.tensors.len();
    let bad = g
        .nodes
        .iter()
        .flat_map(|node| node.inputs.iter().chain(&node.outputs))
        .chain(&g.inputs)
        .chain(&g.outputs)
        .any(|&t| t >= n);
    if bad {
        return Err(StoreError::Decompose(
            "a node names a tensor that does not exist".into(),
        ));
    }
    Ok(())
}

/// Decomposes and predicts the base of a graph under `engine`; a panic deep in either is an error.
pub fn prepare(id: &str, g: &Graph, engine: &Engine) -> Result<ModelEntry, StoreError> {
    check_graph(g)?;
    let d = catch_unwind(AssertUnwindSafe(|| decompose(g, &engine.rules)))
        .map_err(|_| StoreError::Decompose("decomposition failed on this graph".into()))?
        .map_err(|e| StoreError::Decompose(e.to_string()))?;
    let base = engine.predictor.base(&d);
    // Kernels dominate: their shapes, names and op lists, plus the per-kernel base figures.
    let size = 256
        + d.kernels
            .iter()
            .map(|k| {
                320 + k.name.len() as u64
                    + k.ops.iter().map(|o| o.len() as u64 + 24).sum::<u64>()
                    + k.input_shapes
                        .iter()
                        .map(|s| 24 + 8 * s.len() as u64)
                        .sum::<u64>()
            })
            .sum::<u64>();
    Ok(ModelEntry {
        id: id.to_string(),
        learn_key: d.fingerprint(),
        decomposition: d,
        base,
        generation: engine.generation,
        size,
    })
}

/// Removes temporary files a crash left in `dir` mid-upload.
fn remove_leftovers(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::info!(
                    "removed {}, left by an interrupted upload",
                    e.path().display()
                ),
                Err(err) => tracing::warn!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // Every update leaves the LRU whole, so the data behind a poisoned lock is still good.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ModelStore {
    /// Opens (creating) `dir`, where graphs are kept; `cap` bounds the in-memory entries, bytes.
    pub fn open(dir: &Path, cap: u64) -> Result<ModelStore, StoreError> {
        create_private_dir(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        remove_leftovers(dir);
        Ok(ModelStore {
            dir: dir.to_path_buf(),
            cap,
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The entry in memory, if it was prepared under this engine generation.
    pub fn cached(&self, id: &str, generation: u64) -> Option<Arc<ModelEntry>> {
        let mut g = lock(&self.inner);
        let e = g.lru.get(id)?;
        (e.generation == generation).then(|| Arc::clone(e))
    }

    /// Renames a damaged file aside (`<id>.json.damaged`, replacing an older one) and says so in
    /// the log; the id is then unknown until the model is posted again.
    fn quarantine(&self, path: &Path, why: &str) {
        let aside = path.with_extension(format!("json.{DAMAGED}"));
        match std::fs::rename(path, &aside) {
            Ok(()) => tracing::warn!(
                "{}: damaged stored model ({why}); moved to {}; posting the model again replaces it",
                path.display(),
                aside.display()
            ),
            Err(e) => tracing::error!(
                "{}: damaged stored model ({why}), and it cannot be moved aside: {e}",
                path.display()
            ),
        }
    }

    /// Reads a stored graph (blocking). `None` when there is none, when it is of an older format
    /// (a re-POST replaces it), or when it is damaged (then it is quarantined).
    pub fn read(&self, id: &str) -> Result<Option<Graph>, StoreError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let path = self.path(id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        match serde_json::from_slice::<Stored>(&bytes) {
            Ok(s) if s.format_version == FORMAT_VERSION => match check_graph(&s.graph) {
                Ok(()) => Ok(Some(s.graph)),
                Err(e) => {
                    self.quarantine(&path, &e.to_string());
                    Ok(None)
                }
            },
            Ok(s) => {
                tracing::warn!(path = %path.display(), "stored model is of format {}; it must be posted again", s.format_version);
                Ok(None)
            }
            Err(e) => match serde_json::from_slice::<StoredVersion>(&bytes) {
                Ok(v) if v.format_version != FORMAT_VERSION => {
                    tracing::warn!(path = %path.display(), "stored model is of format {}; it must be posted again", v.format_version);
                    Ok(None)
                }
                _ => {
                    self.quarantine(&path, &e.to_string());
                    Ok(None)
                }
            },
        }
    }

    /// The entry of a stored model under `engine` (blocking): `None` as for [`ModelStore::read`],
    /// and when the stored graph cannot be decomposed (it is quarantined then).
    pub fn reload(&self, id: &str, engine: &Engine) -> Result<Option<ModelEntry>, StoreError> {
        let Some(g) = self.read(id)? else {
            return Ok(None);
        };
        match prepare(id, &g, engine) {
            Ok(e) => Ok(Some(e)),
            Err(e) => {
                self.quarantine(&self.path(id), &e.to_string());
                Ok(None)
            }
        }
    }

    /// Writes a graph to disk durably (blocking): answered only once the file and its directory
    /// entry are on disk.
    pub fn write(&self, id: &str, g: &Graph) -> Result<(), StoreError> {
        let path = self.path(id);
        write_private_atomic(&path, |w| {
            serde_json::to_writer(
                w,
                &StoredRef {
                    format_version: FORMAT_VERSION,
                    augur_version: env!("CARGO_PKG_VERSION"),
                    graph: g,
                },
            )
            .map_err(std::io::Error::from)
        })
        .map_err(|e| write_error(&path, e))
    }

    /// Keeps an entry in memory, evicting the least recently used beyond the byte budget (the
    /// newest entry stays even when it alone is over).
    pub fn insert(&self, entry: ModelEntry) -> Arc<ModelEntry> {
        let e = Arc::new(entry);
        let mut g = lock(&self.inner);
        if let Some(old) = g.lru.put(e.id.clone(), Arc::clone(&e)) {
            g.bytes = g.bytes.saturating_sub(old.size);
        }
        g.bytes += e.size;
        while g.bytes > self.cap && g.lru.len() > 1 {
            match g.lru.pop_lru() {
                Some((_, old)) => g.bytes = g.bytes.saturating_sub(old.size),
                None => break,
            }
        }
        e
    }

    /// Entries and bytes in memory.
    pub fn usage(&self) -> (usize, u64) {
        let g = lock(&self.inner);
        (g.lru.len(), g.bytes)
    }

    /// Graphs on disk.
    pub fn stored_count(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".json"))
                            .is_some_and(valid_id)
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_digests_and_nothing_else_is_one() {
        let a = digest(b"abc", None);
        assert_eq!(
            a,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(valid_id(&a));
        assert_ne!(a, digest(b"abc", Some(&[1, 3, 8, 8])));
        assert!(!valid_id("../../etc/passwd"));
        assert!(!valid_id(&a.to_uppercase()));
    }

    #[test]
    fn damaged_and_older_files_are_unknown_and_a_write_replaces_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        std::fs::create_dir_all(&models).unwrap();
        std::fs::write(models.join(".upload-left"), b"half").unwrap();
        let store = ModelStore::open(&models, 1 << 20).unwrap();
        assert!(!models.join(".upload-left").exists(), "leftover removed");
        let (a, b) = (digest(b"a", None), digest(b"b", None));
        std::fs::write(store.path(&a), br#"{"format_version": 1, "graph": {"nod"#).unwrap();
        std::fs::write(store.path(&b), br#"{"format_version": 0, "graph": 7}"#).unwrap();
        assert!(store.read(&a).unwrap().is_none());
        assert!(!store.path(&a).exists());
        assert!(
            models.join(format!("{a}.json.damaged")).is_file(),
            "quarantined"
        );
        assert!(store.read(&b).unwrap().is_none());
        assert!(
            store.path(&b).exists(),
            "an older format is left for a re-POST to replace"
        );
        let g = Graph::default();
        store.write(&a, &g).unwrap();
        store.write(&b, &g).unwrap();
        assert!(store.read(&a).unwrap().is_some() && store.read(&b).unwrap().is_some());
        let mode = std::fs::metadata(store.path(&a))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(&models).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(store.stored_count(), 2);
    }

    #[test]
    fn a_full_disk_and_an_unwritable_store_are_told_apart() {
        let p = Path::new("/x");
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(matches!(write_error(p, full), StoreError::Full { .. }));
        let ro = std::io::Error::from_raw_os_error(libc::EROFS);
        assert!(matches!(write_error(p, ro), StoreError::Unwritable { .. }));
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::open(&dir.path().join("m"), 1).unwrap();
        std::fs::remove_dir(dir.path().join("m")).unwrap();
        std::fs::write(dir.path().join("m"), b"not a directory").unwrap();
        let e = store
            .write(&digest(b"c", None), &Graph::default())
            .unwrap_err();
        assert!(matches!(e, StoreError::Unwritable { .. }), "{e:?}");
    }

    #[test]
    fn a_graph_naming_missing_tensors_is_refused() {
        let mut g = Graph::default();
        g.inputs.push(3);
        assert!(check_graph(&g).is_err());
    }
}
