#!/usr/bin/env bash
# Coverage-guided fuzzing of the run reader (shuffle/fuzz/, cargo-fuzz + libFuzzer).
# Not part of scripts/test.sh: CI runs the regression tests in shuffle/tests/corruption.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_DIR=shuffle/fuzz
TARGETS=(run_reader run_reader_checksummed)

usage() {
    cat <<EOF
Usage: scripts/fuzz.sh [--seconds N] [TARGET] [-- LIBFUZZER_ARGS...]

Fuzzes one target of $FUZZ_DIR for N seconds (default 300), with one libFuzzer process
(the machine is shared: never more than one fuzzing job at a time).

  TARGET       run_reader_checksummed (default): arbitrary bytes with the frame and footer
               checksums repaired, so that mutations reach rkyv validation, key-order checks,
               iteration and merging
               run_reader: arbitrary bytes exactly as given
  --seconds N  fuzzing time (libFuzzer -max_total_time)
  --help       this text

Installs cargo-fuzz if it is missing (needs a nightly toolchain: rustup toolchain install
nightly), writes the seed runs (gen-seeds, deterministic) into $FUZZ_DIR/corpus/TARGET, then runs
  cargo +nightly fuzz run -a TARGET -- -max_total_time=N -rss_limit_mb=2048
      -malloc_limit_mb=256 -timeout=10 -dict=$FUZZ_DIR/run.dict -print_final_stats=1
Arguments after -- go to libFuzzer. Crashes land in $FUZZ_DIR/artifacts/TARGET/; reproduce one
with: cargo +nightly fuzz run --fuzz-dir $FUZZ_DIR -a TARGET ARTIFACT
EOF
}

seconds=300
target=run_reader_checksummed
extra=()
while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --seconds)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -gt 0 ]] || { echo "fuzz.sh: --seconds needs a positive integer" >&2; exit 2; }
            seconds=$2; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) target=$1; shift ;;
    esac
done
if [[ ! " ${TARGETS[*]} " =~ [[:space:]]${target}[[:space:]] ]]; then
    echo "fuzz.sh: unknown target '$target' (one of: ${TARGETS[*]})" >&2
    exit 2
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

corpus="$FUZZ_DIR/corpus/$target"
echo "== seeds -> $corpus"
cargo +nightly run --quiet --manifest-path "$FUZZ_DIR/Cargo.toml" --bin gen-seeds -- "$corpus"

echo "== fuzzing $target for $seconds s"
cargo +nightly fuzz run --fuzz-dir "$FUZZ_DIR" -a "$target" "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=256 -timeout=10 \
    -dict="$FUZZ_DIR/run.dict" -print_final_stats=1 ${extra[@]+"${extra[@]}"}
