//! Power where the board measures it: hwmon `power*_input`, the INA3221 monitor of Jetson boards
//! (hwmon on JetPack 5+, the `ina3221x` IIO driver before), and RAPL `energy_uj` (differentiated).
use super::error::{SenseError, Unavailable};
use super::fs::{Roots, numbered_entries, read_string, read_trimmed, read_u64};
use super::sensor::{Every, Frame, SampleCtx, Sensor};
use super::snapshot::PowerRail;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum Rail {
    /// hwmon `power*_input`, microwatts.
    Microwatts { name: String, path: PathBuf },
    /// INA3221 channel on hwmon: bus voltage (mV) × current (mA).
    VoltAmp {
        name: String,
        mv: PathBuf,
        ma: PathBuf,
    },
    /// Old Jetson `ina3221x` IIO: `in_power*_input`, milliwatts.
    Milliwatts { name: String, path: PathBuf },
    /// RAPL zone: cumulative microjoules that wrap at `max_energy_range_uj`.
    Energy {
        name: String,
        path: PathBuf,
        range: u64,
        last: Option<(u64, Instant)>,
    },
}

impl Rail {
    fn source(&self) -> &'static str {
        match self {
            Rail::Microwatts { .. } => "hwmon",
            Rail::VoltAmp { .. } | Rail::Milliwatts { .. } => "ina3221",
            Rail::Energy { .. } => "rapl",
        }
    }

    fn name(&self) -> &str {
        match self {
            Rail::Microwatts { name, .. }
            | Rail::VoltAmp { name, .. }
            | Rail::Milliwatts { name, .. }
            | Rail::Energy { name, .. } => name,
        }
    }

    fn read(&mut self, now: Instant) -> Result<Option<f64>, SenseError> {
        Ok(match self {
            Rail::Microwatts { path, .. } => Some(read_u64(path)? as f64 / 1e6),
            Rail::Milliwatts { path, .. } => Some(read_u64(path)? as f64 / 1e3),
            Rail::VoltAmp { mv, ma, .. } => Some(read_u64(mv)? as f64 * read_u64(ma)? as f64 / 1e6),
            Rail::Energy {
                path, range, last, ..
            } => {
                let uj = read_u64(path)?;
                let w = last.and_then(|(prev, t)| {
                    let dt = now.duration_since(t).as_secs_f64();
                    let d = if uj >= prev {
                        uj - prev
                    } else {
                        uj + range.saturating_sub(prev)
                    };
                    (dt > 0.0).then(|| d as f64 / 1e6 / dt)
                });
                *last = Some((uj, now));
                w
            }
        })
    }
}

pub struct PowerSensor {
    roots: Roots,
    rails: Vec<Rail>,
    every: Every,
}

impl PowerSensor {
    pub fn new(roots: Roots, period: Duration) -> Self {
        PowerSensor {
            roots,
            rails: Vec::new(),
            every: Every::new(period),
        }
    }

    fn hwmon(&self, denied: &mut Vec<String>) -> Vec<Rail> {
        let mut rails = Vec::new();
        for (n, dir) in numbered_entries(&self.roots.sys("class/hwmon"), "hwmon") {
            let dev = read_trimmed(&dir.join("name")).unwrap_or_else(|_| format!("hwmon{n}"));
            for i in input_indices(&dir, "power") {
                let path = dir.join(format!("power{i}_input"));
                let label = read_trimmed(&dir.join(format!("power{i}_label")))
                    .unwrap_or_else(|_| format!("{dev}/power{i}"));
                keep(&mut rails, denied, Rail::Microwatts { name: label, path });
            }
            if dev.starts_with("ina3221") {
                for ch in 1..=3 {
                    let (mv, ma) = (
                        dir.join(format!("in{ch}_input")),
                        dir.join(format!("curr{ch}_input")),
                    );
                    if !(mv.exists() && ma.exists()) {
                        continue;
                    }
                    let name = read_trimmed(&dir.join(format!("in{ch}_label")))
                        .unwrap_or_else(|_| format!("{dev}/ch{ch}"));
                    keep(&mut rails, denied, Rail::VoltAmp { name, mv, ma });
                }
            }
        }
        rails
    }

    fn ina3221x_iio(&self, denied: &mut Vec<String>) -> Vec<Rail> {
        let mut rails = Vec::new();
        let Ok(devs) = std::fs::read_dir(self.roots.sys("bus/i2c/drivers/ina3221x")) else {
            return rails;
        };
        let mut iio_dirs: Vec<PathBuf> = devs
            .filter_map(|d| d.ok())
            .filter_map(|d| std::fs::read_dir(d.path()).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("iio:device"))
            .map(|e| e.path())
            .collect();
        iio_dirs.sort();
        for dir in iio_dirs {
            for ch in 0..3 {
                let path = dir.join(format!("in_power{ch}_input"));
                if !path.exists() {
                    continue;
                }
                let name = read_trimmed(&dir.join(format!("rail_name_{ch}")))
                    .unwrap_or_else(|_| format!("ina3221x/ch{ch}"));
                keep(&mut rails, denied, Rail::Milliwatts { name, path });
            }
        }
        rails
    }

