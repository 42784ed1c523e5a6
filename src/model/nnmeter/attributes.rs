//! Typed reads of a node's `attr{…}` object. nn-Meter writes TensorFlow attributes in several forms
//! (a number or a one-element list, windows as `[1, h, w, 1]` or `[h, w]`, nested lists): each read
//! accepts every form seen and says which attribute is wrong when none fits. Shapes, stated or given
//! as attributes, are read here too.
//!
//! Values arrive as raw JSON text (see `decode`) and are parsed when read: each is small (a number,
//! a short list), and only the attributes a lowering asks for are ever parsed.
use super::name::Name;
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Why a value of the file is not what its node needs. The messages name the attribute and quote
/// the value as the file has it.
#[derive(Debug, thiserror::Error)]
pub(super) enum ValueError {
    #[error("attribute `{key}` = {value} is not a list of integers")]
    NotInts { key: String, value: String },
    #[error("attribute `{key}` = {value} is not a 2-D window")]
    NotWindow { key: String, value: String },
    #[error("attribute `{key}` = {value} must be positive")]
    NotPositive { key: String, value: String },
    #[error("`{0}` is not a dimension")]
    NotDimension(String),
    #[error("`{0}` is not a shape")]
    NotShape(String),
    #[error("`{0}` is not a list of shapes")]
    NotShapes(String),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A stated shape (`input_shape`, `output_shape`) that does not read.
    #[error("{field}: {source}")]
    Stated {
        field: &'static str,
        source: Box<ValueError>,
    },
}

/// A dimension as the file gives it: `None` where unknown (`-1`, `null`, `0`, as TensorFlow writes them).
pub(super) type Dims = Vec<Option<usize>>;

/// The attributes of one node, in file order (a key given twice means its last value, as in JSON
/// objects read by `serde_json`).
#[derive(Clone, Copy)]
pub(super) struct Attrs<'a>(pub(super) &'a [(Name<'a>, &'a RawValue)]);

impl<'a> Attrs<'a> {
    fn raw(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| *v)
    }

    /// The value, for the few attributes with a form of their own.
    pub(super) fn get(&self, key: &str) -> Option<Value> {
        // Raw values were checked to be JSON when the file was decoded.
        serde_json::from_str(self.raw(key)?.get()).ok()
    }

    /// One integer (nn-Meter writes some as one-element lists).
    pub(super) fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Array(v) if v.len() == 1 => v[0].as_i64(),
            v => v.as_i64(),
        }
    }

    /// A list of integers, nested lists flattened (`paddings` is `[[0, 0], [1, 1], …]`).
    pub(super) fn ints(&self, key: &str) -> Result<Option<Vec<i64>>, ValueError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let flat: Vec<&Value> = match &v {
            Value::Array(items) => items
                .iter()
                .flat_map(|x| match x {
                    Value::Array(inner) => inner.iter().collect::<Vec<_>>(),
                    other => vec![other],
                })
                .collect(),
            other => vec![other],
        };
        flat.iter()
            .map(|x| {
                x.as_i64().ok_or_else(|| ValueError::NotInts {
                    key: key.to_string(),
                    value: v.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A string attribute, borrowed from the file where it has no escapes.
    pub(super) fn str(&self, key: &str) -> Option<Cow<'a, str>> {
        let raw: &'a str = self.raw(key)?.get();
        serde_json::from_str::<Name<'a>>(raw).ok().map(|n| n.0)
    }

    pub(super) fn float(&self, key: &str) -> Option<f32> {
        self.get(key)?.as_f64().map(|f| f as f32)
    }

    pub(super) fn bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// A shape attribute (a `Placeholder`'s `shape`), unknown dimensions as `None`.
    pub(super) fn dims(&self, key: &str) -> Option<Result<Dims, ValueError>> {
        self.get(key).map(|v| dims_of(&v))
    }

    /// The spatial pair of a TF window attribute: `[1, h, w, 1]` (as in the GraphDef), `[h, w]` (as
    /// nn-Meter rewrites it) or one number for both; `default` for both when absent.
    pub(super) fn window(&self, key: &str, default: usize) -> Result<[usize; 2], ValueError> {
        let v = match self.ints(key)? {
            None => return Ok([default, default]),
            Some(v) => v,
        };
        let pair = match v.as_slice() {
            [_, h, w, _] => [*h, *w],
            [h, w] => [*h, *w],
            [x] => [*x, *x],
            _ => {
                return Err(ValueError::NotWindow {
                    key: key.to_string(),
                    value: format!("{v:?}"),
                });
            }
        };
        if pair.iter().any(|&x| x < 1 || x > u32::MAX as i64) {
            return Err(ValueError::NotPositive {
                key: key.to_string(),
                value: format!("{v:?}"),
            });
        }
        Ok([pair[0] as usize, pair[1] as usize])
    }
}

fn dim_of(v: &Value) -> Option<Option<usize>> {
    match v {
        Value::Null => Some(None),
        Value::Number(n) => {
            let f = n.as_f64()?;
            if f.fract() != 0.0 {
                None
            } else if f <= 0.0 {
                Some(None)
            } else if f > u32::MAX as f64 {
                None
            } else {
                Some(Some(f as usize))
            }
        }
        _ => None,
    }
}

/// One shape.
pub(super) fn dims_of(v: &Value) -> Result<Dims, ValueError> {
    match v {
        Value::Array(d) => d
            .iter()
            .map(|x| dim_of(x).ok_or_else(|| ValueError::NotDimension(x.to_string())))
            .collect(),
        _ => Err(ValueError::NotShape(v.to_string())),
    }
}
