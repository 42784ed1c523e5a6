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
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Bumped when the stored graph's meaning changes; older files are ignored (the model is re-posted).
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a stored model: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("{0}")]
    Decompose(String),
}

/// One model ready to predict: its decomposition and its base prediction under one engine.
#[derive(Debug)]
pub struct ModelEntry {
    pub id: String,
    pub decomposition: Decomposition,
    pub base: BasePrediction,
    /// The engine generation the base prediction was computed with.
    pub generation: u64,
    /// Estimated memory the entry takes, bytes.
    pub size: u64,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    format_version: u32,
    augur_version: String,
    graph: Graph,
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
fn check_graph(g: &Graph) -> Result<(), String> {
    let n = g.tensors.len();
    let bad = g
        .nodes
        .iter()
        .flat_map(|node| node.inputs.iter().chain(&node.outputs))
        .chain(&g.inputs)
        .chain(&g.outputs)
        .any(|&t| t >= n);
    if bad {
        return Err("a node names a tensor that does not exist".into());
    }
    Ok(())
}

/// Decomposes and predicts the base of a graph under `engine`; a panic deep in either is an error.
pub fn prepare(id: &str, g: &Graph, engine: &Engine) -> Result<ModelEntry, StoreError> {
    check_graph(g).map_err(StoreError::Decompose)?;
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
        decomposition: d,
        base,
        generation: engine.generation,
        size,
    })
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // Every update leaves the LRU whole, so the data behind a poisoned lock is still good.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ModelStore {
    /// Opens (creating) `dir`, where graphs are kept; `cap` bounds the in-memory entries, bytes.
    pub fn open(dir: &Path, cap: u64) -> Result<ModelStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
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

    /// Whether the graph is on disk.
    pub fn stored(&self, id: &str) -> bool {
        valid_id(id) && self.path(id).is_file()
    }

    /// Reads a stored graph (blocking); `None` when there is none or it is from another format.
    pub fn read(&self, id: &str) -> Result<Option<Graph>, StoreError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let path = self.path(id);
        let p = path.display().to_string();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { path: p, source }),
        };
        let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        if stored.format_version != FORMAT_VERSION {
            tracing::warn!(path = %p, "stored model is of format {}; it must be posted again", stored.format_version);
            return Ok(None);
        }
        Ok(Some(stored.graph))
    }

    /// Writes a graph to disk atomically (blocking).
    pub fn write(&self, id: &str, g: &Graph) -> Result<(), StoreError> {
        let path = self.path(id);
        let p = path.display().to_string();
        let json = serde_json::to_vec(&Stored {
            format_version: FORMAT_VERSION,
            augur_version: env!("CARGO_PKG_VERSION").into(),
            graph: g.clone(),
        })
        .map_err(|e| StoreError::Corrupt {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        crate::util::write_atomic(&path, &json).map_err(|source| StoreError::Io { path: p, source })
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
    fn a_graph_naming_missing_tensors_is_refused() {
        let mut g = Graph::default();
        g.inputs.push(3);
        assert!(check_graph(&g).is_err());
    }
}
