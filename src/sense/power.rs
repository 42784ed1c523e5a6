//! Power where the board measures it: hwmon `power*_input` and `energy*_input` (cumulative,
//! differentiated), the INA3221 monitor of Jetson boards (hwmon on JetPack 5+, the `ina3221x` IIO
//! driver before), RAPL `energy_uj` (differentiated) and the battery (`power_now`, or
//! `current_now` × `voltage_now`). [`discover`] finds the rails; the sensor reports their watts and
//! [`super::energy`] integrates them over an interval.
use super::error::{SenseError, Unavailable};
use super::fs::{Roots, numbered_entries, read_i64, read_string, read_trimmed, read_u64};
use super::sensor::{Every, Frame, SampleCtx, Sensor};
use super::snapshot::PowerRail;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How a rail is read.
#[derive(Debug, Clone)]
pub(crate) enum How {
    /// `power*_input` or a battery's `power_now`: microwatts.
    Microwatts(PathBuf),
    /// Old Jetson `ina3221x` IIO: `in_power*_input`, milliwatts.
    Milliwatts(PathBuf),
    /// INA3221 channel on hwmon: bus voltage (mV) × current (mA).
    MilliVoltAmp { mv: PathBuf, ma: PathBuf },
    /// A battery without `power_now`: `voltage_now` (µV) × `current_now` (µA; negative while
    /// discharging on some drivers).
    MicroVoltAmp { uv: PathBuf, ua: PathBuf },
    /// Cumulative microjoules that wrap at `range` (RAPL `energy_uj` with its
    /// `max_energy_range_uj`; hwmon `energy*_input`, 64 bits).
    Microjoules { path: PathBuf, range: u64 },
}

/// One reading of a rail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Reading {
    Watts(f64),
    /// A cumulative counter's value, µJ.
    Microjoules(u64),
}

/// One power rail or energy counter of the board.
#[derive(Debug, Clone)]
pub(crate) struct Rail {
    /// `hwmon`, `ina3221`, `rapl` or `battery`.
    pub source: &'static str,
    pub name: String,
    pub how: How,
    /// A part of another rail of the same source (a RAPL sub-zone inside its package), which a
    /// total must not add again.
    pub part: bool,
    /// For the sensor: the last counter value, to differentiate.
    last: Option<(u64, Instant)>,
}

impl Rail {
    fn new(source: &'static str, name: String, how: How) -> Rail {
        Rail {
            source,
            name,
            how,
            part: false,
            last: None,
        }
    }

    pub fn is_counter(&self) -> bool {
        matches!(self.how, How::Microjoules { .. })
    }

    /// The file that says whether the rail can be read at all.
    fn probe_path(&self) -> &Path {
        match &self.how {
            How::Microwatts(p) | How::Milliwatts(p) | How::Microjoules { path: p, .. } => p,
            How::MilliVoltAmp { mv: p, .. } | How::MicroVoltAmp { uv: p, .. } => p,
        }
    }

    /// The counter's wrap-around (µJ); `u64::MAX` for a power rail.
    pub fn range(&self) -> u64 {
        match self.how {
            How::Microjoules { range, .. } => range,
            _ => u64::MAX,
        }
    }

    pub fn raw(&self) -> Result<Reading, SenseError> {
        Ok(match &self.how {
            How::Microwatts(p) => Reading::Watts(read_u64(p)? as f64 / 1e6),
            How::Milliwatts(p) => Reading::Watts(read_u64(p)? as f64 / 1e3),
            How::MilliVoltAmp { mv, ma } => {
                Reading::Watts(read_u64(mv)? as f64 * read_u64(ma)? as f64 / 1e6)
            }
            How::MicroVoltAmp { uv, ua } => Reading::Watts(
                read_i64(uv)?.unsigned_abs() as f64 * read_i64(ua)?.unsigned_abs() as f64 / 1e12,
            ),
            How::Microjoules { path, .. } => Reading::Microjoules(read_u64(path)?),
        })
    }

    /// Watts now; a counter needs two readings, so its first gives none.
    fn read(&mut self, now: Instant) -> Result<Option<f64>, SenseError> {
        Ok(match self.raw()? {
            Reading::Watts(w) => Some(w),
            Reading::Microjoules(uj) => {
                let range = self.range();
                let w = self.last.and_then(|(prev, t)| {
                    let dt = now.duration_since(t).as_secs_f64();
                    (dt > 0.0).then(|| counter_delta(prev, uj, range) as f64 / 1e6 / dt)
                });
                self.last = Some((uj, now));
                w
            }
        })
    }
}

/// What a counter that wraps at `range` advanced from `prev` to `now` (one wrap at most).
pub(crate) fn counter_delta(prev: u64, now: u64, range: u64) -> u64 {
    if now >= prev {
        now - prev
    } else {
        now.saturating_add(range.saturating_sub(prev))
    }
}

/// The board's rails, and the files that exist but were refused (RAPL is root-only).
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub rails: Vec<Rail>,
    pub denied: Vec<String>,
}

