//! Ops: one module per op with its contract and scalar reference.
