//! A source model's own constant values, so that a part of a model written back to ONNX (the halves of
//! a split) computes what the model does rather than the placeholder pattern. The graph IR keeps
//! shapes only; the values are read again from the source file, by tensor name: its initializers
//! (inline or in an external-data file beside it), its `Constant` nodes, and `Identity` nodes of
//! either (how exporters share one tensor between several nodes).
//!
//! Entry point: [`SourceValues::from_bytes`].
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tract_onnx::pb;

/// `TensorProto.data_location` of a tensor whose bytes lie in another file.
const EXTERNAL: i32 = 1;
/// `AttributeProto.type` of a tensor-valued attribute.
const ATTR_TENSOR: i32 = 4;

/// Why a model's values could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    #[error("{file}: not a valid ONNX protobuf ({detail})")]
    Malformed { file: String, detail: String },
    #[error("{file}: tensor `{tensor}` keeps its data in another file, {detail}")]
    External {
        file: String,
        tensor: String,
        detail: String,
    },
}

/// The constant tensors of a model by name, with their data inline.
#[derive(Clone, Debug, Default)]
pub struct SourceValues {
    by_name: HashMap<String, pb::TensorProto>,
}

impl SourceValues {
    /// No values: every weight is written as the pattern.
    pub fn none() -> SourceValues {
        SourceValues::default()
    }