impl Found {
    /// Why files of `what` that exist could not be used (the first refused, and how many), if any.
    pub(crate) fn unreadable(&self, what: &str) -> Option<Unavailable> {
        let first = self.denied.first()?;
        Some(Unavailable::new(
            format!(
                "{what} exist but are not readable ({first}, {} in all)",
                self.denied.len()
            ),
            "run augur as root or grant read access with a udev rule (RAPL energy_uj is \
             root-only since Linux 5.10)",
        ))
    }
}

/// Every rail under `roots`: hwmon (power, energy, INA3221), the old INA3221 IIO driver, RAPL, batteries.
pub(crate) fn discover(roots: &Roots) -> Found {
    let mut found = Found::default();
    hwmon(roots, &mut found);
    ina3221x_iio(roots, &mut found);
    rapl(roots, &mut found);
    battery(roots, &mut found);
    found
}

fn hwmon(roots: &Roots, found: &mut Found) {
    for (n, dir) in numbered_entries(&roots.sys("class/hwmon"), "hwmon") {
        let dev = read_trimmed(&dir.join("name")).unwrap_or_else(|_| format!("hwmon{n}"));
        for i in input_indices(&dir, "power") {
            let path = dir.join(format!("power{i}_input"));
            let label = read_trimmed(&dir.join(format!("power{i}_label")))
                .unwrap_or_else(|_| format!("{dev}/power{i}"));
            found.keep(Rail::new("hwmon", label, How::Microwatts(path)));
        }
        for i in input_indices(&dir, "energy") {
            let path = dir.join(format!("energy{i}_input"));
            let label = read_trimmed(&dir.join(format!("energy{i}_label")))
                .unwrap_or_else(|_| format!("{dev}/energy{i}"));
            let how = How::Microjoules {
                path,
                range: u64::MAX,
            };
            found.keep(Rail::new("hwmon", label, how));
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
                found.keep(Rail::new("ina3221", name, How::MilliVoltAmp { mv, ma }));
            }
        }
    }
}

fn ina3221x_iio(roots: &Roots, found: &mut Found) {
    let Ok(devs) = std::fs::read_dir(roots.sys("bus/i2c/drivers/ina3221x")) else {
        return;
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
            found.keep(Rail::new("ina3221", name, How::Milliwatts(path)));
        }
    }
}

fn rapl(roots: &Roots, found: &mut Found) {
    let Ok(rd) = std::fs::read_dir(roots.sys("class/powercap")) else {
        return;
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
        let dir = file_name(&z);
        let name = read_trimmed(&z.join("name")).unwrap_or_else(|_| dir.clone());
        let range = read_u64(&z.join("max_energy_range_uj")).unwrap_or(u64::MAX);
        let mut rail = Rail::new("rapl", name, How::Microjoules { path, range });
        // `intel-rapl:0:1` is a sub-zone (core, uncore, dram) of package `intel-rapl:0`.
        rail.part = dir.matches(':').count() > 1;
        found.keep(rail);
    }
}

fn battery(roots: &Roots, found: &mut Found) {
    let Ok(rd) = std::fs::read_dir(roots.sys("class/power_supply")) else {
        return;
    };
    let mut supplies: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    supplies.sort();
    for s in supplies {
        if read_trimmed(&s.join("type")).ok().as_deref() != Some("Battery") {
            continue;
        }
        let name = file_name(&s);
        let (power, uv, ua) = (
            s.join("power_now"),
            s.join("voltage_now"),
            s.join("current_now"),
        );
        let how = if power.exists() {
            How::Microwatts(power)
        } else if uv.exists() && ua.exists() {
            How::MicroVoltAmp { uv, ua }
        } else {
            continue;
        };
        found.keep(Rail::new("battery", name, how));
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

impl Found {
    /// Keeps a rail whose file reads; remembers the ones the kernel refused.
    fn keep(&mut self, rail: Rail) {
        match read_string(rail.probe_path()) {
            Ok(_) => self.rails.push(rail),
            Err(SenseError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                self.denied.push(rail.probe_path().display().to_string())
            }
            Err(_) => {}
        }
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
}

impl Sensor for PowerSensor {
    fn name(&self) -> &'static str {
        "power"
    }

    fn probe(&mut self) -> Result<Option<String>, Unavailable> {
        let found = discover(&self.roots);
        let unreadable = found.unreadable("power files");
        self.rails = found.rails;
        if self.rails.is_empty() {
            if let Some(u) = unreadable {
                return Err(u);
            }
            return Err(Unavailable::new(
                format!(
                    "no power sensor: no hwmon power*_input, energy*_input or INA3221 in {}, no RAPL \
                     in {}, no battery in {}",
                    self.roots.sys("class/hwmon").display(),
                    self.roots.sys("class/powercap").display(),
                    self.roots.sys("class/power_supply").display()
                ),
                "boards without a power monitor cannot report watts; on Jetson enable the ina3221 \
                 driver, on x86 load intel_rapl_common",
            ));
        }
        let names: Vec<String> = self
            .rails
            .iter()
            .map(|r| format!("{}:{}", r.source, r.name))
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
                    source: r.source.into(),
                    name: r.name.clone(),
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
