//! CPU frequency per core and the cluster topology: cpufreq policies (`scaling_cur_freq`,
//! `cpuinfo_{min,max}_freq`, `scaling_governor`), falling back to `cpu MHz` in `/proc/cpuinfo`;
//! big.LITTLE clusters from the policies' `related_cpus`, else `cpu_capacity` and `topology/`.
use super::error::{SenseError, Unavailable};
use super::fs::{
    Roots, numbered_entries, parse_cpu_list, read_i64, read_string, read_trimmed, read_u64,
};
use super::sensor::{Every, Frame, SampleCtx, Sensor};
use super::snapshot::{Cluster, CpuState};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Governors change rarely; re-reading them every this many samples is plenty.
const GOVERNOR_EVERY: u64 = 50;

#[derive(Debug, Clone)]
struct Policy {
    dir: PathBuf,
    cpus: Vec<usize>,
    min_hz: Option<f64>,
    max_hz: Option<f64>,
    governor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Cpufreq,
    Cpuinfo,
}

pub struct CpuFreqSensor {
    roots: Roots,
    source: Source,
    cpus: Vec<usize>,
    capacity: BTreeMap<usize, u32>,
    policies: Vec<Policy>,
    clusters: Vec<Cluster>,
    samples: u64,
    cpuinfo_every: Every,
}

impl CpuFreqSensor {
    pub fn new(roots: Roots, slow_period: Duration) -> Self {
        CpuFreqSensor {
            roots,
            source: Source::Cpufreq,
            cpus: Vec::new(),
            capacity: BTreeMap::new(),
            policies: Vec::new(),
            clusters: Vec::new(),
            samples: 0,
            cpuinfo_every: Every::new(slow_period),
        }
    }

    fn cpu_dir(&self, cpu: usize) -> PathBuf {
        self.roots.sys(&format!("devices/system/cpu/cpu{cpu}"))
    }

    fn discover_cpus(&self) -> Vec<usize> {
        let online = self.roots.sys("devices/system/cpu/online");
        if let Ok(s) = read_string(&online)
            && let Some(v) = parse_cpu_list(&s)
            && !v.is_empty()
        {
            return v;
        }
        let dir = self.roots.sys("devices/system/cpu");
        numbered_entries(&dir, "cpu")
            .into_iter()
            .map(|(n, _)| n as usize)
            .collect()
    }

    fn discover_policies(&self) -> Vec<Policy> {
        let dir = self.roots.sys("devices/system/cpu/cpufreq");
        let khz = |p: PathBuf| read_u64(&p).ok().map(|v| v as f64 * 1e3);
        numbered_entries(&dir, "policy")
            .into_iter()
            .filter_map(|(_, d)| {
                let cpus = read_string(&d.join("related_cpus"))
                    .or_else(|_| read_string(&d.join("affected_cpus")))
                    .ok()
                    .and_then(|s| parse_cpu_list(&s.replace(' ', ",")))?;
                Some(Policy {
                    min_hz: khz(d.join("cpuinfo_min_freq")),
                    max_hz: khz(d.join("cpuinfo_max_freq")),
                    governor: read_trimmed(&d.join("scaling_governor")).ok(),
                    dir: d,
                    cpus,
                })
            })
            .filter(|p| !p.cpus.is_empty())
            .collect()
    }

    /// Frequency domains are the clusters; without cpufreq, CPUs of equal capacity and cluster id
    /// are grouped (all one cluster on a symmetric machine).
    fn build_clusters(&self) -> Vec<Cluster> {
        let mut groups: BTreeMap<(Option<u32>, i64), Vec<usize>> = BTreeMap::new();
        if !self.policies.is_empty() {
            return self
                .policies
                .iter()
                .enumerate()
                .map(|(id, p)| Cluster {
                    id,
                    cpus: p.cpus.clone(),
                    capacity: p
                        .cpus
                        .iter()
                        .filter_map(|c| self.capacity.get(c).copied())
                        .max(),
                    frequency_hertz: None,
                    max_hertz: p.max_hz,
                })
                .collect();
        }
        for &cpu in &self.cpus {
            let topo = |f: &str| read_i64(&self.cpu_dir(cpu).join("topology").join(f)).ok();
            // cluster_id is -1 or 65535 where the firmware does not describe clusters.
            let cluster_id = topo("cluster_id")
                .filter(|&v| (0..65535).contains(&v))
                .or_else(|| topo("physical_package_id"))
                .unwrap_or(0);
            groups
                .entry((self.capacity.get(&cpu).copied(), cluster_id))
                .or_default()
                .push(cpu);
        }
        // Smallest capacity first, like cpufreq policy numbering on big.LITTLE.
        groups
            .into_iter()
            .enumerate()
            .map(|(id, ((capacity, _), cpus))| Cluster {
                id,
                cpus,
                capacity,
                frequency_hertz: None,
                max_hertz: None,
            })
            .collect()
    }