    /// The constant values of an ONNX model's bytes; `file` names it in errors, `dir` is where its
    /// external-data files lie.
    pub fn from_bytes(bytes: &[u8], file: &str, dir: &Path) -> Result<SourceValues, ValuesError> {
        let proto = pb::ModelProto::decode(bytes).map_err(|e| ValuesError::Malformed {
            file: file.to_string(),
            detail: e.to_string(),
        })?;
        let mut by_name = HashMap::new();
        let Some(g) = proto.graph else {
            return Ok(SourceValues { by_name });
        };
        for t in g.initializer {
            let t = inline(t, file, dir)?;
            by_name.insert(t.name.clone(), t);
        }
        // Nodes come in execution order in every exporter augur reads; an Identity of a constant
        // defined further down is simply not carried (its weight keeps the pattern).
        for n in &g.node {
            match (n.op_type.as_str(), n.output.first()) {
                ("Constant", Some(out)) => {
                    let value = n
                        .attribute
                        .iter()
                        .find(|a| a.name == "value" && a.r#type == ATTR_TENSOR);
                    if let Some(t) = value.and_then(|a| a.t.clone()) {
                        let t = inline(t, file, dir)?;
                        by_name.insert(out.clone(), t);
                    }
                }
                ("Identity", Some(out)) => {
                    if let Some(t) = n.input.first().and_then(|i| by_name.get(i)).cloned() {
                        by_name.insert(out.clone(), t);
                    }
                }
                _ => {}
            }
        }
        Ok(SourceValues { by_name })
    }

    /// The value of tensor `name` as an initializer called `written`, when the source has one of
    /// the same dimensions and element type.
    pub(super) fn get(
        &self,
        name: &str,
        written: &str,
        dims: &[i64],
        data_type: i32,
    ) -> Option<pb::TensorProto> {
        let t = self.by_name.get(name)?;
        if t.dims != dims || t.data_type != data_type {
            return None;
        }
        let mut t = t.clone();
        t.name = written.to_string();
        Some(t)
    }

    /// How many constant tensors the source has.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the source has no constant tensors.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// `t` with its data inline: an external-data tensor's bytes are read from its file beside the model.
fn inline(mut t: pb::TensorProto, file: &str, dir: &Path) -> Result<pb::TensorProto, ValuesError> {
    if t.data_location != Some(EXTERNAL) {
        return Ok(t);
    }
    let err = |detail: String| ValuesError::External {
        file: file.to_string(),
        tensor: t.name.clone(),
        detail,
    };
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.clone())
    };
    let location = entry("location").ok_or_else(|| err("but does not name it".into()))?;
    let number = |key: &str| -> Result<Option<u64>, ValuesError> {
        entry(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| err(format!("whose {key} `{v}` is not a number")))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?;
    // Only the tensor's own bytes are read: one external file commonly holds every weight of a
    // model, and reading it whole once per tensor would read it as many times as it has tensors.
    use std::io::{Read, Seek, SeekFrom};
    let path: PathBuf = dir.join(&location);
    let unreadable =
        |e: std::io::Error| err(format!("{}, which cannot be read ({e})", path.display()));
    let mut f = std::fs::File::open(&path).map_err(unreadable)?;
    let size = f.metadata().map_err(unreadable)?.len();
    let end = match length {
        Some(l) => offset.saturating_add(l),
        None => size,
    };
    if offset > end || end > size {
        return Err(err(format!(
            "{}, which holds {size} bytes, not bytes {offset}..{end}",
            path.display()
        )));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(end - offset).unwrap_or(0));
    f.seek(SeekFrom::Start(offset)).map_err(unreadable)?;
    f.take(end - offset)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    t.raw_data = bytes;
    t.external_data.clear();
    t.data_location = None;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, dims: &[i64], data: &[f32]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 1,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    fn model(initializer: Vec<pb::TensorProto>, node: Vec<pb::NodeProto>) -> Vec<u8> {
        pb::ModelProto {
            graph: Some(pb::GraphProto {
                initializer,
                node,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn node(op: &str, input: &[&str], output: &str) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            input: input.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    #[test]
    fn initializers_constants_and_identities_are_found_by_name_and_shape() {
        let mut constant = node("Constant", &[], "c");
        constant.attribute.push(pb::AttributeProto {
            name: "value".into(),
            r#type: ATTR_TENSOR,
            t: Some(tensor("", &[2], &[3.0, 4.0])),
            ..Default::default()
        });
        let bytes = model(
            vec![tensor("w", &[1, 2], &[1.0, 2.0])],
            vec![constant, node("Identity", &["w"], "w_shared")],
        );
        let v = SourceValues::from_bytes(&bytes, "m.onnx", Path::new(".")).unwrap();
        assert_eq!(v.len(), 3);
        let w = v.get("w_shared", "t7", &[1, 2], 1).unwrap();
        assert_eq!(w.name, "t7");
        assert_eq!(w.raw_data, tensor("", &[2], &[1.0, 2.0]).raw_data);
        assert!(v.get("c", "c", &[2], 1).is_some());
        // Another shape or type is another tensor: the pattern stays.
        assert!(v.get("w", "w", &[2, 1], 1).is_none());
        assert!(v.get("w", "w", &[1, 2], 11).is_none());
        assert!(v.get("nothing", "x", &[1], 1).is_none());
    }

    #[test]
    fn external_data_is_read_inline_and_a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<u8> = [9.0f32, 1.0, 2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(dir.path().join("weights.bin"), &values).unwrap();
        let external = |location: &str| {
            let kv = |k: &str, v: &str| pb::StringStringEntryProto {
                key: k.into(),
                value: v.into(),
            };
            pb::TensorProto {
                name: "w".into(),
                dims: vec![2],
                data_type: 1,
                data_location: Some(EXTERNAL),
                external_data: vec![
                    kv("location", location),
                    kv("offset", "4"),
                    kv("length", "8"),
                ],
                ..Default::default()
            }
        };
        let bytes = model(vec![external("weights.bin")], vec![]);
        let v = SourceValues::from_bytes(&bytes, "m.onnx", dir.path()).unwrap();
        let w = v.get("w", "w", &[2], 1).unwrap();
        assert_eq!(w.raw_data, values[4..12].to_vec());
        assert_eq!(w.data_location, None);
        let bytes = model(vec![external("gone.bin")], vec![]);
        let e = SourceValues::from_bytes(&bytes, "m.onnx", dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("gone.bin") && e.contains("`w`"), "{e}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let e = SourceValues::from_bytes(b"\xff\xff\xff", "m.onnx", Path::new("."));
        assert!(matches!(e, Err(ValuesError::Malformed { .. })));
    }
}
