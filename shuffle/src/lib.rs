//! Spillway shuffle layer.