    fn cluster_of(&self, cpu: usize) -> Option<usize> {
        self.clusters.iter().position(|c| c.cpus.contains(&cpu))
    }

    fn cpuinfo_mhz(&self) -> Result<BTreeMap<usize, f64>, SenseError> {
        let path = self.roots.proc("cpuinfo");
        let text = read_string(&path)?;
        let mut out = BTreeMap::new();
        let mut cpu = None;
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k.trim() {
                "processor" => cpu = v.trim().parse::<usize>().ok(),
                "cpu MHz" => {
                    if let (Some(c), Ok(mhz)) = (cpu, v.trim().parse::<f64>()) {
                        out.insert(c, mhz * 1e6);
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

impl Sensor for CpuFreqSensor {
    fn name(&self) -> &'static str {
        "cpufreq"
    }

    fn probe(&mut self) -> Result<Option<String>, Unavailable> {
        self.cpus = self.discover_cpus();
        for &cpu in &self.cpus {
            if let Ok(v) = read_u64(&self.cpu_dir(cpu).join("cpu_capacity")) {
                self.capacity.insert(cpu, v as u32);
            }
        }
        self.policies = self.discover_policies();
        self.clusters = self.build_clusters();
        if !self.policies.is_empty() {
            self.source = Source::Cpufreq;
            return Ok(Some(format!(
                "cpufreq: {} CPUs in {} frequency domain(s)",
                self.cpus.len(),
                self.policies.len()
            )));
        }
        let cpufreq_dir = self.roots.sys("devices/system/cpu/cpufreq");
        match self.cpuinfo_mhz() {
            Ok(m) if !m.is_empty() => {
                self.source = Source::Cpuinfo;
                if self.cpus.is_empty() {
                    self.cpus = m.keys().copied().collect();
                    self.clusters = self.build_clusters();
                }
                Ok(Some(format!(
                    "current frequency from {} only: no cpufreq policies in {} (min/max and \
                     governor unknown; in a VM this is the nominal clock)",
                    self.roots.proc("cpuinfo").display(),
                    cpufreq_dir.display()
                )))
            }
            _ => Err(Unavailable::new(
                format!(
                    "no cpufreq policies in {} and no `cpu MHz` in {}",
                    cpufreq_dir.display(),
                    self.roots.proc("cpuinfo").display()
                ),
                "enable the board's cpufreq driver (CONFIG_CPU_FREQ and e.g. cpufreq-dt or \
                 raspberrypi-cpufreq); a VM does not expose frequency",
            )),
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.source == Source::Cpufreq || self.cpuinfo_every.due(now)
    }

    fn sample(&mut self, ctx: &SampleCtx, frame: &mut Frame) -> Result<(), SenseError> {
        let mut cur: BTreeMap<usize, f64> = BTreeMap::new();
        let mut policy_of: BTreeMap<usize, usize> = BTreeMap::new();
        match self.source {
            Source::Cpufreq => {
                let refresh_gov = self.samples.is_multiple_of(GOVERNOR_EVERY);
                for (pi, p) in self.policies.iter_mut().enumerate() {
                    let hz = read_u64(&p.dir.join("scaling_cur_freq"))
                        .or_else(|_| read_u64(&p.dir.join("cpuinfo_cur_freq")))
                        .ok()
                        .map(|khz| khz as f64 * 1e3);
                    if refresh_gov {
                        p.governor = read_trimmed(&p.dir.join("scaling_governor")).ok();
                    }
                    for &c in &p.cpus {
                        policy_of.insert(c, pi);
                        if let Some(hz) = hz {
                            cur.insert(c, hz);
                        }
                    }
                }
                if cur.is_empty() {
                    return Err(SenseError::NoData);
                }
            }
            Source::Cpuinfo => {
                self.cpuinfo_every.ran(ctx.now);
                cur = self.cpuinfo_mhz()?;
            }
        }
        self.samples += 1;
        frame.cpus = self
            .cpus
            .iter()
            .map(|&cpu| {
                let p = policy_of.get(&cpu).and_then(|&i| self.policies.get(i));
                CpuState {
                    cpu,
                    cluster: self.cluster_of(cpu),
                    capacity: self.capacity.get(&cpu).copied(),
                    frequency_hertz: cur.get(&cpu).copied(),
                    min_hertz: p.and_then(|p| p.min_hz),
                    max_hertz: p.and_then(|p| p.max_hz),
                    governor: p.and_then(|p| p.governor.clone()),
                    ..Default::default()
                }
            })
            .collect();
        frame.clusters = self
            .clusters
            .iter()
            .map(|c| {
                let f: Vec<f64> = c.cpus.iter().filter_map(|x| cur.get(x).copied()).collect();
                Cluster {
                    frequency_hertz: (!f.is_empty())
                        .then(|| f.iter().sum::<f64>() / f.len() as f64),
                    ..c.clone()
                }
            })
            .collect();
        Ok(())
    }
}
