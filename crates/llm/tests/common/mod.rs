//! Shared helpers of the llm golden tests.
#![allow(dead_code)]

pub use testkit::{argmax, fixture, max_err as max_abs_err, real_model};
