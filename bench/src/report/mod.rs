//! Outputs of `ferry bench` (being written).
