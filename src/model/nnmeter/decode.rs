//! Decoding an nn-Meter IR file: the JSON object keyed by node name, in file order, into node records
//! (`inbounds`, `outbounds`, TF op type, stated shapes, attributes). Nothing is interpreted here
//! beyond the JSON forms; stated shapes are parsed when a node is lowered, so a bad one is reported
//! with its node in execution order.
//!
//! The records borrow from the bytes: names are `&str` into them (owned only where JSON escapes had
//! to be undone), and the free-form parts (stated shapes, attribute values) stay raw JSON text until
//! a lowering reads them. A file is thus held in memory once, plus a few words per node, rather than
//! as a `serde_json::Value` tree (tens of bytes per number), which made a 64 MiB upload peak at
//! gigabytes.
use super::attributes::{Attrs, Dims, ValueError, dims_of};
use super::name::Name;
use crate::model::error::ImportError;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

/// A node as the file has it.
#[derive(Deserialize)]
struct FileNode<'a> {
    #[serde(default, borrow)]
    inbounds: Vec<Name<'a>>,
    #[serde(default, borrow)]
    outbounds: Vec<Name<'a>>,
    #[serde(borrow)]
    attr: RawAttr<'a>,
}

/// A node's edges, by the names of the nodes at their other ends; needed only for wiring, so kept
/// apart from the records and let go as a whole once the nodes are wired.
pub(super) struct Edges<'a> {
    pub(super) inbounds: Box<[Name<'a>]>,
    pub(super) outbounds: Box<[Name<'a>]>,
}

/// What the lowering of a node reads: its op type, stated shapes and attributes.
pub(super) struct RawNode<'a> {
    attr: RawAttr<'a>,
}

#[derive(Deserialize)]
struct RawAttr<'a> {
    #[serde(rename = "type", borrow)]
    op: Name<'a>,
    #[serde(default, borrow)]
    input_shape: Option<&'a RawValue>,
    #[serde(default, borrow)]
    output_shape: Option<&'a RawValue>,
    #[serde(default, borrow)]
    attr: AttrList<'a>,
}

/// A node's `attr{…}` object as it comes: keys with their values still JSON text, in file order.
#[derive(Default)]
pub(super) struct AttrList<'a>(pub(super) Vec<(Name<'a>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for AttrList<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = AttrList<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of attributes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<AttrList<'a>, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = m.next_entry::<Name<'a>, &'a RawValue>()? {
                    v.push(entry);
                }
                v.shrink_to_fit();
                Ok(AttrList(v))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

impl<'a> RawNode<'a> {
    /// The TensorFlow op type.
    pub(super) fn op(&self) -> &str {
        &self.attr.op
    }

    pub(super) fn attrs(&self) -> Attrs<'_> {
        Attrs(&self.attr.attr.0)
    }

    /// The output shape the file states (nn-Meter writes a list of one shape).
    pub(super) fn stated_out(&self) -> Result<Option<Dims>, ValueError> {
        shapes_of(self.attr.output_shape)
            .map(|s| s.into_iter().next())
            .map_err(|e| ValueError::Stated {
                field: "output_shape",
                source: Box::new(e),
            })
    }

    /// The input shapes the file states, one per activation input.
    pub(super) fn stated_in(&self) -> Result<Vec<Dims>, ValueError> {
        shapes_of(self.attr.input_shape).map_err(|e| ValueError::Stated {
            field: "input_shape",
            source: Box::new(e),
        })
    }
}

/// A decoded file: node names and records in file order, and each name's index.
///
/// Records are boxed one by one so that each can be let go as soon as its node is lowered (see
/// [`Decoded::take`]); in one vector they would all be held until the graph is built.
pub(super) struct Decoded<'a> {
    pub(super) names: Vec<Name<'a>>,
    /// Each node's edges, until the nodes are wired.
    pub(super) edges: Vec<Edges<'a>>,
    nodes: Vec<Option<Box<RawNode<'a>>>>,
    pub(super) index: HashMap<Name<'a>, usize>,
}

impl<'a> Decoded<'a> {
    /// How many nodes the file has.
    pub(super) fn len(&self) -> usize {
        self.names.len()
    }

