//! A byte-exact reimplementation of the Sort Benchmark's `gensort` 1.5 record generator.
//!
//! Records come from a 128-bit linear congruential sequence `x(n + 1) = A * x(n) + C`
//! (mod 2^128, `x(0) = 0`); record `i` starts from `x(i + 1)`. Because the sequence can be
//! skipped ahead in O(log n) ([`Lcg::skip`]), any range of records can be generated on its own,
//! which is what makes [`generate_file`] parallel and `--start` cheap.
//!
//! * Binary records (the default): bytes `0..10` are the top 10 bytes of `x(i + 1)`; piece
//!   `k = 0..8` (bytes `10 + 10k ..`) is the top 10 bytes of `x(i + 2 + k) XOR K[k]`.
//! * ASCII records: a printable 10-byte key (base 95), the record number in hex, and filler
//!   digits, ending with `\r\n`.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{KEY_LEN, RECORD_LEN};
use spillway_engine::Destination;

/// The multiplier `A` of gensort's 128-bit linear congruential generator.
pub const MULTIPLIER: u128 = 0x2360_ed05_1fc6_5da4_4385_df64_9fcc_f645;

/// The increment `C` of gensort's 128-bit linear congruential generator.
pub const INCREMENT: u128 = 0x4a69_6d47_7261_7952_4950_2020_2020_2001;

/// The constants XORed into the nine 10-byte pieces that follow the key of a binary record
/// (only their top 10 bytes matter).
const PIECE_XOR: [u128; 9] = [
    0xF0E8E4E2E1D8D4D2_D1CC000000000000,
    0xCAC9C6C5C3B8B4B2_B1AC000000000000,
    0xAAA9A6A5A39C9A99_9695000000000000,
    0x938E8D8B87787472_716C000000000000,
    0x6A696665635C5A59_5655000000000000,
    0x534E4D4B473C3A39_3635000000000000,
    0x332E2D2B271E1D1B_170F000000000000,
    0xC8C4C2C198949291_8CE0000000000000,
    0x170F332E2D2B271E_1D1B000000000000,
];

/// The value XORed into each of the ten 10-byte pieces of a binary record before taking its
/// top 10 bytes: nothing for the key, then [`PIECE_XOR`].
const PIECE_MASKS: [u128; 10] = {
    let mut masks = [0u128; 10];
    let mut k = 0;
    while k < PIECE_XOR.len() {
        masks[k + 1] = PIECE_XOR[k];
        k += 1;
    }
    masks
};

/// Records generated per block of [`fill_records`]' binary path (bounds its stack buffer).
const BLOCK_RECORDS: usize = 512;

/// Records per chunk written by one [`generate_file`] worker (about 1 MB: fits in L2).
const FILE_CHUNK_RECORDS: u64 = 10_000;

/// gensort's 128-bit linear congruential generator, positioned at some `x(n)`.
///
/// [`Lcg::default`] is positioned at `x(0) = 0`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lcg {
    state: u128,
}

impl Lcg {
    /// A generator positioned at `x(n)`, computed in O(log n).
    #[must_use]
    pub fn at(n: u128) -> Self {
        let mut lcg = Self::default();
        lcg.skip(n);
        lcg
    }

    /// The current value `x(n)`.
    #[must_use]
    pub const fn state(&self) -> u128 {
        self.state
    }

    /// Advances from `x(n)` to `x(n + 1)` and returns the new value.
    #[inline(always)]
    pub fn step(&mut self) -> u128 {
        self.state = self.state.wrapping_mul(MULTIPLIER).wrapping_add(INCREMENT);
        self.state
    }

    /// Advances from `x(n)` to `x(n + count)` in O(log count) by composing the affine map
    /// `x -> A * x + C` with itself by repeated squaring.
    pub fn skip(&mut self, count: u128) {
        let (a, c) = affine_power(count);
        self.state = self.state.wrapping_mul(a).wrapping_add(c);
    }
}

/// The affine map `x -> A * x + C` composed with itself `n` times, as `(a, c)` meaning
/// `x -> a * x + c` (all mod 2^128).
fn affine_power(mut n: u128) -> (u128, u128) {
    let (mut ra, mut rc) = (1u128, 0u128);
    let (mut ba, mut bc) = (MULTIPLIER, INCREMENT);
    while n != 0 {
        if n & 1 == 1 {
            // Powers of one map commute, so the order of composition does not matter.
            ra = ba.wrapping_mul(ra);
            rc = ba.wrapping_mul(rc).wrapping_add(bc);
        }
        bc = ba.wrapping_mul(bc).wrapping_add(bc);
        ba = ba.wrapping_mul(ba);
        n >>= 1;
    }
    (ra, rc)
}

