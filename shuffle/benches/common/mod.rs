//! Shared pieces of the shuffle micro benchmarks: a fixed-seed PRNG, the two record shapes
//! (16-byte keys with `u64` values, and 100-byte records), input generation, run writing, and
//! the criterion settings that keep `cargo bench -p spillway-shuffle` short.

#![allow(dead_code, reason = "each bench target uses a different subset of these helpers")]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{Bencher, BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use spillway_shuffle::rkyv::Archived;
use spillway_shuffle::{IoBackend, RunInfo, RunWriter, Value};

/// SplitMix64: a tiny, fast, fixed-seed generator (no `rand` dependency).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    /// A random number in `0..n` (multiply-shift; the bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A record shape: fixed-length keys and one value type.
pub trait Shape: 'static {
    /// The run value type.
    type V: Value;
    /// Key length in bytes.
    const KEY_LEN: usize;
    /// Short name used in benchmark ids.
    const NAME: &'static str;
    /// Records per benchmark (the total over all runs of a merge).
    const RECORDS: usize;
    /// A random value.
    fn value(rng: &mut SplitMix64) -> Self::V;
    /// Folds one record into a checksum, touching its value (so nothing is optimized away).
    fn fold(acc: u64, key: &[u8], value: &Archived<Self::V>) -> u64;
    /// Logical bytes of one record: key plus value payload.
    fn record_bytes() -> u64;
}

/// 16-byte random keys with `u64` values.
#[derive(Debug)]
pub struct Key16U64;

impl Shape for Key16U64 {
    type V = u64;
    const KEY_LEN: usize = 16;
    const NAME: &'static str = "k16_u64";
    const RECORDS: usize = 2_000_000;

    fn value(rng: &mut SplitMix64) -> u64 {
        rng.next_u64()
    }

    #[inline(always)]
    fn fold(acc: u64, key: &[u8], value: &Archived<u64>) -> u64 {
        acc.wrapping_add(value.to_native()).wrapping_add(key.len() as u64)
    }

    fn record_bytes() -> u64 {
        16 + 8
    }
}

/// 100-byte records (the sort-benchmark shape): a 10-byte key and a 90-byte payload value.
#[derive(Debug)]
pub struct Rec100;

impl Shape for Rec100 {
    type V = [u8; 90];
    const KEY_LEN: usize = 10;
    const NAME: &'static str = "rec100";
    const RECORDS: usize = 500_000;

    fn value(rng: &mut SplitMix64) -> [u8; 90] {
        let mut v = [0u8; 90];
        rng.fill(&mut v);
        v
    }

    #[inline(always)]
    fn fold(acc: u64, key: &[u8], value: &[u8; 90]) -> u64 {
        let head = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
        acc.wrapping_add(head).wrapping_add(u64::from(value[89])).wrapping_add(key.len() as u64)
    }

    fn record_bytes() -> u64 {
        100
    }
}

/// Records in memory: all keys concatenated (fixed length), and one value per key.
#[derive(Debug, Clone)]
pub struct Records<V> {
    /// Key length.
    pub key_len: usize,
    /// `len() * key_len` key bytes.
    pub keys: Vec<u8>,
    /// One value per key.
    pub values: Vec<V>,
}

impl<V: Value> Records<V> {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Key `i`.
    pub fn key(&self, i: usize) -> &[u8] {
        &self.keys[i * self.key_len..(i + 1) * self.key_len]
    }

    /// The records sorted by key (stable, like a run).
    pub fn sorted(&self) -> Records<V> {
        let mut order: Vec<u32> = (0..self.len() as u32).collect();
        order.sort_by(|&a, &b| self.key(a as usize).cmp(self.key(b as usize)));
        self.pick(&order)
    }

    /// Splits the records round-robin into `parts` sorted runs' worth of records.
    pub fn split_sorted(&self, parts: usize) -> Vec<Records<V>> {
        (0..parts)
            .map(|part| {
                let picked: Vec<u32> = (part..self.len()).step_by(parts).map(|i| i as u32).collect();
                self.pick(&picked).sorted()
            })
            .collect()
    }

