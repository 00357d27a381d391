//! Micro benchmarks of the loser-tree merge: `Merge` over the partition iterators of open
//! runs, at fan-in 2, 8, 64 and 512.
//!
//! Every benchmark of a shape merges the same total number of records (2M 16-byte-key/`u64`
//! records, or 500k 100-byte records), dealt round-robin from one random set into the fan-in
//! runs and sorted per run; one partition. Runs are written and opened once per fan-in,
//! outside the timed loop, and read through memory maps of files in the page cache. Times are
//! the benchmarking thread's CPU time unless `SPILLWAY_BENCH_CLOCK=wall` (see `common`).
//!
//! - `merge/<shape>/<fan-in>`: `Merge::new` + `next_record` until exhausted, folding keys and
//!   values into a checksum.
//! - `merge_combine/k16_u64/64`: `next_combined` with a sum, over 2M records drawn from 250k
//!   distinct keys (about 8 values per key).
//! - `merge_to_run/k16_u64/64`: `merge_readers` (merge, deserialize, `RunWriter` to a file).
//! - `proto_merge/...`, `proto_merge_combine/...`: the same work done by [`PrefixMerge`], a
//!   prototype loser tree (safe code, public API only) that caches an 8-byte key prefix in
//!   every tree node and replays matches without branches. `proto_merge_prefetch/...`,
//!   `proto_merge_prefetch_combine/...`: the same, plus software prefetches of each source's
//!   keys and values. The prototype is checked against `Merge`, record by record, on every
//!   input it is timed on and on edge-case keys, before timing.
//!
//! Throughput counts input records, and their logical bytes (key plus value payload).

mod common;

use std::path::PathBuf;

use common::{
    Key16U64, Rec100, Shape, duplicated_records, random_records, short_group, throughput, timed, write_runs,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use spillway_shuffle::rkyv::Archived;
use spillway_shuffle::{
    ArchivedValue, IoBackend, Merge, MergeOptions, PartitionIter, ReadMode, RunReader, RunWriter, Value,
    merge_readers, to_owned,
};

const FAN_INS: [usize; 4] = [2, 8, 64, 512];

/// Runs written to a temporary directory and opened.
struct OpenRuns<S: Shape> {
    _dir: tempfile::TempDir,
    readers: Vec<RunReader<S::V>>,
}

impl<S: Shape> OpenRuns<S> {
    fn new(records: &common::Records<S::V>, fan_in: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths: Vec<PathBuf> = write_runs(dir.path(), &records.split_sorted(fan_in));
        let readers: Vec<_> =
            paths.iter().map(|p| RunReader::<S::V>::open(p, ReadMode::Mmap).expect("open")).collect();
        let total: u64 = readers.iter().map(RunReader::total_records).sum();
        assert_eq!(total, records.len() as u64);
        OpenRuns { _dir: dir, readers }
    }

    fn iters(&self) -> Vec<PartitionIter<'_, S::V>> {
        self.readers.iter().map(|r| r.iter(0)).collect()
    }

    fn merge(&self) -> Merge<'_, S::V> {
        Merge::new(self.iters())
    }

    fn proto<const PREFETCH: bool>(&self) -> PrefixMerge<'_, S::V, PREFETCH> {
        PrefixMerge::new(self.iters())
    }

    /// Asserts that the prototype yields exactly the records `Merge` yields.
    fn check_proto(&self) {
        assert_proto_matches(&self.readers);
    }
}

/// Asserts that [`PrefixMerge`] yields exactly the records `Merge` yields over partition 0 of
/// `readers` (the same key and value addresses, so ties are broken the same way).
fn assert_proto_matches<V: Value>(readers: &[RunReader<V>]) {
    let iters = || readers.iter().map(|r| r.iter(0)).collect::<Vec<_>>();
    let mut a = Merge::new(iters());
    let mut b = PrefixMerge::<V, false>::new(iters());
    let mut c = PrefixMerge::<V, true>::new(iters());
    loop {
        let (ra, rb, rc) = (a.next_record(), b.next_record(), c.next_record());
        let same = |x: Option<Record<'_, V>>, y: Option<Record<'_, V>>| match (x, y) {
            (None, None) => true,
            (Some((kx, vx)), Some((ky, vy))) => std::ptr::eq(kx, ky) && std::ptr::eq(vx, vy),
            _ => false,
        };
        assert!(same(ra, rb) && same(ra, rc), "prototype diverges from Merge");
        if ra.is_none() {
            break;
        }
    }
}