/// Writes `buf.len() / 100` consecutive records into `buf`, the first being record number
/// `start` (0-based), exactly as `gensort [-a] -b<start>` would. Any trailing
/// `buf.len() % 100` bytes are left untouched.
///
/// `ascii` selects gensort's `-a` (printable) records instead of the default binary ones.
/// Record numbers wrap around mod 2^128, as in gensort.
pub fn fill_records(start: u128, buf: &mut [u8], ascii: bool) {
    let whole = buf.len() / RECORD_LEN * RECORD_LEN;
    let buf = &mut buf[..whole];
    if ascii {
        fill_ascii(start, buf);
    } else {
        fill_binary(start, buf);
    }
}

/// Binary records: record `i` is made of `top10(x(i + 1 + k) ^ PIECE_MASKS[k])` for
/// `k = 0..10`, so consecutive records share nine of their ten generator values. Each block
/// keeps `x(s + 1) ..= x(s + m + 9)` for its `m` records starting at record `s`.
fn fill_binary(start: u128, out: &mut [u8]) {
    const SHARED: usize = PIECE_MASKS.len() - 1;
    let mut xs = [0u128; BLOCK_RECORDS + SHARED];
    let mut rng = Lcg::at(start);
    for x in &mut xs[..SHARED] {
        *x = rng.step();
    }
    for block in out.chunks_mut(BLOCK_RECORDS * RECORD_LEN) {
        let m = block.len() / RECORD_LEN;
        for x in &mut xs[SHARED..SHARED + m] {
            *x = rng.step();
        }
        for (rec, window) in block.chunks_exact_mut(RECORD_LEN).zip(xs.windows(SHARED + 1)) {
            for ((piece, x), mask) in rec.chunks_exact_mut(KEY_LEN).zip(window).zip(&PIECE_MASKS) {
                piece.copy_from_slice(&(x ^ mask).to_be_bytes()[..KEY_LEN]);
            }
        }
        xs.copy_within(m..m + SHARED, 0);
    }
}

/// Eight uppercase hex digits of `v`, most significant first, as the big-endian bytes of the
/// returned `u64` (branch-free: spread the nibbles into bytes, then add `'0'` or `'A' - 10`).
#[inline(always)]
fn hex8(v: u32) -> u64 {
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    x + 0x3030_3030_3030_3030 + letters * 7
}

/// Sixteen uppercase hex digits of `v`, most significant first.
#[inline(always)]
fn hex16(v: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hex8((v >> 32) as u32).to_be_bytes());
    out[8..].copy_from_slice(&hex8(v as u32).to_be_bytes());
    out
}

fn fill_ascii(start: u128, out: &mut [u8]) {
    let mut rng = Lcg::at(start);
    let mut index = start;
    for rec in out.chunks_exact_mut(RECORD_LEN) {
        let rec: &mut [u8; RECORD_LEN] = rec.try_into().expect("whole record");
        ascii_record(rec, index, rng.step());
        index = index.wrapping_add(1);
    }
}

/// One ASCII record: `index` is the record number, `x` is `x(index + 1)`.
#[inline(always)]
fn ascii_record(rec: &mut [u8; RECORD_LEN], index: u128, x: u128) {
    let mut hi = (x >> 64) as u64;
    let lo = x as u64;
    for b in &mut rec[..8] {
        *b = b' ' + (hi % 95) as u8;
        hi /= 95;
    }
    rec[8] = b' ' + (lo % 95) as u8;
    rec[9] = b' ' + (lo / 95 % 95) as u8;
    rec[10..12].copy_from_slice(b"  ");
    rec[12..28].copy_from_slice(&hex16((index >> 64) as u64));
    rec[28..44].copy_from_slice(&hex16(index as u64));
    rec[44..46].copy_from_slice(b"  ");
    // The nibbles of `lo` at shifts 48, 44, ..., 0 are its hex digits 3..16, each written 4 times.
    let digits = hex16(lo);
    for (quad, &digit) in rec[46..98].chunks_exact_mut(4).zip(&digits[3..]) {
        quad.fill(digit);
    }
    rec[98..100].copy_from_slice(b"\r\n");
}

