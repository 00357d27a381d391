//! Library half of the spillway tool.
#![forbid(unsafe_code)]

pub mod atomic;
pub mod records;
