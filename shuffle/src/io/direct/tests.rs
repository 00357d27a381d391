use std::path::Path;

use super::*;

/// Deterministic bytes: byte `i` of the test files.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// Whether the filesystem of `dir` takes `O_DIRECT` (tmpfs does since Linux 6.6).
fn takes_direct(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join("probe");
    let ok = OpenOptions::new().write(true).create(true).custom_flags(libc::O_DIRECT).open(&probe).is_ok();
    let _ = std::fs::remove_file(probe);
    ok && !direct_forced_off()
}

#[test]
fn aligned_buffers_are_aligned_zeroed_and_rounded() {
    for len in [0, 1, 4095, 4096, 4097, 3 << 20] {
        let mut b = AlignedBuf::new(len);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        assert_eq!(b.len() % ALIGN, 0);
        assert!(b.len() >= len.max(1) && b.len() < len.max(1) + ALIGN);
        assert!(b.iter().all(|&x| x == 0));
        b[len.saturating_sub(1)] = 7;
        assert_eq!(b[len.saturating_sub(1)], 7);
    }
    assert_eq!((align_down(8191), align_up(8191), align_up(8192), align_up(0)), (4096, 8192, 8192, 0));
}

/// Writes `data` into a [`DirectFile`] in `cuts`-delimited pieces, in the order `order`
/// gives, from two threads; returns whether the file was direct.
fn write_pieces(
    path: &Path,
    data: &[u8],
    cuts: &[usize],
    order: &[usize],
    buffers: usize,
    capacity: usize,
) -> bool {
    let file = DirectFile::create(path, buffers, capacity).unwrap();
    let pieces: Vec<(usize, usize)> = cuts.windows(2).map(|w| (w[0], w[1])).collect();
    std::thread::scope(|s| {
        for half in order.chunks(order.len().div_ceil(2).max(1)) {
            let (file, pieces) = (&file, &pieces);
            s.spawn(move || {
                for &p in half {
                    let (mut at, end) = pieces[p];
                    while at < end {
                        let mut b = file.buffer().unwrap();
                        b.reset(at as u64);
                        let n = b.extend(&data[at..end]);
                        assert_eq!(b.data(), &data[at..at + n]);
                        assert!(n > 0 && (b.spare() == 0 || at + n == end));
                        file.write_at(at as u64, b).unwrap();
                        at += n;
                    }
                }
            });
        }
    });
    let direct = file.is_direct();
    assert_eq!(file.finish(true).unwrap(), data.len() as u64);
    direct
}

/// Unaligned pieces written out of order by two threads, with a pool smaller than the writes
/// in flight and buffers smaller than the pieces: the file holds exactly the bytes, its length
/// not a multiple of the block (the padded tail truncated).
#[test]
fn unaligned_out_of_order_writes_give_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    if !uring_available() {
        eprintln!("io_uring unavailable here: skipping");
        return;
    }
    for (len, step) in
        [(1, 1), (4095, 1000), (4096, 4096), (100_003, 7_777), (1 << 20, 100_000), (3 * ALIGN + 5, 3)]
    {
        let data = pattern(len);
        let mut cuts: Vec<usize> = (0..len).step_by(step).collect();
        cuts.push(len);
        let n = cuts.len() - 1;
        // Every other piece first, then the rest backwards.
        let order: Vec<usize> = (0..n).step_by(2).chain((1..n).step_by(2).rev()).collect();
        let path = dir.path().join(format!("f{len}"));
        let direct = write_pieces(&path, &data, &cuts, &order, 2, 10_000);
        assert_eq!(direct, takes_direct(dir.path()));
        assert!(std::fs::read(&path).unwrap() == data, "len {len}");
    }
}

