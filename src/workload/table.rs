//! The named loads: which background loads calibration times its networks under, and what each is
//! called in the journal and the logs.
use super::load::LoadKind;

/// The loads calibration runs, with their names.
pub fn calibration_loads(llc_bytes: u64, cores: usize) -> Vec<(&'static str, Option<LoadKind>)> {
    let llc = (llc_bytes.max(8 << 20)) as usize;
    vec![
        ("quiet", None),
        ("cpu1", Some(LoadKind::Cpu { threads: 1 })),
        (
            "cpu_all",
            Some(LoadKind::Cpu {
                threads: cores.max(1),
            }),
        ),
        (
            "cpu_over",
            Some(LoadKind::Cpu {
                threads: cores.max(1) * 2,
            }),
        ),
        (
            "memory",
            Some(LoadKind::Memory {
                threads: 1,
                bytes: llc * 8,
            }),
        ),
        (
            "cache",
            Some(LoadKind::Cache {
                threads: 1,
                bytes: llc,
            }),
        ),
    ]
}
