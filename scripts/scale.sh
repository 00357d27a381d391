#!/usr/bin/env bash
# Many ranks on this host (not in CI: minutes, and memory for every rank): every job of
# tests/many_ranks.rs (wordcount, index, grep, sort; spills and F = 2; -r 4, -r 300, one
# output file, the default R) at 32 and 128 ranks under mpirun, oversubscribed, against one
# process. Prints a Markdown table: ranks, job, identical or not, wall time.
#
#   scripts/scale.sh              32 and 128 ranks
#   scripts/scale.sh 8 16 64      the rank counts given
#
# Exit status 1 when a run differs from one process. Needs OpenMPI (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ranks="${*:-32 128}"
# Open files: every rank maps its runs and OpenMPI's shared-memory transport opens more.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build -q --locked --release -p spillway-tools --features mpi
SPILLWAY_SCALE_RANKS="$ranks" cargo test -q --locked --release -p spillway-tests --features mpi \
    --test many_ranks -- --ignored --nocapture --test-threads 1 scale_table
