//! Pressure stall information from `/proc/pressure/{cpu,memory,io}`: how much time tasks spent
//! waiting for a resource, the most direct "is someone in my way" signal the kernel offers.
use super::error::{SenseError, Unavailable};
use super::fs::{Roots, read_string};
use super::sensor::{Frame, SampleCtx, Sensor};
use super::snapshot::{Pressure, Psi, PsiLine};
use std::path::Path;

const RESOURCES: [&str; 3] = ["cpu", "memory", "io"];

pub(crate) fn parse_psi(text: &str, path: &Path) -> Result<Psi, SenseError> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let kind = it.next();
        let mut l = PsiLine::default();
        let mut seen = 0;
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v: f64 = v
                .parse()
                .map_err(|_| SenseError::parse(path, "a PSI value", line))?;
            seen += 1;
            match k {
                "avg10" => l.avg10 = v,
                "avg60" => l.avg60 = v,
                "avg300" => l.avg300 = v,
                "total" => l.total_seconds = v / 1e6,
                _ => seen -= 1,
            }
        }
        if seen < 4 {
            return Err(SenseError::parse(path, "a PSI line", line));
        }
        match kind {
            Some("some") => some = Some(l),
            Some("full") => full = Some(l),
            _ => {}
        }
    }
    match some {
        Some(some) => Ok(Psi { some, full }),
        None => Err(SenseError::parse(path, "a `some` line", text)),
    }
}

pub struct PsiSensor {
    roots: Roots,
    live: Vec<&'static str>,
}

impl PsiSensor {
    pub fn new(roots: Roots) -> Self {
        PsiSensor {
            roots,
            live: Vec::new(),
        }
    }

    fn read(&self, res: &str) -> Result<Psi, SenseError> {
        let path = self.roots.proc(&format!("pressure/{res}"));
        parse_psi(&read_string(&path)?, &path)
    }
}

impl Sensor for PsiSensor {
    fn name(&self) -> &'static str {
        "pressure"
    }

    fn probe(&mut self) -> Result<Option<String>, Unavailable> {
        let dir = self.roots.proc("pressure");
        if !dir.is_dir() {
            return Err(Unavailable::new(
                format!("no {}: kernel built without CONFIG_PSI", dir.display()),
                "use a kernel with CONFIG_PSI=y (PSI needs Linux 4.20+)",
            ));
        }
        let mut errors = Vec::new();
        for res in RESOURCES {
            match self.read(res) {
                Ok(_) => self.live.push(res),
                Err(e) => errors.push(e),
            }
        }
        if self.live.is_empty() {
            // With psi=0 on the command line the files exist but reading them fails with EOPNOTSUPP.
            let why = errors.first().map(|e| e.to_string()).unwrap_or_default();
            return Err(Unavailable::new(
                format!("PSI files unreadable ({why}): PSI is disabled at boot"),
                "add psi=1 to the kernel command line (kernels with CONFIG_PSI_DEFAULT_DISABLED, \
                 e.g. Raspberry Pi OS)",
            ));
        }
        let missing: Vec<&str> = RESOURCES
            .into_iter()
            .filter(|r| !self.live.contains(r))
            .collect();
        Ok((!missing.is_empty()).then(|| format!("no pressure for: {}", missing.join(", "))))
    }

    fn sample(&mut self, _: &SampleCtx, frame: &mut Frame) -> Result<(), SenseError> {
        let mut p = Pressure::default();
        for res in &self.live {
            let v = Some(self.read(res)?);
            match *res {
                "cpu" => p.cpu = v,
                "memory" => p.memory = v,
                _ => p.io = v,
            }
        }
        frame.pressure = Some(p);
        Ok(())
    }
}
