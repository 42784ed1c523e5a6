//! Decoding an nn-Meter IR file: the JSON object keyed by node name, in file order, into node records
//! (`inbounds`, `outbounds`, TF op type, stated shapes, attributes). Nothing is interpreted here
//! beyond the JSON forms; stated shapes are parsed when a node is lowered, so a bad one is reported
//! with its node in execution order.
use super::attributes::{Attrs, Dims, dims_of};
use crate::model::error::ImportError;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

#[derive(Deserialize)]
pub(super) struct RawNode {
    #[serde(default)]
    pub(super) inbounds: Vec<String>,
    #[serde(default)]
    pub(super) outbounds: Vec<String>,
    attr: RawAttr,
}

#[derive(Deserialize)]
struct RawAttr {
    #[serde(rename = "type")]
    op: String,
    #[serde(default)]
    input_shape: Value,
    #[serde(default)]
    output_shape: Value,
    #[serde(default)]
    attr: serde_json::Map<String, Value>,
}

impl RawNode {
    /// The TensorFlow op type.
    pub(super) fn op(&self) -> &str {
        &self.attr.op
    }

    pub(super) fn attrs(&self) -> Attrs<'_> {
        Attrs(&self.attr.attr)
    }

    /// The output shape the file states (nn-Meter writes a list of one shape).
    pub(super) fn stated_out(&self) -> Result<Option<Dims>, String> {
        shapes_of(&self.attr.output_shape)
            .map(|s| s.into_iter().next())
            .map_err(|e| format!("output_shape: {e}"))
    }

    /// The input shapes the file states, one per activation input.
    pub(super) fn stated_in(&self) -> Result<Vec<Dims>, String> {
        shapes_of(&self.attr.input_shape).map_err(|e| format!("input_shape: {e}"))
    }
}

/// A decoded file: node names and records in file order, and each name's index.
pub(super) struct Decoded {
    pub(super) names: Vec<String>,
    pub(super) nodes: Vec<RawNode>,
    pub(super) index: HashMap<String, usize>,
}

/// The top-level object with its keys in file order: `serde_json`'s own map sorts them (nn-Meter writes
/// them sorted anyway, but a file in execution order should keep it) and would drop duplicate keys.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object keyed by node name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = m.next_entry::<String, Value>()? {
                    v.push(entry);
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// Decodes the bytes of an IR file; `file` names it in errors.
pub(super) fn decode(bytes: &[u8], file: &str) -> Result<Decoded, ImportError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ImportError::Empty {
            file: file.to_string(),
        });
    }
    let malformed = |detail: String| ImportError::Malformed {
        file: file.to_string(),
        detail,
    };
    let Ordered(entries) = serde_json::from_slice(bytes)
        .map_err(|e| malformed(format!("not a valid nn-Meter IR JSON object ({e})")))?;
    if entries.is_empty() {
        return Err(malformed("the graph has no nodes".into()));
    }
    let mut names: Vec<String> = Vec::with_capacity(entries.len());
    let mut nodes: Vec<RawNode> = Vec::with_capacity(entries.len());
    let mut index: HashMap<String, usize> = HashMap::new();
    for (name, value) in entries {
        if index.contains_key(&name) {
            return Err(malformed(format!("node `{name}` appears twice")));
        }
        let node: RawNode = serde_json::from_value(value)
            .map_err(|e| malformed(format!("node `{name}`: not an nn-Meter IR node ({e})")))?;
        index.insert(name.clone(), names.len());
        names.push(name);
        nodes.push(node);
    }
    Ok(Decoded {
        names,
        nodes,
        index,
    })
}

/// A list of shapes (`[[1,224,224,3]]`, as nn-Meter writes them) or a single shape.
fn shapes_of(v: &Value) -> Result<Vec<Dims>, String> {
    let Value::Array(items) = v else {
        return match v {
            Value::Null => Ok(vec![]),
            _ => Err(format!("`{v}` is not a list of shapes")),
        };
    };
    if items.iter().all(|x| !x.is_array()) && !items.is_empty() {
        return Ok(vec![dims_of(v)?]);
    }
    items.iter().map(dims_of).collect()
}
