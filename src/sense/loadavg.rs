//! Load averages and the runnable/total thread counts from `/proc/loadavg`.
use super::error::{SenseError, Unavailable};
use super::fs::{Roots, read_string};
use super::sensor::{Frame, SampleCtx, Sensor};
use super::snapshot::LoadAvg;
use std::path::Path;

pub(crate) fn parse_loadavg(text: &str, path: &Path) -> Result<LoadAvg, SenseError> {
    let f: Vec<&str> = text.split_ascii_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let (Some(one), Some(five), Some(fifteen)) = (num(0), num(1), num(2)) else {
        return Err(SenseError::parse(path, "three load averages", text));
    };
    let (runnable, threads) = match f.get(3).and_then(|v| v.split_once('/')) {
        Some((r, t)) => (r.parse().ok(), t.parse().ok()),
        None => (None, None),
    };
    Ok(LoadAvg {
        one,
        five,
        fifteen,
        runnable,
        threads,
    })
}

pub struct LoadAvgSensor {
    roots: Roots,
}

impl LoadAvgSensor {
    pub fn new(roots: Roots) -> Self {
        LoadAvgSensor { roots }
    }

    fn read(&self) -> Result<LoadAvg, SenseError> {
        let path = self.roots.proc("loadavg");
        parse_loadavg(&read_string(&path)?, &path)
    }
}

impl Sensor for LoadAvgSensor {
    fn name(&self) -> &'static str {
        "loadavg"
    }

    fn probe(&mut self) -> Result<Option<String>, Unavailable> {
        self.read()
            .map_err(|e| Unavailable::new(e.to_string(), "mount procfs"))?;
        Ok(None)
    }

    fn sample(&mut self, _: &SampleCtx, frame: &mut Frame) -> Result<(), SenseError> {
        frame.loadavg = Some(self.read()?);
        Ok(())
    }
}
