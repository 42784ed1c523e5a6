//! What board a profile was made on: CPU model, cores, caches, kernel, read through the sysfs/procfs
//! [`Roots`] like every sensor, so tests can use fixture trees.
use crate::util::roots::Roots;
use serde::{Deserialize, Serialize};

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
    /// Reads this board's description; missing files leave fields empty (never an error). The cores
    /// are those this process may run on (its affinity and quota), which no file under the roots says.
    pub fn detect(roots: &Roots) -> DeviceInfo {
        let cpuinfo = std::fs::read_to_string(roots.proc("cpuinfo")).unwrap_or_default();
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
        let cache_dir = roots.sys("devices/system/cpu/cpu0/cache");
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
        let kernel = std::fs::read_to_string(roots.proc("sys/kernel/osrelease"))
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
    fn reads_a_fixture_tree() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots::new(dir.path().join("sys"), dir.path().join("proc"));
        let write = |p: std::path::PathBuf, s: &str| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        write(
            roots.proc("cpuinfo"),
            "processor\t: 0\nmodel name\t: Fixture CPU @ 2.0GHz\n",
        );
        write(roots.proc("sys/kernel/osrelease"), "6.1.0-fixture\n");
        for (i, level, ty, size) in [
            (0, "1", "Data", "48K"),
            (1, "1", "Instruction", "32K"),
            (2, "2", "Unified", "2048K"),
            (3, "3", "Unified", "16M"),
        ] {
            let d = format!("devices/system/cpu/cpu0/cache/index{i}");
            write(roots.sys(&format!("{d}/level")), level);
            write(roots.sys(&format!("{d}/type")), ty);
            write(roots.sys(&format!("{d}/size")), size);
        }
        let d = DeviceInfo::detect(&roots);
        assert_eq!(d.cpu_model, "Fixture CPU @ 2.0GHz");
        assert_eq!(d.kernel, "6.1.0-fixture");
        assert_eq!(
            d.caches,
            vec![
                ("L1d".to_string(), 48 << 10),
                ("L2".to_string(), 2 << 20),
                ("L3".to_string(), 16 << 20)
            ]
        );
        assert_eq!(d.llc_bytes(), 16 << 20);
        // An empty tree leaves the fields empty, never an error.
        let none = DeviceInfo::detect(&Roots::new(dir.path().join("no"), dir.path().join("no")));
        assert!(none.cpu_model.is_empty() && none.caches.is_empty() && none.kernel.is_empty());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32K"), 32768);
        assert_eq!(parse_size("16M"), 16 << 20);
        assert_eq!(parse_size("bad"), 0);
    }
}