/// Why a range of records cannot be written to a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// `count` records are more bytes than a file can hold.
    #[error("{count} records of {RECORD_LEN} bytes are more than a file can hold (at most {max} bytes)", max = i64::MAX)]
    TooLarge {
        /// The number of records asked for.
        count: u64,
    },
    /// The last record number would be past 2^128 - 1.
    #[error("{count} records from record {start} go past the last record number 2^128 - 1")]
    PastLastRecord {
        /// The first record number.
        start: u128,
        /// The number of records asked for.
        count: u64,
    },
}

/// The length in bytes of the file holding `count` records from record number `start`.
///
/// # Errors
///
/// The file would be longer than the largest file size (`i64::MAX` bytes), or the record
/// numbers would go past 2^128 - 1.
pub fn file_len(start: u128, count: u64) -> Result<u64, RangeError> {
    let len = count
        .checked_mul(RECORD_LEN as u64)
        .filter(|&len| i64::try_from(len).is_ok())
        .ok_or(RangeError::TooLarge { count })?;
    if count > 0 && start.checked_add(u128::from(count) - 1).is_none() {
        return Err(RangeError::PastLastRecord { start, count });
    }
    Ok(len)
}

/// Writes `count` records starting at record number `start` to `path`, byte-identical to
/// `gensort [-a] -b<start> <count> <path>`.
///
/// A regular file (or a symbolic link to one) is replaced atomically: the records go into a
/// temporary file next to it ([`Destination::Replace`]), sized up front and filled by `threads`
/// workers (`0` is treated as `1`), each generating about 1 MB at a time and writing it at
/// its offset, then renamed over `path`; on failure the temporary file is removed and `path`
/// keeps what it held. A device or FIFO is written in place, in order, by one thread. The
/// output never depends on the number of threads.
///
/// # Errors
///
/// The range is invalid ([`file_len`]; nothing is touched), `path` is a directory or its
/// directory does not exist ([`Destination::create`]), or an I/O error.
pub fn generate_file(path: &Path, start: u128, count: u64, ascii: bool, threads: usize) -> io::Result<()> {
    generate_file_chunked(path, start, count, ascii, threads, FILE_CHUNK_RECORDS)
}

fn generate_file_chunked(
    path: &Path,
    start: u128,
    count: u64,
    ascii: bool,
    threads: usize,
    chunk_records: u64,
) -> io::Result<()> {
    let total = file_len(start, count).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let job = |file, in_order| GenJob {
        file,
        in_order,
        start,
        count,
        ascii,
        chunk_records,
        chunks: count.div_ceil(chunk_records),
        next: AtomicU64::new(0),
        failed: AtomicBool::new(false),
    };
    let dest = Destination::create(path).map_err(io::Error::other)?;
    let file = dest.file().expect("a path names a file");
    if dest.positioned().is_some() {
        file.set_len(total)?;
        job(file, false).run_on(threads)?;
    } else {
        job(file, true).run_on(1)?; // a device or FIFO, in order
    }
    dest.commit(true).map_err(io::Error::other)
}

/// Shared state of one [`generate_file`] call: workers claim chunk numbers from `next`.
struct GenJob<'a> {
    file: &'a File,
    /// Write chunks one after the other (one worker) rather than at their offsets.
    in_order: bool,
    start: u128,
    count: u64,
    ascii: bool,
    chunk_records: u64,
    chunks: u64,
    next: AtomicU64,
    failed: AtomicBool,
}

