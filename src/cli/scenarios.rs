//! `augur eval --scenarios`: prints the reports of [`crate::eval::scenarios`].
use crate::eval::Report;
use std::collections::BTreeMap;

pub fn print(reports: &BTreeMap<String, Report>) {
    println!(
        "{:<8} {:>13} {:>9} {:>13} {:>9} {:>11} {:>7}",
        "scenario", "aware ±10 %", "MAPE", "static ±10 %", "MAPE", "floor MAPE", "passes"
    );
    for (name, r) in reports {
        println!(
            "{:<8} {:>12.1}% {:>8.2}% {:>12.1}% {:>8.2}% {:>10.2}% {:>7}",
            name,
            r.summary.within_10_pct * 100.0,
            r.summary.mape_pct,
            r.static_.within_10_pct * 100.0,
            r.static_.mape_pct,
            r.noise_floor.mape_pct,
            r.passes
        );
    }
    for (name, r) in reports {
        println!("{name}:");
        for m in &r.models {
            println!(
                "  {:<26} measured {:>8.2} ms  aware {:>8.2} ms ({:+6.1} %)  static {:>8.2} ms ({:+6.1} %)  floor {:.1} %",
                m.model,
                m.measured_ms,
                m.predicted_ms,
                m.error_pct,
                m.static_ms,
                m.static_error_pct,
                m.floor_mape_pct
            );
        }
        for line in r.reliability.lines() {
            println!("  {line}");
        }
    }
}
