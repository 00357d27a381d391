#!/usr/bin/env bash
# Spillway's whole test suite, as CI runs it (.ci/run calls this script).
#
#   scripts/test.sh          formatting, lints, docs, every test of the workspace, then the
#                            multi-rank tests under a real mpirun (1-8 ranks), then srun and
#                            sbatch under a one-node SLURM (scripts/slurm-up.sh starts it)
#
# Needs only Rust, gcc and Python on a fresh machine: scripts/install-deps.sh installs OpenMPI
# and libclang (for the `mpi` feature), g++ and gfortran (capi's tests compile C++ and
# Fortran) and Chromium (tests/report.rs loads --report pages headless), and
# scripts/slurm-up.sh SLURM and munge, when they are missing and this runs as root; each says
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

step "system dependencies (OpenMPI and libclang for the mpi feature; g++ and gfortran for capi's tests; chromium for the report pages)"
scripts/install-deps.sh
# install-deps.sh installed Chromium: the tests that load --report pages in it must run.
export SPILLWAY_REQUIRE_BROWSER=1

step "cargo test (unit, property, integration and CLI tests)"
cargo test --workspace --locked

step "cargo clippy --features mpi"
cargo clippy --workspace --all-targets --locked --features spillway-tests/mpi -- -D warnings
cargo clippy -p spillway-capi --all-targets --locked --features mpi -- -D warnings

step "multi-rank tests under mpirun (feature mpi)"
cargo build --locked -p spillway-tools --features mpi
cargo test --locked -p spillway-tests --features mpi --test mpi --test many_ranks --test inputs_from --test report_mpi
# The C ABI on the caller's communicator: an MPI C program (mpicc) at 1-4 ranks.
cargo test --locked -p spillway-capi --features mpi --test mpi
# The engine embedded in a Rust MPI program: the world, then both halves of a split.
cargo build --locked -p spillway-engine --features mpi --example mpi_split
example_out=$(mktemp -d)
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
    OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_btl=self,vader \
    mpirun -n 3 "${CARGO_TARGET_DIR:-target}/debug/examples/mpi_split" "$example_out" testdata/gutenberg
cmp "$example_out/world.tsv" "$example_out/half-0.tsv" && cmp "$example_out/world.tsv" "$example_out/half-1.tsv"
rm -rf "$example_out"

step "a one-node SLURM (started if it is not running)"
scripts/slurm-up.sh

step "batch-system tests under SLURM: srun --mpi=pmix, sbatch + mpirun, scancel (feature mpi)"
cargo test --locked -p spillway-tests --features mpi --test slurm

echo
echo "All tests passed."
