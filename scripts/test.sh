#!/usr/bin/env bash
# Spillway's whole test suite, as CI runs it (.ci/run calls this script).
#
#   scripts/test.sh          formatting, lints, docs, every test of the workspace, then the
#                            multi-rank tests under a real mpirun
#
# Needs only Rust, gcc and Python on a fresh machine: scripts/install-deps.sh installs OpenMPI
# and libclang (for the `mpi` feature) when they are missing and this runs as root, and says
# exactly what to install otherwise.
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

step "system dependencies of the mpi feature (OpenMPI, libclang)"
scripts/install-deps.sh

step "cargo clippy --features mpi"
cargo clippy --workspace --all-targets --locked --features spillway-tests/mpi -- -D warnings

step "multi-rank tests under mpirun (feature mpi)"
cargo build --locked -p spillway-tools --features mpi
cargo test --locked -p spillway-tests --features mpi --test mpi

echo
echo "All tests passed."
