//! An input shape written as text, as the command line and the HTTP API take it.

/// Text that is not a shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a shape like 1,3,224,224")]
pub struct ShapeError(pub String);

/// Parses `1,3,224,224` (also `1x3x224x224`) into dimensions.
pub fn parse_shape(s: &str) -> Result<Vec<usize>, ShapeError> {
    s.split([',', 'x'])
        .map(|d| d.trim().parse::<usize>().map_err(|_| ShapeError(s.into())))
        .collect()
}
