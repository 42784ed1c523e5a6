//! The FLOPs proxy evaluated beside augur: latency = a·MACs + b per kernel, fitted by least squares
//! on the same calibration measurements the profile was made of.
use crate::kernels::Decomposition;
use crate::profile::Profile;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FlopsProxy {
    /// ms per MAC.
    pub a: f64,
    /// ms per kernel.
    pub b: f64,
}

impl FlopsProxy {
    /// Fits the proxy on the profile's kernel measurements (None with fewer than two).
    pub fn fit(p: &Profile) -> Option<FlopsProxy> {
        let pts: Vec<(f64, f64)> = p
            .measurements
            .iter()
            .map(|m| (m.kernel.macs as f64, m.median_ms))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let n = pts.len() as f64;
        if pts.len() < 2 {
            return None;
        }
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let a = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        Some(FlopsProxy { a, b: my - a * mx })
    }

    /// The proxy's latency of a model, ms.
    pub fn predict(&self, d: &Decomposition) -> f64 {
        self.a * d.macs as f64 + self.b * d.kernels.len() as f64
    }
}
