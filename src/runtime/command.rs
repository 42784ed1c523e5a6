//! The command backend: any runtime that a command can time. augur writes the model to a temporary file,
//! runs the command made from a template, and reads one JSON object from its standard output:
//! `{"latency_ms": {"median": f, "p10": f, "p90": f}, "runs": n, "version": "…"}` (`samples_ms`
//! optional). `scripts/onnxruntime_bench.py` is such a command for ONNX Runtime.
//!
//! The template is split into words like a shell would (quotes, backslashes) but no shell runs it, so a
//! model path never needs quoting. Placeholders: `{model}` (required), `{threads}`, `{runs}`,
//! `{warmup}`, `{max_seconds}`.
use super::{Backend, RunSpec, RuntimeError, Timing};
use serde::Deserialize;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

/// Grace on top of the spec's time budget: interpreter start-up, imports, model load.
const GRACE: Duration = Duration::from_secs(60);
/// How much of the command's stderr an error quotes.
const STDERR_TAIL: usize = 1500;

/// Interpreters whose script, not themselves, names the backend.
const INTERPRETERS: &[&str] = &["sh", "bash", "env", "node", "perl", "ruby", "uv", "uvx"];

/// An external command that times a model.
#[derive(Debug)]
pub struct CommandBackend {
    template: String,
    words: Vec<String>,
    name: String,
    timeout: Option<Duration>,
    version: Mutex<Option<String>>,
}

/// Why a command template does not split into words.
#[derive(Debug, thiserror::Error)]
enum SplitError {
    #[error("unterminated single quote")]
    SingleQuote,
    #[error("unterminated double quote")]
    DoubleQuote,
    #[error("a trailing backslash escapes nothing")]
    TrailingBackslash,
}

/// Splits a command line into words as a POSIX shell would, without expanding anything. Written
/// here because the word-splitting crates at hand also take `#` as a comment, which a template's
/// arguments may hold.
fn split_words(s: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(SplitError::SingleQuote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(SplitError::DoubleQuote),
                        },
                        Some(c) => word.push(c),
                        None => return Err(SplitError::DoubleQuote),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(SplitError::TrailingBackslash),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn stem(word: &str) -> Option<String> {
    Path::new(word)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
}

/// The backend's name: the program's, or for an interpreter the script's (`onnxruntime_bench`).
fn command_name(words: &[String]) -> String {
    let first = words.first().and_then(|w| stem(w)).unwrap_or_default();
    if INTERPRETERS.contains(&first.as_str()) || first.starts_with("python") {
        let script = words[1..]
            .iter()
            .find(|w| !w.starts_with('-') && !w.contains('{') && !w.contains(char::is_whitespace));
        if let Some(s) = script.and_then(|w| stem(w)) {
            return s;
        }
    }
    first
}

/// A model written to a temporary file, removed when dropped.
struct TempModel(PathBuf);

impl TempModel {
    fn write(bytes: &[u8]) -> std::io::Result<TempModel> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("augur-{}-{nanos:x}-{n}.onnx", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let model = TempModel(path);
        f.write_all(bytes)?;
        Ok(model)
    }
}

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(Deserialize)]
struct Reply {
    latency_ms: ReplyLatency,
    runs: usize,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    samples_ms: Vec<f64>,
}

#[derive(Deserialize)]
struct ReplyLatency {
    median: f64,
    p10: f64,
    p90: f64,
}

/// The last `max` bytes of a command's output, on a char boundary, on one line (errors are one line).
fn tail(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    if start > 0 {
        format!("…{}", &s[start..])
    } else {
        s
    }
}

/// What a finished command left.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exited(std::io::Result<ExitStatus>),
}

fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut buf = Vec::new();
    // A read error ends the stream; what was read so far is what the command said.
    let _ = r.read_to_end(&mut buf);
    buf
}

impl CommandBackend {
    /// A backend from a command template, e.g.
    /// `python3 scripts/onnxruntime_bench.py {model} --threads {threads} --runs {runs} --warmup {warmup}`.
    pub fn new(template: &str) -> Result<CommandBackend, RuntimeError> {
        let spec_err = |detail: String| RuntimeError::Spec {
            spec: format!("cmd:{template}"),
            detail,
        };
        let words = split_words(template).map_err(|e| spec_err(e.to_string()))?;
        if words.is_empty() {
            return Err(spec_err("the command is empty".into()));
        }
        if !words.iter().any(|w| w.contains("{model}")) {
            return Err(spec_err(
                "the command never mentions {model}, the path of the model to time".into(),
            ));
        }
        Ok(CommandBackend {
            template: template.to_string(),
            name: command_name(&words),
            words,
            timeout: None,
            version: Mutex::new(None),
        })
    }