/// Checks the prototype on keys that defeat the prefix: empty and short keys (zero padding),
/// long keys with a common prefix, `0xFF` prefixes (equal to an exhausted source's), and
/// duplicates within and across runs; at fan-ins 1 to 9.
fn check_proto_edge_cases() {
    let alphabet: [&[u8]; 14] = [
        b"",
        b"\0",
        b"a",
        b"a\0",
        b"a\0\0\0\0\0\0\0",
        b"a\0\0\0\0\0\0\0\0",
        b"abcdefg",
        b"abcdefgh",
        b"abcdefgh\0",
        b"abcdefghi",
        b"abcdefghij",
        &[0xFF; 7],
        &[0xFF; 8],
        &[0xFF; 9],
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = common::SplitMix64::new(0x5EED_0006);
    for fan_in in 1..=9usize {
        let readers: Vec<RunReader<u64>> = (0..fan_in)
            .map(|run| {
                let len = rng.below(40) as usize;
                let mut keys: Vec<&[u8]> =
                    (0..len).map(|_| alphabet[rng.below(alphabet.len() as u64) as usize]).collect();
                keys.sort();
                let path = dir.path().join(format!("edge-{fan_in}-{run}.run"));
                let mut w =
                    RunWriter::<u64>::create(&path, 1, IoBackend::Std).expect("create").with_block_target(64);
                for (i, key) in keys.iter().enumerate() {
                    w.push(0, key, &(i as u64)).expect("push");
                }
                w.finish(false).expect("finish");
                RunReader::open(&path, ReadMode::Mmap).expect("open")
            })
            .collect();
        assert_proto_matches(&readers);
    }
}

fn merge<S: Shape>(c: &mut Criterion) {
    let records = random_records::<S>(S::RECORDS, 0x5EED_0003);
    let runs: Vec<(usize, OpenRuns<S>)> =
        FAN_INS.iter().map(|&fan_in| (fan_in, OpenRuns::<S>::new(&records, fan_in))).collect();
    drop(records);
    for (_, runs) in &runs {
        runs.check_proto();
    }

    for (name, variant) in VARIANTS {
        let mut group = short_group(c, name);
        group.throughput(throughput::<S>(S::RECORDS));
        for (fan_in, runs) in &runs {
            group.bench_with_input(BenchmarkId::new(S::NAME, fan_in), runs, |b, runs| {
                timed(b, || match variant {
                    Variant::Merge => drain::<S>(runs.merge()),
                    Variant::Proto => drain::<S>(runs.proto::<false>()),
                    Variant::ProtoPrefetch => drain::<S>(runs.proto::<true>()),
                });
            });
        }
        group.finish();
    }
}

/// The merge implementations compared.
#[derive(Clone, Copy, Debug)]
enum Variant {
    /// `spillway_shuffle::Merge`.
    Merge,
    /// [`PrefixMerge`] without prefetching.
    Proto,
    /// [`PrefixMerge`] with software prefetches.
    ProtoPrefetch,
}

const VARIANTS: [(&str, Variant); 3] = [
    ("merge", Variant::Merge),
    ("proto_merge", Variant::Proto),
    ("proto_merge_prefetch", Variant::ProtoPrefetch),
];

/// Takes every record of `merge`, folding it into a checksum.
fn drain<'a, S: Shape>(merge: impl Iterator<Item = Record<'a, S::V>>) -> u64 {
    merge.fold(0, |acc, (key, value)| S::fold(acc, key, value))
}

fn sum(acc: &mut u64, v: &Archived<u64>) {
    *acc = acc.wrapping_add(v.to_native());
}

fn merge_combine(c: &mut Criterion) {
    type S = Key16U64;
    let fan_in = 64;
    let records = duplicated_records::<S>(S::RECORDS, S::RECORDS / 8, 0x5EED_0004);
    let runs = OpenRuns::<S>::new(&records, fan_in);
    drop(records);
    runs.check_proto();
    for (name, variant) in VARIANTS {
        let mut group = short_group(c, &format!("{name}_combine"));
        group.throughput(throughput::<S>(S::RECORDS));
        group.bench_with_input(BenchmarkId::new(S::NAME, fan_in), &runs, |b, runs| {
            timed(b, || match variant {
                Variant::Merge => drain_combined(runs.merge()),
                Variant::Proto => drain_combined(runs.proto::<false>()),
                Variant::ProtoPrefetch => drain_combined(runs.proto::<true>()),
            });
        });
        group.finish();
    }
}

