//! preflight (being written)
