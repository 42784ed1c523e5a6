//! Development aid: a profile's regressor beside the kernels its calibration timed inside networks
//! (read from the journal beside it, brought to the nominal speed by each window's reference
//! reading), one CSV row per kernel of a kind, for finding where a fit is biased. Nothing is fitted.
//!
//! Usage: journal_fit PROFILE KIND
use augur::kernels::Kernel;
use augur::profile::Profile;
use std::io::BufRead;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, kind] = args.as_slice() else {
        return Err("usage: journal_fit PROFILE KIND".into());
    };
    let (profile, _) = Profile::load(std::path::Path::new(path), "")?;
    let journal = std::fs::File::open(format!("{path}.measurements.jsonl"))?;
    let mut rows = Vec::new();
    let mut refs = Vec::new();
    for line in std::io::BufReader::new(journal).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        match v["entry"].as_str() {
            Some("reference") => refs.extend(v["cpu_ms"].as_f64()),
            Some("in_network") if !v["spoiled"].as_bool().unwrap_or(false) => {
                let k: Kernel = serde_json::from_value(v["measurement"]["kernel"].clone())?;
                if k.kind.name() != kind {
                    continue;
                }
                let ms = v["measurement"]["median_ms"].as_f64().unwrap_or(0.0);
                let r = v["reference_ms"].as_f64().unwrap_or(0.0);
                rows.push((v["network"].as_u64().unwrap_or(0), k, ms, r));
            }
            _ => {}
        }
    }
    refs.sort_by(f64::total_cmp);
    let nominal = refs.get(refs.len() / 2).copied().unwrap_or(0.0);
    let reg = profile
        .regressors
        .iter()
        .find(|(k, _)| k.name() == kind)
        .map(|(_, r)| r)
        .ok_or("no regressor of that kind")?;
    println!("network,cin,cout,hw,ops,macs,measured_ms,predicted_ms");
    for (n, k, ms, r) in rows {
        let norm = if r > 0.0 && nominal > 0.0 {
            ms * nominal / r
        } else {
            ms
        };
        println!(
            "{n},{},{},{},{},{},{norm:.5},{:.5}",
            k.cin,
            k.cout,
            k.hin * k.win,
            k.ops.join("+"),
            k.macs,
            reg.predict_ms(&profile.roofline, &k)
        );
    }
    Ok(())
}
