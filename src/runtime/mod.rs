//! (not yet)
