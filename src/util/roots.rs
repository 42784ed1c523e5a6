//! Where `/sys` and `/proc` are: every reader of the board (the sensors, the device description)
//! takes its paths from one [`Roots`], so a fixture tree can stand in for the real ones.
use std::path::PathBuf;

/// Where `/sys` and `/proc` are; tests point these at `tests/fixtures/<board>/{sys,proc}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub sys: PathBuf,
    pub proc: PathBuf,
}

impl Roots {
    pub fn new(sys: impl Into<PathBuf>, proc: impl Into<PathBuf>) -> Self {
        Roots {
            sys: sys.into(),
            proc: proc.into(),
        }
    }

    /// `rel` under the sysfs root, e.g. `sys("devices/system/cpu/online")`.
    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sys.join(rel)
    }

    /// `rel` under the procfs root, e.g. `proc("stat")`.
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.proc.join(rel)
    }
}

impl Default for Roots {
    fn default() -> Self {
        Roots::new("/sys", "/proc")
    }
}