    /// Stops the command after `timeout` (default: the spec's `max_seconds` plus a minute).
    pub fn with_timeout(mut self, timeout: Duration) -> CommandBackend {
        self.timeout = Some(timeout);
        self
    }

    pub fn template(&self) -> &str {
        &self.template
    }

    /// The command line for a model file and spec.
    fn argv(&self, model: &Path, spec: &RunSpec) -> Vec<String> {
        let model = model.to_string_lossy();
        self.words
            .iter()
            .map(|w| {
                w.replace("{model}", &model)
                    .replace("{threads}", &spec.threads.to_string())
                    .replace("{runs}", &spec.runs.to_string())
                    .replace("{warmup}", &spec.warmup.to_string())
                    .replace("{max_seconds}", &spec.max_seconds.to_string())
            })
            .collect()
    }

    fn fail(&self, detail: String) -> RuntimeError {
        RuntimeError::Command {
            command: self.name.clone(),
            detail,
        }
    }

    /// Runs `argv` to completion or until `timeout`; on timeout, kills it and all it started.
    fn run(&self, argv: &[String], timeout: Duration) -> Result<Finished, RuntimeError> {
        let started = Instant::now();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout also stops what it started (python under sh …).
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| self.fail(format!("cannot start `{}`: {e}", argv[0])))?;
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            std::thread::spawn(move || tx.send(Event::Stdout(read_all(out))));
        }
        if let Some(err) = child.stderr.take() {
            let tx = tx.clone();
            std::thread::spawn(move || tx.send(Event::Stderr(read_all(err))));
        }
        std::thread::spawn(move || tx.send(Event::Exited(child.wait())));
        let deadline = started + timeout;
        let (mut stdout, mut stderr, mut status) = (None, None, None);
        while stdout.is_none() || stderr.is_none() || status.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Event::Stdout(b)) => stdout = Some(b),
                Ok(Event::Stderr(b)) => stderr = Some(b),
                Ok(Event::Exited(Ok(s))) => status = Some(s),
                Ok(Event::Exited(Err(e))) => {
                    kill_group(pid);
                    return Err(self.fail(format!("lost track of the command: {e}")));
                }
                Err(_) => {
                    kill_group(pid);
                    return Err(RuntimeError::Timeout {
                        command: self.name.clone(),
                        seconds: started.elapsed().as_secs_f64(),
                    });
                }
            }
        }
        match (status, stdout, stderr) {
            (Some(status), Some(stdout), Some(stderr)) => Ok(Finished {
                status,
                stdout,
                stderr,
            }),
            _ => Err(self.fail("the command's outcome was lost".into())),
        }
    }

    fn parse(&self, stdout: &[u8]) -> Result<Timing, RuntimeError> {
        let bad = |detail: String| RuntimeError::BadOutput {
            command: self.name.clone(),
            detail,
        };
        let text = String::from_utf8_lossy(stdout);
        // The whole output, else its last line that is a reply (the tool may log before it).
        let reply: Reply = match serde_json::from_str(text.trim()) {
            Ok(r) => r,
            Err(whole) => text
                .lines()
                .rev()
                .filter(|l| l.trim_start().starts_with('{'))
                .find_map(|l| serde_json::from_str(l.trim()).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "no JSON reply {{\"latency_ms\": {{\"median\", \"p10\", \"p90\"}}, \"runs\"}} ({whole}); it printed: {}",
                        if text.trim().is_empty() { "nothing".into() } else { tail(stdout, 300) }
                    ))
                })?,
        };
        let l = &reply.latency_ms;
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        let ordered = l.p10 <= l.median * (1.0 + 1e-9) && l.median <= l.p90 * (1.0 + 1e-9);
        let valid = ok(l.median) && ok(l.p10) && ok(l.p90) && ordered;
        if !valid {
            return Err(bad(format!(
                "latencies must be finite, non-negative and p10 ≤ median ≤ p90; got {} / {} / {}",
                l.p10, l.median, l.p90
            )));
        }
        if reply.runs == 0 {
            return Err(bad("it reports 0 runs".into()));
        }
        if reply.samples_ms.iter().any(|&v| !ok(v)) {
            return Err(bad("samples_ms holds a negative or non-finite time".into()));
        }
        if let Some(v) = reply.version.filter(|v| !v.trim().is_empty()) {
            *self.version.lock().unwrap_or_else(PoisonError::into_inner) = Some(v);
        }
        Ok(Timing {
            median_ms: l.median,
            p10_ms: l.p10,
            p90_ms: l.p90,
            runs: reply.runs,
            samples_ms: reply.samples_ms,
        })
    }
}

