#!/usr/bin/env bash
# Coverage-guided fuzzing of the run reader and the job journal (shuffle/fuzz/, cargo-fuzz +
# libFuzzer). Not part of scripts/test.sh: CI runs the regression tests in
# shuffle/tests/corruption.rs and engine/tests/journal.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_DIR=shuffle/fuzz
TARGETS=(run_reader run_reader_checksummed journal journal_framed)

usage() {
    cat <<EOF
Usage: scripts/fuzz.sh [--seconds N] [TARGET] [-- LIBFUZZER_ARGS...]

Fuzzes one target of $FUZZ_DIR for N seconds (default 300), with one libFuzzer process
(the machine is shared: never more than one fuzzing job at a time).

  TARGET       run_reader_checksummed (default): arbitrary bytes with the frame and footer
               checksums repaired, so that mutations reach rkyv validation, key-order checks,
               iteration and merging
               run_reader: arbitrary bytes exactly as given
               journal_framed: lines of the input, each framed as a journal record with a
               correct length and checksum, so that mutations reach the JSON records and
               the record-order check
               journal: arbitrary bytes exactly as given, parsed as a journal
  --seconds N  fuzzing time (libFuzzer -max_total_time)
  --help       this text

Installs cargo-fuzz if it is missing (needs a nightly toolchain: rustup toolchain install
nightly), writes the seeds (gen-seeds: runs; gen-journal-seeds: journals; deterministic) into
$FUZZ_DIR/corpus/TARGET, then runs
  cargo +nightly fuzz run -a TARGET -- -max_total_time=N -rss_limit_mb=2048
      -malloc_limit_mb=256 -timeout=10 -dict=DICT -print_final_stats=1
with DICT $FUZZ_DIR/run.dict for the run targets, $FUZZ_DIR/journal.dict for the journal ones.
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
case "$target" in
    journal) seeds=(gen-journal-seeds); dict="$FUZZ_DIR/journal.dict" ;;
    journal_framed) seeds=(gen-journal-seeds --framed); dict="$FUZZ_DIR/journal.dict" ;;
    *) seeds=(gen-seeds); dict="$FUZZ_DIR/run.dict" ;;
esac
echo "== seeds -> $corpus"
cargo +nightly run --quiet --manifest-path "$FUZZ_DIR/Cargo.toml" --bin "${seeds[0]}" -- "${seeds[@]:1}" "$corpus"

echo "== fuzzing $target for $seconds s"
cargo +nightly fuzz run --fuzz-dir "$FUZZ_DIR" -a "$target" "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=256 -timeout=10 \
    -dict="$dict" -print_final_stats=1 ${extra[@]+"${extra[@]}"}
