//! process discipline (being written)
