//! The Sort Benchmark's record format: a byte-exact generator ([`gensort`], compatible with
//! `gensort` 1.5) and validator ([`valsort`], compatible with `valsort` 1.5).
//!
//! A record file is a plain sequence of [`RECORD_LEN`]-byte records with no header; the key of
//! a record is its first [`KEY_LEN`] bytes, compared as unsigned bytes (like `memcmp`).

pub mod gensort;
pub mod valsort;

/// Length in bytes of one record.
pub const RECORD_LEN: usize = 100;

/// Length in bytes of a record's key (its first bytes, compared as unsigned bytes).
pub const KEY_LEN: usize = 10;