/// Kills a process group that this module started (its leader's pid is the group id).
fn kill_group(pid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals the process group; no memory is involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

impl Backend for CommandBackend {
    fn name(&self) -> String {
        self.name.clone()
    }

    /// The version the command last reported, or its name until it has run.
    fn version(&self) -> String {
        self.version
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| format!("{} (version not reported yet)", self.name))
    }

    fn time_onnx(&self, onnx: &[u8], spec: &RunSpec) -> Result<Timing, RuntimeError> {
        let model = TempModel::write(onnx)
            .map_err(|e| self.fail(format!("cannot write the model to a temporary file: {e}")))?;
        let argv = self.argv(&model.0, spec);
        let timeout = self.timeout.unwrap_or_else(|| {
            Duration::try_from_secs_f64(spec.max_seconds)
                .map_or(Duration::from_secs(3600), |b| b.saturating_add(GRACE))
        });
        let done = self.run(&argv, timeout)?;
        if !done.status.success() {
            let said = tail(&done.stderr, STDERR_TAIL);
            return Err(self.fail(format!(
                "{}{}",
                done.status,
                if said.is_empty() {
                    String::new()
                } else {
                    format!("; stderr: {said}")
                }
            )));
        }
        self.parse(&done.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words(r#"python3  bench.py {model} --x 'a b' "c \"d\"" e\ f"#).unwrap(),
            vec![
                "python3", "bench.py", "{model}", "--x", "a b", "c \"d\"", "e f"
            ]
        );
        assert_eq!(split_words("a '' b").unwrap(), vec!["a", "", "b"]);
        assert!(split_words("a 'b").is_err());
        assert!(split_words("a \"b").is_err());
        assert!(split_words("a \\").is_err());
        assert!(split_words("  ").unwrap().is_empty());
    }

    #[test]
    fn names_and_placeholders() {
        let b = CommandBackend::new(
            "python3 scripts/onnxruntime_bench.py {model} --threads {threads} --runs {runs} --warmup {warmup}",
        )
        .unwrap();
        assert_eq!(b.name, "onnxruntime_bench");
        let spec = RunSpec {
            threads: 2,
            ..Default::default()
        };
        let argv = b.argv(Path::new("/tmp/m x.onnx"), &spec);
        assert_eq!(argv[2], "/tmp/m x.onnx");
        assert_eq!(
            &argv[3..],
            ["--threads", "2", "--runs", "10", "--warmup", "3"]
        );
        assert_eq!(
            CommandBackend::new("/opt/bin/ortbench -m {model}")
                .unwrap()
                .name,
            "ortbench"
        );
        assert_eq!(
            CommandBackend::new("sh -c 'cat {model}'").unwrap().name,
            "sh"
        );
        assert!(CommandBackend::new("bench --model").is_err());
    }

    #[test]
    fn replies_are_checked() {
        let b = CommandBackend::new("x {model}").unwrap();
        let t = b
            .parse(
                br#"loading...
{"latency_ms": {"median": 2.0, "p10": 1.5, "p90": 3.0}, "runs": 7, "version": "x 1.0"}
"#,
            )
            .unwrap();
        assert_eq!((t.median_ms, t.runs), (2.0, 7));
        assert_eq!(b.version(), "x 1.0");
        for bad in [
            &b""[..],
            b"{}",
            br#"{"latency_ms": {"median": 2.0, "p10": 2.5, "p90": 3.0}, "runs": 7}"#,
            br#"{"latency_ms": {"median": -1, "p10": -2, "p90": 3.0}, "runs": 7}"#,
            br#"{"latency_ms": {"median": 1, "p10": 1, "p90": 1}, "runs": 0}"#,
        ] {
            let e = b.parse(bad).unwrap_err();
            assert!(matches!(e, RuntimeError::BadOutput { .. }), "{e}");
        }
    }

    #[test]
    fn tails_respect_char_boundaries() {
        let s = "é".repeat(10);
        let t = tail(s.as_bytes(), 5);
        assert!(t.starts_with('…') && t.len() <= 5 + '…'.len_utf8());
        assert_eq!(tail(b"  ok \n", 100), "ok");
        assert_eq!(
            tail(b"Traceback:\n  line 1\n\nValueError: x\n", 100),
            "Traceback: | line 1 | ValueError: x"
        );
    }
}