/// On tmpfs (which refuses O_DIRECT before Linux 6.6) the same writes and reads work, and
/// say whether they were direct (the forced fallback is tested end to end in
/// `tests/tests/sort.rs`, with `SPILLWAY_NO_ODIRECT=1`).
#[test]
fn tmpfs_writes_and_reads_the_same_bytes() {
    let shm = Path::new("/dev/shm");
    if !uring_available() || !shm.is_dir() {
        eprintln!("no io_uring or no /dev/shm: skipping");
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let data = pattern(50_001);
    let path = dir.path().join("f");
    let cuts = [0, 17, 9000, 50_001];
    let direct = write_pieces(&path, &data, &cuts, &[2, 0, 1], 3, 8192);
    assert_eq!(direct, takes_direct(dir.path()));
    assert!(std::fs::read(&path).unwrap() == data);
    let (file, direct) = open_read(&path).unwrap();
    assert_eq!(direct, takes_direct(dir.path()));
    let mut out = [0u8; 10];
    read_exact_at(&file, &path, 49_991, &mut out).unwrap();
    assert_eq!(out, data[49_991..]);
}

#[test]
fn write_errors_name_the_file_and_poison_it() {
    if !uring_available() {
        return;
    }
    let file = DirectFile::create(Path::new("/dev/full"), 2, 1 << 16).unwrap();
    let mut err = None;
    for i in 0..16u64 {
        let result = file.buffer().and_then(|mut b| {
            b.reset(i << 16);
            b.extend(&[1u8; 1 << 16]);
            file.write_at(i << 16, b)
        });
        if let Err(e) = result {
            err = Some(e);
            break;
        }
    }
    let err = match err {
        Some(e) => e,
        None => file.finish(false).unwrap_err(),
    };
    assert!(err.is_disk_full(), "{err}");
    assert!(err.to_string().contains("/dev/full"), "{err}");
}

/// Streams over ranges of a file, in windows carried over at every record size, equal the
/// file's bytes; two streams share one ring.
#[test]
fn streams_read_ranges_with_records_carried_over() {
    if !uring_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(300_007);
    let path = dir.path().join("f");
    std::fs::write(&path, &data).unwrap();
    let (file, direct) = open_read(&path).unwrap();
    assert_eq!(direct, takes_direct(dir.path()));
    for record in [1usize, 7, 100, 4096, 5000] {
        let ring = ReadRing::new(2, 8192, record).unwrap();
        for (start, end) in [(0, data.len()), (record, data.len() - 3), (12_345, 12_346), (4096, 4096 * 20)] {
            let (start, end) = (start.min(end), end);
            let ranges = [(start, end), (end / 2, end)];
            let mut streams: Vec<DirectStream<'_>> = ranges
                .iter()
                .enumerate()
                .map(|(i, &(s, e))| DirectStream::new(&ring, i, &file, &path, s as u64, e as u64).unwrap())
                .collect();
            let mut got = vec![Vec::new(); 2];
            // Interleaved: each window consumed in whole records, the rest kept.
            let mut live = [true, true];
            while live.iter().any(|&l| l) {
                for i in 0..2 {
                    if !live[i] {
                        continue;
                    }
                    let w = streams[i].window();
                    let whole = w.len() / record * record;
                    got[i].extend_from_slice(&w[..whole]);
                    let keep = w.len() - whole;
                    if !streams[i].advance(keep).unwrap() {
                        got[i].extend_from_slice(streams[i].window());
                        live[i] = false;
                    }
                }
            }
            for (i, &(s, e)) in ranges.iter().enumerate() {
                assert!(got[i] == data[s..e], "record {record}, range {s}..{e}");
            }
        }
    }
}

/// A stream whose range reaches past the file's end says where the file ends.
#[test]
fn a_short_file_is_an_error_naming_it() {
    if !uring_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short");
    std::fs::write(&path, pattern(10_000)).unwrap();
    let (file, _) = open_read(&path).unwrap();
    let ring = ReadRing::new(1, 4096, 100).unwrap();
    let mut stream = DirectStream::new(&ring, 0, &file, &path, 0, 20_000).unwrap();
    let err = loop {
        match stream.advance(0) {
            Ok(true) => {}
            Ok(false) => panic!("the stream ended without an error"),
            Err(e) => break e,
        }
    };
    assert!(err.to_string().contains("short") && err.to_string().contains("10000"), "{err}");
}
