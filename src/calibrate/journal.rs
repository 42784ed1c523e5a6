//! The measurement journal: every measurement is appended (and flushed) the moment it is taken, so an
//! interrupted calibration loses nothing and resumes where it stopped.
use crate::profile::Measurement;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// First line of a journal: the conditions its measurements are valid for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub journal: u32,
    pub runtime: String,
    pub threads: usize,
    pub cpu_model: String,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    #[serde(flatten)]
    m: Measurement,
}

pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    pub measured: HashMap<String, Measurement>,
}

impl Journal {
    /// Opens (or creates) the journal. An existing journal taken under other conditions is an error,
    /// never silently mixed in; a torn last line (the process was killed mid-write) is dropped.
    pub fn open(path: &Path, header: &Header) -> std::io::Result<Journal> {
        let mut measured = HashMap::new();
        if let Ok(f) = std::fs::File::open(path) {
            let mut lines = std::io::BufReader::new(f).lines();
            if let Some(Ok(first)) = lines.next() {
                let found: Option<Header> = serde_json::from_str(&first).ok();
                if found.as_ref() != Some(header) {
                    return Err(std::io::Error::other(format!(
                        "{} holds measurements taken under other conditions ({}); remove it or calibrate into another --out",
                        path.display(),
                        found
                            .map(|h| format!("{}, {} threads", h.runtime, h.threads))
                            .unwrap_or_else(|| "unreadable header".into())
                    )));
                }
            }
            for line in lines.map_while(Result::ok) {
                if let Ok(e) = serde_json::from_str::<Entry>(&line) {
                    measured.insert(e.key, e.m);
                }
            }
        }
        let fresh = measured.is_empty()
            && std::fs::metadata(path)
                .map(|m| m.len() == 0)
                .unwrap_or(true);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let torn = std::fs::read(path)
            .map(|b| !b.is_empty() && b.last() != Some(&b'\n'))
            .unwrap_or(false);
        if torn && !fresh {
            // End the torn line so the next entry starts on a line of its own.
            file.write_all(b"\n")?;
        }
        if fresh {
            file.set_len(0)?;
            writeln!(
                file,
                "{}",
                serde_json::to_string(header).map_err(std::io::Error::other)?
            )?;
            file.sync_data()?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            measured,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one measurement and flushes it to disk before returning.
    pub fn append(&mut self, key: String, m: Measurement) -> std::io::Result<()> {
        let line = serde_json::to_string(&Entry {
            key: key.clone(),
            m: m.clone(),
        })
        .map_err(std::io::Error::other)?;
        // One write of a whole line: a kill mid-write leaves at most one torn line, dropped on resume.
        self.file.write_all(format!("{line}\n").as_bytes())?;
        self.file.sync_data()?;
        self.measured.insert(key, m);
        Ok(())
    }
}
