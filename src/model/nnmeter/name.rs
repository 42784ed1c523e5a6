//! A string of an nn-Meter IR file as decoding keeps it: borrowed from the bytes, owned only where
//! JSON escapes had to be undone. Shared by the decoder and the attribute readers.
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// A string of the file: borrowed, unless it had escapes.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub(super) struct Name<'a>(#[serde(borrow)] pub(super) Cow<'a, str>);

impl std::ops::Deref for Name<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}
