#!/usr/bin/env bash
# The C word count (capi/examples/wordcount.c: a C map callback tokenizing and emitting each
# word, a C combine and reduce) against the built-in `spillway wordcount`, on one corpus, in
# one run: wall time, user and system CPU, throughput, and the ratio (target: C >= 0.7x).
#
#   capi/bench/wordcount.sh [SIZE] [THREADS]      (defaults: 1G, the CPUs)
#
# The corpus is bench's generator's (ASCII, so ASCII letters and the built-in's Unicode words
# give the same bytes, which the script checks). Both get the same threads and the same
# 64 MiB memory budget (the C program's is fixed at 64 MiB).
#
# Measured 2026-12-05 on a shared 2-CPU machine, 512M, 2 threads: built-in 4.18 s wall
# (2.64 s user, 0.10 s sys), C 25.09 s (16.53 s user, 0.22 s sys): 0.17x, short of the 0.7x
# target. Per word the C path pays what the built-in does not: a `Vec<u8>` value allocated per
# emit, two boundary crossings (`spillway_emit`, the combine callback and its
# `spillway_write`) each under `catch_unwind`, and a byte-string combine where the built-in
# adds two u64s in place.
set -euo pipefail
cd "$(dirname "$0")/../.."
size=${1:-1G}
threads=${2:-$(nproc)}
target=${CARGO_TARGET_DIR:-target}
work=${BENCH_DIR:-$target/capi-bench}
mkdir -p "$work"

cargo build --release -q -p spillway-capi -p spillway-tools
cargo build --release -q -p spillway-bench --bin gen-corpus
lib=$(realpath "$target/release")
cc -O2 -Icapi/include capi/examples/wordcount.c -L"$lib" -lspillway_capi -Wl,-rpath,"$lib" \
    -o "$work/c-wordcount"
corpus=$work/corpus-$size
[[ -d $corpus ]] || "$lib/gen-corpus" --size "$size" --files 8 --out "$corpus" >/dev/null
bytes=$(du -sb "$corpus" | cut -f1)

# One run of each, after one warm-up read of the corpus: "wall user sys" in seconds.
measure() {
    /usr/bin/time -f '%e %U %S' -o "$work/time" "$@" >/dev/null 2>"$work/stderr" ||
        { cat "$work/stderr" >&2; exit 1; }
    cat "$work/time"
}
cat "$corpus"/* >/dev/null
read -r bw bu bs < <(measure "$lib/spillway" wordcount "$corpus" -o "$work/builtin.tsv" -t "$threads" -m 64M)
read -r cw cu cs < <(SPILLWAY_THREADS=$threads measure "$work/c-wordcount" "$work/c.tsv" "$corpus")
cmp -s "$work/builtin.tsv" "$work/c.tsv" || { echo "outputs differ" >&2; exit 1; }

mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.1f", b / s / 1048576 }'; }
echo "corpus: $size ($bytes bytes), $threads threads, 64 MiB budget; outputs identical"
echo
echo "| word count | wall s | user s | sys s | MiB/s |"
echo "| --- | ---: | ---: | ---: | ---: |"
echo "| spillway wordcount (built-in) | $bw | $bu | $bs | $(mbps "$bw") |"
echo "| C callbacks (capi/examples/wordcount.c) | $cw | $cu | $cs | $(mbps "$cw") |"
echo
awk -v b="$bw" -v c="$cw" 'BEGIN { printf "C / built-in throughput: %.2fx (target >= 0.70x)\n", b / c }'
