//! An input shape written as text, as the command line and the HTTP API take it.

/// Parses `1,3,224,224` (also `1x3x224x224`) into dimensions.
pub fn parse_shape(s: &str) -> Result<Vec<usize>, String> {
    s.split([',', 'x'])
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{s}` is not a shape like 1,3,224,224"))
        })
        .collect()
}
