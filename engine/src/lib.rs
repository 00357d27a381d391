//! Spillway engine.
#![forbid(unsafe_code)]
