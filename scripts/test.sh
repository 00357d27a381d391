#!/usr/bin/env bash
# Spillway's whole test suite, as CI runs it (.ci/run calls this script).
#
#   scripts/test.sh          formatting, lints, docs, then every test of the workspace
#
# Needs only Rust, gcc and Python on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "cargo test (unit, property, integration and CLI tests)"
cargo test --workspace --locked

echo
echo "All tests passed."
