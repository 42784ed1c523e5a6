//! What board a profile was made on: CPU model, cores, caches, kernel, from a configurable sysfs/procfs
//! root so tests can use fixture trees.
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub cpu_model: String,
    pub cores: usize,
    /// Cache sizes in bytes by level name (`L1d`, `L2`, `L3`), as the kernel reports them for cpu0.
    pub caches: Vec<(String, u64)>,
    pub kernel: String,
    pub arch: String,
}

impl DeviceInfo {
    /// Reads this board's description; missing files leave fields empty (never an error).
    pub fn detect(sysfs: &Path, procfs: &Path) -> DeviceInfo {
        let cpuinfo = std::fs::read_to_string(procfs.join("cpuinfo")).unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| {
                l.starts_with("model name") || l.starts_with("Hardware") || l.starts_with("Model")
            })
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let mut caches = Vec::new();
        let cache_dir = sysfs.join("devices/system/cpu/cpu0/cache");
        if let Ok(entries) = std::fs::read_dir(&cache_dir) {
            let mut dirs: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            dirs.sort();
            for d in dirs {
                let read = |f: &str| {
                    std::fs::read_to_string(d.join(f))
                        .map(|s| s.trim().to_string())
                        .ok()
                };
                let (Some(level), Some(ty), Some(size)) =
                    (read("level"), read("type"), read("size"))
                else {
                    continue;
                };
                if ty == "Instruction" {
                    continue;
                }
                let name = if ty == "Data" {
                    format!("L{level}d")
                } else {
                    format!("L{level}")
                };
                caches.push((name, parse_size(&size)));
            }
        }
        let kernel = std::fs::read_to_string(procfs.join("sys/kernel/osrelease"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        DeviceInfo {
            cpu_model,
            cores,
            caches,
            kernel,
            arch: std::env::consts::ARCH.to_string(),
        }
    }

    /// Size of the last-level cache, bytes (0 when unknown).
    pub fn llc_bytes(&self) -> u64 {
        self.caches.last().map(|c| c.1).unwrap_or(0)
    }

    /// Whether two descriptions are of the same kind of board.
    pub fn same_board(&self, other: &DeviceInfo) -> bool {
        self.cpu_model == other.cpu_model && self.cores == other.cores && self.arch == other.arch
    }
}

/// Parses sysfs cache sizes such as `32K`, `1024K`, `16M`.
fn parse_size(s: &str) -> u64 {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 1024),
        Some('M') => (&s[..s.len() - 1], 1024 * 1024),
        Some('G') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<u64>().map(|n| n * mult).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sizes() {
        assert_eq!(parse_size("32K"), 32768);
        assert_eq!(parse_size("16M"), 16 << 20);
        assert_eq!(parse_size("bad"), 0);
    }
}
