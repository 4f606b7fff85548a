//! Patch application (being written).
pub mod meta;
