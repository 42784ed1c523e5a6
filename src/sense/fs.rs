//! The sysfs/procfs roots and the small readers every sensor uses, so that a fixture tree can stand in
//! for `/sys` and `/proc` and no sensor ever opens an absolute path of its own.
use super::error::SenseError;
use std::path::{Path, PathBuf};

pub use crate::util::roots::Roots;

pub fn read_string(path: &Path) -> Result<String, SenseError> {
    std::fs::read_to_string(path).map_err(|e| SenseError::io(path, e))
}

pub fn read_trimmed(path: &Path) -> Result<String, SenseError> {
    read_string(path).map(|s| s.trim().to_string())
}

pub fn read_u64(path: &Path) -> Result<u64, SenseError> {
    let s = read_string(path)?;
    s.trim()
        .parse()
        .map_err(|_| SenseError::parse(path, "an unsigned integer", &s))
}

pub fn read_i64(path: &Path) -> Result<i64, SenseError> {
    let s = read_string(path)?;
    s.trim()
        .parse()
        .map_err(|_| SenseError::parse(path, "an integer", &s))
}

/// The entries of `dir` whose names start with `prefix`, sorted by the number that follows
/// (`thermal_zone2` before `thermal_zone10`); an unreadable or missing directory gives none.
pub fn numbered_entries(dir: &Path, prefix: &str) -> Vec<(u64, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name.strip_prefix(prefix)?.parse::<u64>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Parses a kernel CPU list such as `0-3,6,8-9`.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    Some(out)
}

/// Parses a kernel hex CPU mask such as `f` or `00000000,000000ff`.
pub fn parse_cpu_mask(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    let words: Vec<&str> = s.trim().split(',').collect();
    for (wi, word) in words.iter().rev().enumerate() {
        let bits = u32::from_str_radix(word, 16).ok()?;
        for b in 0..32 {
            if bits & (1 << b) != 0 {
                out.push(wi * 32 + b);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_and_masks() {
        assert_eq!(parse_cpu_list("0-3,6"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("5\n"), Some(vec![5]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_mask("f0"), Some(vec![4, 5, 6, 7]));
        assert_eq!(parse_cpu_mask("00000001,00000003"), Some(vec![0, 1, 32]));
    }
}
