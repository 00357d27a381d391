//! Library half of the spillway tool.
#![forbid(unsafe_code)]

pub mod records;
