//! The measurement journal: every measurement is appended (and flushed) the moment it is taken, so an
//! interrupted calibration loses nothing and resumes where it stopped. One JSON line per entry, a
//! header first; entries are a tagged enum, so a reader never guesses what a line holds.
use crate::profile::Measurement;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// The journal format this augur writes and reads. Formats 2 and 3 are refused for their reference
/// readings (three bare passes, where the live probe warms up first: see
/// `calibrate::speed::Reader::read`), which a resumed calibration would mix with its own; format 1
/// numbered networks of an older generator.
pub const FORMAT: u32 = 4;

/// The formats whose readings were taken bare.
const BARE_READINGS: [u32; 2] = [2, 3];

/// First line of a journal: the conditions its measurements are valid for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub journal: u32,
    pub runtime: String,
    pub threads: usize,
    pub cpu_model: String,
}

/// The reference-workload readings a measurement was taken between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// CPU ms of a reference pass while it was taken (the readings before and after, their
    /// geometric mean); None where the workload did not run.
    pub reference_ms: Option<f64>,
    /// Still spoiled (a speed switch or a wide spread of its runs) after its repeats.
    #[serde(default)]
    pub spoiled: bool,
    /// Times it was measured (1 unless repeated).
    #[serde(default = "one")]
    pub attempts: u32,
}

fn one() -> u32 {
    1
}

/// One line of the journal after the header. Times are as measured, not normalised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum Entry {
    /// A kernel timed alone: `config` is the key (`prior::config_key`) of the configuration asked for,
    /// what a resumed run looks up (the measured kernel is decomposed from the built graph).
    Kernel {
        config: String,
        measurement: Measurement,
        #[serde(flatten)]
        window: Window,
    },
    /// Kernel `index` (in decomposition order) of synthetic network `network`, timed inside it.
    InNetwork {
        network: usize,
        index: usize,
        measurement: Measurement,
        #[serde(flatten)]
        window: Window,
    },
    /// The `n`-th reading of the reference workload, CPU ms of a pass.
    Reference { n: usize, cpu_ms: f64 },
}

/// Why a journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("measurement journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} holds measurements taken under other conditions ({found}); remove it or calibrate into another --out"
    )]
    Conditions { path: PathBuf, found: String },
    #[error(
        "{path} is a journal of format {found}, which this augur cannot read (it reads {FORMAT}); remove it or calibrate into another --out"
    )]
    Format { path: PathBuf, found: u32 },
    #[error(
        "{path} is a journal of format {found}: its reference readings were taken without the live probe's warm-up, and a profile made from them takes a quiet board for one about 15 % faster; remove it to measure afresh, or calibrate into another --out"
    )]
    BareReadings { path: PathBuf, found: u32 },
}

pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    entries: Vec<Entry>,
    kernels: HashSet<String>,
    networks: BTreeSet<usize>,
    references: usize,
}

impl Journal {
    /// Opens (or creates) the journal. An existing journal taken under other conditions is an error,
    /// never silently mixed in; a torn last line (the process was killed mid-write) is dropped.
    pub fn open(path: &Path, header: &Header) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let (entries, rewrite) = match std::fs::File::open(path) {
            Ok(f) => read(path, std::io::BufReader::new(f), header)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), true),
            Err(e) => return Err(io(e)),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        if rewrite {
            let mut text = serde_json::to_string(header).map_err(|e| io(e.into()))? + "\n";
            for e in &entries {
                text += &(serde_json::to_string(e).map_err(|e| io(e.into()))? + "\n");
            }
            crate::util::write_atomic(path, text.as_bytes()).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io)?;
        let torn = std::fs::read(path)
            .map(|b| !b.is_empty() && b.last() != Some(&b'\n'))
            .unwrap_or(false);
        if torn {
            // End the torn line so the next entry starts on a line of its own.
            file.write_all(b"\n").map_err(io)?;
        }
        let mut j = Journal {
            path: path.to_path_buf(),
            file,
            entries: Vec::new(),
            kernels: HashSet::new(),
            networks: BTreeSet::new(),
            references: 0,
        };
        entries.into_iter().for_each(|e| j.index(e));
        Ok(j)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every entry, in the order taken.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Entries after the header.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether a kernel with this configuration key was timed alone.
    pub fn has_kernel(&self, key: &str) -> bool {
        self.kernels.contains(key)
    }

    /// Whether synthetic network `i` was timed.
    pub fn has_network(&self, i: usize) -> bool {
        self.networks.contains(&i)
    }

    /// Synthetic networks timed so far.
    pub fn networks(&self) -> usize {
        self.networks.len()
    }

    /// Readings of the reference workload so far.
    pub fn references(&self) -> usize {
        self.references
    }

    /// Appends one entry and flushes it to disk before returning.
    pub fn append(&mut self, e: Entry) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let line = serde_json::to_string(&e).map_err(|e| io(e.into()))?;
        // One write of a whole line: a kill mid-write leaves at most one torn line, dropped on resume.
        self.file
            .write_all(format!("{line}\n").as_bytes())
            .map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.index(e);
        Ok(())
    }

    fn index(&mut self, e: Entry) {
        match &e {
            Entry::Kernel { config, .. } => {
                self.kernels.insert(config.clone());
            }
            Entry::InNetwork { network, .. } => {
                self.networks.insert(*network);
            }
            Entry::Reference { n, .. } => self.references = self.references.max(*n),
        }
        self.entries.push(e);
    }
}