    fn pick(&self, order: &[u32]) -> Records<V> {
        let mut keys = Vec::with_capacity(order.len() * self.key_len);
        let mut values = Vec::with_capacity(order.len());
        for &i in order {
            keys.extend_from_slice(self.key(i as usize));
            values.push(self.values[i as usize].clone());
        }
        Records { key_len: self.key_len, keys, values }
    }

    /// Pushes every record into partition 0 of a new run at `path` (std backend, no fsync).
    pub fn write_run(&self, path: &Path) -> RunInfo {
        let mut writer = RunWriter::<V>::create(path, 1, IoBackend::Std).expect("create run");
        for (i, value) in self.values.iter().enumerate() {
            writer.push(0, self.key(i), value).expect("push");
        }
        writer.finish(false).expect("finish run")
    }
}

/// `n` records of shape `S` with uniformly random keys, in random order.
pub fn random_records<S: Shape>(n: usize, seed: u64) -> Records<S::V> {
    let mut rng = SplitMix64::new(seed);
    let mut keys = vec![0u8; n * S::KEY_LEN];
    rng.fill(&mut keys);
    let values = (0..n).map(|_| S::value(&mut rng)).collect();
    Records { key_len: S::KEY_LEN, keys, values }
}

/// `n` records of shape `S` whose keys are drawn from `distinct` random keys (so a merge
/// sees every key about `n / distinct` times), in random order.
pub fn duplicated_records<S: Shape>(n: usize, distinct: usize, seed: u64) -> Records<S::V> {
    let pool = random_records::<S>(distinct, seed ^ 0xD0D0);
    let mut rng = SplitMix64::new(seed);
    let mut keys = Vec::with_capacity(n * S::KEY_LEN);
    for _ in 0..n {
        keys.extend_from_slice(pool.key(rng.below(distinct as u64) as usize));
    }
    let values = (0..n).map(|_| S::value(&mut rng)).collect();
    Records { key_len: S::KEY_LEN, keys, values }
}

/// Writes `parts` as runs `run-00000.run`, ... under `dir`; returns their paths.
pub fn write_runs<V: Value>(dir: &Path, parts: &[Records<V>]) -> Vec<PathBuf> {
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let path = dir.join(format!("run-{i:05}.run"));
            part.write_run(&path);
            path
        })
        .collect()
}

/// Throughput of one pass over `records` records of shape `S`.
pub fn throughput<S: Shape>(records: usize) -> Throughput {
    Throughput::ElementsAndBytes { elements: records as u64, bytes: records as u64 * S::record_bytes() }
}

/// Which clock the benchmarks read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// CPU time of the benchmarking thread (user + system), `CLOCK_THREAD_CPUTIME_ID`: what
    /// "on one core" means, and robust to other processes taking the core away.
    ThreadCpu,
    /// Wall-clock time (criterion's default).
    Wall,
}

/// The clock chosen by `SPILLWAY_BENCH_CLOCK` (`cpu`, the default, or `wall`).
pub fn clock() -> Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    *CLOCK.get_or_init(|| match std::env::var("SPILLWAY_BENCH_CLOCK").as_deref() {
        Ok("wall") => Clock::Wall,
        Ok("cpu") | Err(_) => Clock::ThreadCpu,
        Ok(other) => panic!("SPILLWAY_BENCH_CLOCK={other:?}: expected cpu or wall"),
    })
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Times `routine` with the chosen [`clock`]; its output goes through `black_box`.
pub fn timed<O>(b: &mut Bencher<'_>, mut routine: impl FnMut() -> O) {
    match clock() {
        Clock::Wall => b.iter(routine),
        Clock::ThreadCpu => b.iter_custom(|iters| {
            let (cpu, wall) = (thread_cpu_time(), Instant::now());
            for _ in 0..iters {
                black_box(routine());
            }
            // Never report less than zero, and never more than the wall time that passed.
            (thread_cpu_time().saturating_sub(cpu)).min(wall.elapsed())
        }),
    }
}

/// Criterion with the short settings used by every group here: 10 samples, 1 s of warm-up,
/// 2 s of measurement. Command-line arguments (filters, `--save-baseline`) still apply.
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

/// Applies the short settings to a group of benchmarks whose iterations take milliseconds.
pub fn short_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sampling_mode(SamplingMode::Flat);
    group
}