    fn rapl(&self, denied: &mut Vec<String>) -> Vec<Rail> {
        let mut rails = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.roots.sys("class/powercap")) else {
            return rails;
        };
        let mut zones: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("intel-rapl:"))
            .map(|e| e.path())
            .collect();
        zones.sort();
        for z in zones {
            let path = z.join("energy_uj");
            if !path.exists() {
                continue;
            }
            let name = read_trimmed(&z.join("name")).unwrap_or_else(|_| file_name(&z));
            let range = read_u64(&z.join("max_energy_range_uj")).unwrap_or(u64::MAX);
            keep(
                &mut rails,
                denied,
                Rail::Energy {
                    name,
                    path,
                    range,
                    last: None,
                },
            );
        }
        rails
    }
}

/// The `n` of every `{kind}{n}_input` in a hwmon directory, ascending.
fn input_indices(dir: &Path, kind: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<u32> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_prefix(kind)?
                .strip_suffix("_input")?
                .parse()
                .ok()
        })
        .collect();
    out.sort_unstable();
    out
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// Keeps a rail whose file reads; remembers the ones the kernel refused (RAPL is root-only).
fn keep(rails: &mut Vec<Rail>, denied: &mut Vec<String>, rail: Rail) {
    let probe_path = match &rail {
        Rail::Microwatts { path, .. }
        | Rail::Milliwatts { path, .. }
        | Rail::Energy { path, .. } => path,
        Rail::VoltAmp { mv, .. } => mv,
    };
    match read_string(probe_path) {
        Ok(_) => rails.push(rail),
        Err(SenseError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            denied.push(probe_path.display().to_string())
        }
        Err(_) => {}
    }
}

impl Sensor for PowerSensor {
    fn name(&self) -> &'static str {
        "power"
    }

    fn probe(&mut self) -> Result<Option<String>, Unavailable> {
        let mut denied = Vec::new();
        let mut rails = self.hwmon(&mut denied);
        rails.extend(self.ina3221x_iio(&mut denied));
        rails.extend(self.rapl(&mut denied));
        self.rails = rails;
        if self.rails.is_empty() {
            if let Some(first) = denied.first() {
                return Err(Unavailable::new(
                    format!(
                        "power files exist but are not readable ({first}, {} in all)",
                        denied.len()
                    ),
                    "run augur as root or grant read access with a udev rule (RAPL energy_uj is \
                     root-only since Linux 5.10)",
                ));
            }
            return Err(Unavailable::new(
                format!(
                    "no power sensor: no hwmon power*_input or INA3221 in {}, no RAPL in {}",
                    self.roots.sys("class/hwmon").display(),
                    self.roots.sys("class/powercap").display()
                ),
                "boards without a power monitor cannot report watts; on Jetson enable the ina3221 \
                 driver, on x86 load intel_rapl_common",
            ));
        }
        let names: Vec<String> = self
            .rails
            .iter()
            .map(|r| format!("{}:{}", r.source(), r.name()))
            .collect();
        Ok(Some(names.join(", ")))
    }

    fn due(&self, now: Instant) -> bool {
        self.every.due(now)
    }

    fn sample(&mut self, ctx: &SampleCtx, frame: &mut Frame) -> Result<(), SenseError> {
        self.every.ran(ctx.now);
        let mut out = Vec::new();
        for r in &mut self.rails {
            if let Ok(Some(watts)) = r.read(ctx.now) {
                out.push(PowerRail {
                    source: r.source().into(),
                    name: r.name().into(),
                    watts,
                });
            }
        }
        if out.is_empty() {
            return Err(SenseError::NoData);
        }
        frame.power = Some(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_jetson_iio_rails_and_rapl_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let iio = dir
            .path()
            .join("sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0");
        std::fs::create_dir_all(&iio).unwrap();
        std::fs::write(iio.join("in_power0_input"), "2345\n").unwrap();
        std::fs::write(iio.join("rail_name_0"), "POM_5V_IN\n").unwrap();
        let rapl = dir.path().join("sys/class/powercap/intel-rapl:0");
        std::fs::create_dir_all(&rapl).unwrap();
        std::fs::write(rapl.join("energy_uj"), "999000000\n").unwrap();
        std::fs::write(rapl.join("max_energy_range_uj"), "1000000000\n").unwrap();
        std::fs::write(rapl.join("name"), "package-0\n").unwrap();
        let roots = Roots::new(dir.path().join("sys"), dir.path().join("proc"));
        let mut s = PowerSensor::new(roots, Duration::from_millis(1));
        assert!(s.probe().is_ok());
        let t0 = Instant::now();
        let mut f = Frame::default();
        s.sample(
            &SampleCtx {
                now: t0,
                cpu_share: 0.0,
            },
            &mut f,
        )
        .unwrap();
        let p = f.power.unwrap();
        assert_eq!(p.len(), 1, "RAPL needs two readings: {p:?}");
        assert_eq!((p[0].name.as_str(), p[0].watts), ("POM_5V_IN", 2.345));
        // 2 J over 1 s, across the wrap at 1000 J.
        std::fs::write(rapl.join("energy_uj"), "1000000\n").unwrap();
        let mut f = Frame::default();
        s.sample(
            &SampleCtx {
                now: t0 + Duration::from_secs(1),
                cpu_share: 0.0,
            },
            &mut f,
        )
        .unwrap();
        let rapl = f
            .power
            .unwrap()
            .into_iter()
            .find(|r| r.source == "rapl")
            .unwrap();
        assert!((rapl.watts - 2.0).abs() < 1e-9, "{rapl:?}");
    }
}