    /// The records not taken, with their names and indices, in file order.
    pub(super) fn records(&self) -> impl Iterator<Item = (usize, &Name<'a>, &RawNode<'a>)> {
        self.names
            .iter()
            .zip(&self.nodes)
            .enumerate()
            .filter_map(|(ix, (name, n))| n.as_deref().map(|n| (ix, name, n)))
    }

    /// Lets go of the edges, once the nodes are wired.
    pub(super) fn release_edges(&mut self) {
        self.edges = Vec::new();
    }

    /// Takes the record of node `ix` out, for its lowering.
    pub(super) fn take(&mut self, ix: usize) -> Option<Box<RawNode<'a>>> {
        self.nodes.get_mut(ix).and_then(Option::take)
    }
}

/// The top-level object with its keys in file order: `serde_json`'s own map sorts them (nn-Meter writes
/// them sorted anyway, but a file in execution order should keep it) and would drop duplicate keys.
/// Nodes are decoded as they come, each into its record; a malformed one names itself.
struct Ordered<'a>(Vec<Name<'a>>, Vec<Edges<'a>>, Vec<Option<Box<RawNode<'a>>>>);

impl<'de: 'a, 'a> Deserialize<'de> for Ordered<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Ordered<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object keyed by node name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Ordered<'a>, A::Error> {
                let (mut names, mut edges, mut nodes) = (Vec::new(), Vec::new(), Vec::new());
                while let Some(name) = m.next_key::<Name<'a>>()? {
                    let node = m.next_value::<FileNode<'a>>().map_err(|e| {
                        serde::de::Error::custom(format_args!(
                            "node `{name}`: not an nn-Meter IR node ({e})"
                        ))
                    })?;
                    // Lists grow by doubling as they are read: boxed (trimmed), a large file's
                    // records take a third less.
                    names.push(name);
                    edges.push(Edges {
                        inbounds: node.inbounds.into_boxed_slice(),
                        outbounds: node.outbounds.into_boxed_slice(),
                    });
                    nodes.push(Some(Box::new(RawNode { attr: node.attr })));
                }
                Ok(Ordered(names, edges, nodes))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// Decodes the bytes of an IR file; `file` names it in errors.
pub(super) fn decode<'a>(bytes: &'a [u8], file: &str) -> Result<Decoded<'a>, ImportError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ImportError::Empty {
            file: file.to_string(),
        });
    }
    let malformed = |detail: String| ImportError::Malformed {
        file: file.to_string(),
        detail,
    };
    let Ordered(mut names, mut edges, mut nodes) = serde_json::from_slice(bytes).map_err(|e| {
        let e = e.to_string();
        // A node that is no node record names itself already.
        if e.starts_with("node `") {
            malformed(e)
        } else {
            malformed(format!("not a valid nn-Meter IR JSON object ({e})"))
        }
    })?;
    if names.is_empty() {
        return Err(malformed("the graph has no nodes".into()));
    }
    // The lists doubled as they grew; the graph is built beside them.
    names.shrink_to_fit();
    edges.shrink_to_fit();
    nodes.shrink_to_fit();
    let mut index: HashMap<Name<'a>, usize> = HashMap::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        if index.insert(name.clone(), i).is_some() {
            return Err(malformed(format!("node `{name}` appears twice")));
        }
    }
    Ok(Decoded {
        names,
        edges,
        nodes,
        index,
    })
}

/// A list of shapes (`[[1,224,224,3]]`, as nn-Meter writes them) or a single shape.
fn shapes_of(raw: Option<&RawValue>) -> Result<Vec<Dims>, ValueError> {
    let Some(raw) = raw else {
        return Ok(vec![]);
    };
    let v: Value = serde_json::from_str(raw.get())?;
    let Value::Array(items) = &v else {
        return match v {
            Value::Null => Ok(vec![]),
            _ => Err(ValueError::NotShapes(v.to_string())),
        };
    };
    if items.iter().all(|x| !x.is_array()) && !items.is_empty() {
        return Ok(vec![dims_of(&v)?]);
    }
    items.iter().map(dims_of).collect()
}
