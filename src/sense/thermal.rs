//! Temperatures of the thermal zones under `/sys/class/thermal`: the early warning of throttling.
use super::error::{SenseError, Unavailable};
use super::fs::{Roots, numbered_entries, read_i64, read_trimmed};
use super::sensor::{Every, Frame, SampleCtx, Sensor};
use super::snapshot::ThermalZone;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct ThermalSensor {
    roots: Roots,
    zones: Vec<(String, String, PathBuf)>,
    every: Every,
}

impl ThermalSensor {
    pub fn new(roots: Roots, period: Duration) -> Self {
        ThermalSensor {
            roots,
            zones: Vec::new(),
            every: Every::new(period),
        }
    }
}

impl Sensor for ThermalSensor {
    fn name(&self) -> &'static str {
        "thermal"
    }

    fn probe(&mut self) -> Result<Option<String>, Unavailable> {
        let dir = self.roots.sys("class/thermal");
        for (n, d) in numbered_entries(&dir, "thermal_zone") {
            let temp = d.join("temp");
            // A zone whose sensor is off fails on read (ENODATA/EINVAL); it is left out, not fatal.
            if read_i64(&temp).is_ok() {
                let kind = read_trimmed(&d.join("type")).unwrap_or_default();
                self.zones.push((format!("thermal_zone{n}"), kind, temp));
            }
        }
        if self.zones.is_empty() {
            return Err(Unavailable::new(
                format!(
                    "no readable thermal_zone*/temp in {} (none in a VM)",
                    dir.display()
                ),
                "enable CONFIG_THERMAL and the SoC's thermal sensor driver; nothing to do in a VM",
            ));
        }
        Ok(Some(format!("{} zone(s)", self.zones.len())))
    }

    fn due(&self, now: Instant) -> bool {
        self.every.due(now)
    }

    fn sample(&mut self, ctx: &SampleCtx, frame: &mut Frame) -> Result<(), SenseError> {
        self.every.ran(ctx.now);
        let zones: Vec<ThermalZone> = self
            .zones
            .iter()
            .filter_map(|(zone, kind, temp)| {
                let milli = read_i64(temp).ok()?;
                Some(ThermalZone {
                    zone: zone.clone(),
                    kind: kind.clone(),
                    celsius: milli as f64 / 1e3,
                })
            })
            .collect();
        if zones.is_empty() {
            return Err(SenseError::NoData);
        }
        frame.thermal = Some(zones);
        Ok(())
    }
}