impl GenJob<'_> {
    /// Generates every chunk on up to `threads` workers (`0` is treated as `1`).
    fn run_on(&self, threads: usize) -> io::Result<()> {
        let threads = u64::try_from(threads.max(1)).unwrap_or(u64::MAX).min(self.chunks);
        if threads <= 1 {
            return self.run();
        }
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads).map(|_| scope.spawn(|| self.run())).collect();
            let mut result = Ok(());
            for worker in workers {
                let outcome = worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                if result.is_ok() {
                    result = outcome;
                }
            }
            result
        })
    }

    fn run(&self) -> io::Result<()> {
        let chunk_len =
            usize::try_from(self.chunk_records.min(self.count)).expect("chunk fits in memory") * RECORD_LEN;
        let mut buf = vec![0u8; chunk_len];
        loop {
            let chunk = self.next.fetch_add(1, Ordering::Relaxed);
            if chunk >= self.chunks || self.failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            let first = chunk * self.chunk_records;
            let records = self.chunk_records.min(self.count - first);
            // `records <= chunk_records`, which was just shown to fit in a `usize`.
            let bytes = &mut buf[..records as usize * RECORD_LEN];
            fill_records(self.start.wrapping_add(u128::from(first)), bytes, self.ascii);
            let written = if self.in_order {
                let mut file = self.file;
                file.write_all(bytes)
            } else {
                self.file.write_all_at(bytes, first * RECORD_LEN as u64)
            };
            if let Err(err) = written {
                self.failed.store(true, Ordering::Relaxed);
                return Err(err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// sha256 of `data` in lowercase hex, via the system's `sha256sum`.
    pub(crate) fn sha256_hex(data: &[u8]) -> String {
        let mut child = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sha256sum must be installed");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let data = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let output = child.wait_with_output().expect("sha256sum runs");
        writer.join().expect("writer thread").expect("write to sha256sum");
        assert!(output.status.success());
        String::from_utf8(output.stdout).expect("utf-8")[..64].to_string()
    }

    fn records(start: u128, count: usize, ascii: bool) -> Vec<u8> {
        let mut buf = vec![0u8; count * RECORD_LEN];
        fill_records(start, &mut buf, ascii);
        buf
    }

    /// The sequence stepped one value at a time, for checking skip-ahead.
    fn stepped(n: u32) -> u128 {
        let mut x = 0u128;
        for _ in 0..n {
            x = x.wrapping_mul(MULTIPLIER).wrapping_add(INCREMENT);
        }
        x
    }

    /// A straightforward record builder written from the spec, independent of the fast paths.
    fn reference_record(i: u128, ascii: bool) -> Vec<u8> {
        let x = |n: u128| Lcg::at(n).state();
        let top10 = |v: u128| v.to_be_bytes()[..10].to_vec();
        let mut rec = Vec::with_capacity(100);
        if ascii {
            let r = x(i + 1);
            let (mut hi, mut lo) = ((r >> 64) as u64, r as u64);
            for _ in 0..8 {
                rec.push(b' ' + (hi % 95) as u8);
                hi /= 95;
            }
            for _ in 0..2 {
                rec.push(b' ' + (lo % 95) as u8);
                lo /= 95;
            }
            rec.extend_from_slice(b"  ");
            rec.extend_from_slice(format!("{i:032X}").as_bytes());
            rec.extend_from_slice(b"  ");
            let lo = r as u64;
            for shift in (0..=48).rev().step_by(4) {
                let digit = format!("{:X}", (lo >> shift) & 0xF).as_bytes()[0];
                rec.extend_from_slice(&[digit; 4]);
            }
            rec.extend_from_slice(b"\r\n");
        } else {
            rec.extend(top10(x(i + 1)));
            for (k, constant) in PIECE_XOR.iter().enumerate() {
                rec.extend(top10(x(i + 2 + k as u128) ^ constant));
            }
        }
        rec
    }

    #[test]
    fn skip_ahead_matches_stepping() {
        for n in [0u32, 1, 2, 3, 7, 64, 100, 1000, 4097] {
            assert_eq!(Lcg::at(u128::from(n)).state(), stepped(n), "n = {n}");
        }
        let mut lcg = Lcg::at(12345);
        lcg.skip(678);
        assert_eq!(lcg, Lcg::at(12345 + 678));
        lcg.step();
        assert_eq!(lcg.state(), Lcg::at(12345 + 679).state());
        // The affine map composes over the full 128-bit range too.
        let big = (1u128 << 100) + 12345;
        let mut a = Lcg::at(big);
        a.skip(u128::MAX - 5);
        assert_eq!(a, Lcg::at(big.wrapping_add(u128::MAX - 5)));
    }

    #[test]
    fn records_match_the_reference_builder() {
        for ascii in [false, true] {
            for start in [0u128, 1, 7, 511, 512, 1_000_003, (1u128 << 64) + 0xABC] {
                let fast = records(start, 3, ascii);
                for j in 0..3 {
                    let i = start + j as u128;
                    assert_eq!(
                        fast[j * 100..(j + 1) * 100],
                        reference_record(i, ascii)[..],
                        "record {i} ascii={ascii}"
                    );
                }
            }
        }
    }

    #[test]
    fn test_vectors_1000_records() {
        let cases = [
            (0, true, "6c26b26a61464dd78038f9c60907c851ac043c07584b12835fe065cbca31aad2"),
            (0, false, "f524474116510d1debac6d38152e793a7e3cb71b1dd2bb45b6610e3c17698177"),
            (7, true, "c18e67d6c99d8416834809d316318b194e54f71cd45ea9752c1474728a0b6f73"),
            (7, false, "f341a49b9b99a8e8aa1404ac7cad1887223a0ef930a292a65f19e4823ae4b0f8"),
        ];
        for (start, ascii, sha) in cases {
            assert_eq!(sha256_hex(&records(start, 1000, ascii)), sha, "-b{start} ascii={ascii}");
        }
    }

    #[test]
    fn test_vectors_100000_records_via_files() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (true, "80fe641398d33c5f9875d526adcc2cc637540ced7d08b925e119cb44f3005375"),
            (false, "b448d01a3705d4908bf9170e6d5591f6bf94f9219d0faed44b3e4011eef91087"),
        ];
        for (ascii, sha) in cases {
            let path = dir.path().join(format!("recs-{ascii}"));
            generate_file(&path, 0, 100_000, ascii, 2).unwrap();
            let data = std::fs::read(&path).unwrap();
            assert_eq!(data.len(), 10_000_000);
            assert_eq!(sha256_hex(&data), sha, "ascii={ascii}");
        }
    }

    #[test]
    fn thread_counts_and_chunkings_give_identical_files() {
        let dir = tempfile::tempdir().unwrap();
        for ascii in [false, true] {
            let expected = records(5, 2_345, ascii);
            for (threads, chunk) in [(1, 10_000), (3, 10_000), (1, 100), (3, 100), (4, 7)] {
                let path = dir.path().join(format!("t{threads}-{chunk}-{ascii}"));
                generate_file_chunked(&path, 5, 2_345, ascii, threads, chunk).unwrap();
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    expected,
                    "threads={threads} chunk={chunk} ascii={ascii}"
                );
            }
        }
    }

    #[test]
    fn start_gives_the_tail_of_a_longer_run() {
        for ascii in [false, true] {
            let whole = records(0, 3_000, ascii);
            for start in [1usize, 9, 10, 511, 513, 1_234, 2_999] {
                assert_eq!(
                    records(start as u128, 3_000 - start, ascii),
                    whole[start * 100..],
                    "start={start} ascii={ascii}"
                );
            }
        }
    }

    #[test]
    fn partial_trailing_bytes_are_untouched_and_zero_counts_work() {
        let mut buf = vec![0xEEu8; 250];
        fill_records(3, &mut buf, false);
        assert_eq!(buf[..200], records(3, 2, false)[..]);
        assert!(buf[200..].iter().all(|&b| b == 0xEE));
        let mut empty = [0u8; 99];
        fill_records(0, &mut empty, true);
        assert!(empty.iter().all(|&b| b == 0));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, b"old contents").unwrap();
        generate_file(&path, 0, 0, false, 3).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn ranges_that_no_file_can_hold_are_refused() {
        assert_eq!(file_len(0, 0), Ok(0));
        assert_eq!(file_len(u128::MAX, 1), Ok(100));
        assert_eq!(file_len(u128::MAX, 0), Ok(0));
        assert_eq!(file_len(5, i64::MAX as u64 / 100), Ok(i64::MAX as u64 / 100 * 100));
        assert_eq!(
            file_len(0, i64::MAX as u64 / 100 + 1),
            Err(RangeError::TooLarge { count: i64::MAX as u64 / 100 + 1 })
        );
        assert!(matches!(file_len(u128::MAX, 2), Err(RangeError::PastLastRecord { .. })));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"old").unwrap();
        let err = generate_file(&path, 0, 100_000_000_000_000_000, false, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("more than a file can hold"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file");
    }

    #[test]
    fn fifos_are_written_in_place_in_order() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        generate_file_chunked(&fifo, 3, 2_345, true, 4, 100).unwrap();
        assert!(reader.join().unwrap() == records(3, 2_345, true));
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }

    #[test]
    fn hex_digits() {
        assert_eq!(&hex16(0x0123_4567_89AB_CDEF), b"0123456789ABCDEF");
        assert_eq!(&hex16(u64::MAX), b"FFFFFFFFFFFFFFFF");
        assert_eq!(&hex16(0), b"0000000000000000");
    }
}