/// The entries of an existing journal, and whether the file must be rewritten (it was empty).
fn read(path: &Path, f: impl BufRead, header: &Header) -> Result<(Vec<Entry>, bool), JournalError> {
    let mut lines = f.lines();
    let Some(Ok(first)) = lines.next() else {
        return Ok((Vec::new(), true));
    };
    let found: Option<Header> = serde_json::from_str(&first).ok();
    let format = found.as_ref().map_or(0, |h| h.journal);
    let same = found.as_ref().is_some_and(|h| {
        h.runtime == header.runtime
            && h.threads == header.threads
            && h.cpu_model == header.cpu_model
    });
    if !same {
        return Err(JournalError::Conditions {
            path: path.to_path_buf(),
            found: found
                .map(|h| format!("{}, {} threads", h.runtime, h.threads))
                .unwrap_or_else(|| "unreadable header".into()),
        });
    }
    if BARE_READINGS.contains(&format) {
        return Err(JournalError::BareReadings {
            path: path.to_path_buf(),
            found: format,
        });
    }
    if format != FORMAT {
        return Err(JournalError::Format {
            path: path.to_path_buf(),
            found: format,
        });
    }
    let entries = lines
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    Ok((entries, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::prior::config_key;
    use crate::kernels::{Kernel, KernelKind};

    fn header() -> Header {
        Header {
            journal: FORMAT,
            runtime: "tract 0.0".into(),
            threads: 1,
            cpu_model: "cpu".into(),
        }
    }

    fn m(name: &str, ms: f64) -> Measurement {
        let mut k = Kernel::blank(name.into(), KernelKind::Pointwise);
        k.cout = ms as usize;
        Measurement::new(k, ms, ms, ms)
    }

    #[test]
    fn entries_survive_a_reopen_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        let mut j = Journal::open(&p, &header()).unwrap();
        let w = Window {
            reference_ms: Some(21.0),
            spoiled: false,
            attempts: 2,
        };
        j.append(Entry::Reference { n: 1, cpu_ms: 21.0 }).unwrap();
        j.append(Entry::Kernel {
            config: config_key(&m("a", 3.0).kernel),
            measurement: m("a", 3.0),
            window: w,
        })
        .unwrap();
        j.append(Entry::InNetwork {
            network: 4,
            index: 2,
            measurement: m("b", 1.0),
            window: w,
        })
        .unwrap();
        drop(j);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"entry\":\"kern").unwrap();
        let mut j = Journal::open(&p, &header()).unwrap();
        assert_eq!(j.len(), 3);
        assert!(j.has_kernel(&config_key(&m("a", 3.0).kernel)));
        assert!(j.has_network(4) && !j.has_network(3));
        assert_eq!(j.references(), 1);
        j.append(Entry::Reference { n: 2, cpu_ms: 22.0 }).unwrap();
        let j = Journal::open(&p, &header()).unwrap();
        assert_eq!(j.len(), 4);
        assert_eq!(j.references(), 2);
    }

    #[test]
    fn other_conditions_and_unknown_formats_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        Journal::open(&p, &header()).unwrap();
        let other = Header {
            threads: 2,
            ..header()
        };
        let e = Journal::open(&p, &other).err().unwrap();
        assert!(matches!(e, JournalError::Conditions { .. }), "{e}");
        let future = Header {
            journal: 9,
            ..header()
        };
        std::fs::write(&p, serde_json::to_string(&future).unwrap() + "\n").unwrap();
        let e = Journal::open(&p, &header()).err().unwrap().to_string();
        assert!(e.contains("format 9") && e.contains("remove it"), "{e}");
        // Format 1 numbered the networks of an older generator: its entries mean nothing now.
        let old = Header {
            journal: 1,
            ..header()
        };
        std::fs::write(&p, serde_json::to_string(&old).unwrap() + "\n").unwrap();
        let e = Journal::open(&p, &header()).err().unwrap();
        assert!(matches!(e, JournalError::Format { found: 1, .. }), "{e}");
    }

    #[test]
    fn a_journal_with_bare_readings_is_refused_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        for found in [2, 3] {
            let old = Header {
                journal: found,
                ..header()
            };
            let reading = serde_json::to_string(&Entry::Reference { n: 1, cpu_ms: 20.0 }).unwrap();
            std::fs::write(
                &p,
                serde_json::to_string(&old).unwrap() + "\n" + &reading + "\n",
            )
            .unwrap();
            let e = Journal::open(&p, &header()).err().unwrap();
            assert!(matches!(e, JournalError::BareReadings { .. }), "{e}");
            let e = e.to_string();
            assert!(e.contains("warm-up") && e.contains("remove it"), "{e}");
        }
    }
}