/// Takes every key of `merge` with its values summed, folding them into a checksum.
fn drain_combined<'a>(mut merge: impl Combining<'a, u64>) -> u64 {
    let mut acc = 0u64;
    while let Some((key, total)) = merge.next_combined(sum) {
        acc = acc.wrapping_add(total).wrapping_add(key.len() as u64);
    }
    acc
}

/// `next_combined`, for `Merge` and the prototype alike.
trait Combining<'a, V: Value> {
    fn next_combined(&mut self, combine: impl FnMut(&mut V, &ArchivedValue<V>)) -> Option<(&'a [u8], V)>;
}

impl<'a, V: Value> Combining<'a, V> for Merge<'a, V> {
    fn next_combined(&mut self, combine: impl FnMut(&mut V, &ArchivedValue<V>)) -> Option<(&'a [u8], V)> {
        Merge::next_combined(self, combine)
    }
}

impl<'a, V: Value, const PREFETCH: bool> Combining<'a, V> for PrefixMerge<'a, V, PREFETCH> {
    fn next_combined(&mut self, combine: impl FnMut(&mut V, &ArchivedValue<V>)) -> Option<(&'a [u8], V)> {
        PrefixMerge::next_combined(self, combine)
    }
}

fn merge_to_run(c: &mut Criterion) {
    type S = Key16U64;
    let fan_in = 64;
    let records = random_records::<S>(S::RECORDS, 0x5EED_0005);
    let runs = OpenRuns::<S>::new(&records, fan_in);
    drop(records);
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("merged.run");
    let options = MergeOptions { io: IoBackend::Std, ..MergeOptions::default() };
    let mut group = short_group(c, "merge_to_run");
    group.throughput(throughput::<S>(S::RECORDS));
    group.bench_with_input(BenchmarkId::new(S::NAME, fan_in), &runs, |b, runs| {
        timed(b, || merge_readers(&runs.readers, &out, None, &options).expect("merge").bytes);
    });
    group.finish();
}

/// A record borrowed from a run.
type Record<'a, V> = (&'a [u8], &'a ArchivedValue<V>);

/// One contestant in the prototype's tree: the source's current key prefix (the first 8 key
/// bytes, big-endian, zero-padded; `u64::MAX` once the source is exhausted) and its index.
#[derive(Clone, Copy, Debug)]
struct Node {
    prefix: u64,
    source: usize,
}

/// Prototype loser tree: the layout `merge/mod.rs` could adopt (no `unsafe`).
///
/// Differences from `Merge`: every internal node stores the loser's key prefix next to its
/// source index, so a match usually compares two `u64`s that are already in the node, instead
/// of loading two `Option<(&[u8], &V)>` heads and calling `memcmp` through `<[u8]>::cmp`;
/// only equal prefixes fall back to the full comparison (`Merge::before`'s rules: exhausted
/// sources last, ties by source index). The winner and loser of a match are selected by
/// indexing a pair, so the replay has no data-dependent branch to mispredict on random keys.
///
/// With `PREFETCH`, taking a record from a source also prefetches that source's keys and
/// values [`PREFETCH_AHEAD`] bytes ahead: with tens of interleaved sources (three column
/// streams each: ends, keys, values) the hardware prefetchers lose track, and loading the new
/// head's key — the start of the replay's dependency chain — misses the cache. This is the one
/// part that needs `unsafe` (the intrinsic), so it belongs in `run/reader.rs`.
struct PrefixMerge<'a, V: Value, const PREFETCH: bool> {
    sources: Vec<PartitionIter<'a, V>>,
    heads: Vec<Option<Record<'a, V>>>,
    /// `tree[0]` is the current winner; `tree[1..k]` hold the loser of each match.
    tree: Vec<Node>,
}

/// How far ahead of a source's current record [`PrefixMerge`] prefetches its keys and values.
const PREFETCH_AHEAD: usize = 512;

/// Asks the CPU to bring the cache line at `p` into L1 (a no-op off x86_64).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults, whatever the address, and SSE is part of
    // the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
}

#[inline(always)]
fn prefix_of(head: Option<&[u8]>) -> u64 {
    match head {
        Some(key) if key.len() >= 8 => u64::from_be_bytes(key[..8].try_into().expect("8 bytes")),
        Some(key) => {
            let mut buf = [0u8; 8];
            buf[..key.len()].copy_from_slice(key);
            u64::from_be_bytes(buf)
        }
        None => u64::MAX,
    }
}

impl<'a, V: Value, const PREFETCH: bool> PrefixMerge<'a, V, PREFETCH> {
    fn new(mut sources: Vec<PartitionIter<'a, V>>) -> Self {
        let heads: Vec<_> = sources.iter_mut().map(Iterator::next).collect();
        let k = sources.len();
        let mut merge =
            PrefixMerge { sources, heads, tree: vec![Node { prefix: u64::MAX, source: 0 }; k.max(1)] };
        if k > 0 {
            merge.tree[0] = merge.build(1);
        }
        merge
    }

    fn node(&self, source: usize) -> Node {
        Node { prefix: prefix_of(self.heads[source].map(|(key, _)| key)), source }
    }

    fn build(&mut self, node: usize) -> Node {
        let k = self.sources.len();
        if node >= k {
            return self.node(node - k);
        }
        let left = self.build(2 * node);
        let right = self.build(2 * node + 1);
        let (winner, loser) = if self.before(left, right) { (left, right) } else { (right, left) };
        self.tree[node] = loser;
        winner
    }

    /// Does `a` come before `b`?
    #[inline(always)]
    fn before(&self, a: Node, b: Node) -> bool {
        if a.prefix != b.prefix { a.prefix < b.prefix } else { self.before_slow(a.source, b.source) }
    }

    /// Equal prefixes: compare whole keys, exhausted sources last, ties by source index.
    #[inline(never)]
    fn before_slow(&self, a: usize, b: usize) -> bool {
        match (&self.heads[a], &self.heads[b]) {
            (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => a < b,
            },
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => a < b,
        }
    }

    #[inline]
    fn peek_key(&self) -> Option<&'a [u8]> {
        if self.sources.is_empty() {
            return None;
        }
        self.heads[self.tree[0].source].map(|(key, _)| key)
    }

    #[inline]
    fn next_record(&mut self) -> Option<Record<'a, V>> {
        if self.sources.is_empty() {
            return None;
        }
        let winner = self.tree[0].source;
        let record = self.heads[winner]?;
        let head = self.sources[winner].next();
        self.heads[winner] = head;
        if PREFETCH && let Some((key, value)) = head {
            prefetch(key.as_ptr().wrapping_add(PREFETCH_AHEAD));
            prefetch((value as *const ArchivedValue<V>).cast::<u8>().wrapping_add(PREFETCH_AHEAD));
        }
        let mut champion = Node { prefix: prefix_of(head.map(|(key, _)| key)), source: winner };
        let k = self.sources.len();
        let mut node = (winner + k) / 2;
        while node > 0 {
            let rival = self.tree[node];
            // Select by indexing rather than `if`, so that LLVM emits no data-dependent branch
            // (it turns both `if` and and/or masks back into a jump, mispredicted about half
            // the time on random keys). `rival_wins` moves the rival up.
            let rival_wins = self.before(rival, champion) as usize;
            let pair = [champion, rival];
            self.tree[node] = pair[rival_wins ^ 1];
            champion = pair[rival_wins];
            node /= 2;
        }
        self.tree[0] = champion;
        Some(record)
    }

    /// As `Merge::next_combined`.
    fn next_combined(&mut self, mut combine: impl FnMut(&mut V, &ArchivedValue<V>)) -> Option<(&'a [u8], V)> {
        let (key, first) = self.next_record()?;
        let mut acc = to_owned::<V>(first);
        while self.peek_key() == Some(key) {
            let (_, value) = self.next_record().expect("peeked");
            combine(&mut acc, value);
        }
        Some((key, acc))
    }
}

impl<'a, V: Value, const PREFETCH: bool> Iterator for PrefixMerge<'a, V, PREFETCH> {
    type Item = Record<'a, V>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}

fn benches(c: &mut Criterion) {
    check_proto_edge_cases();
    merge::<Key16U64>(c);
    merge::<Rec100>(c);
    merge_combine(c);
    merge_to_run(c);
}

criterion_group! {
    name = merges;
    config = common::criterion();
    targets = benches
}
criterion_main!(merges);
