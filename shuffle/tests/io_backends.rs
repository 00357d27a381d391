//! The write backends (std and io_uring) produce identical files and report errors alike.
//!
//! The throughput comparison is ignored by default; run it in release mode with
//! `cargo test --release -p spillway-shuffle --test io_backends -- --ignored --nocapture`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use proptest::prelude::*;
use spillway_shuffle::io::WRITE_BUFFER;
use spillway_shuffle::{IoBackend, ReadMode, RunReader, RunWriter};

const BACKENDS: [IoBackend; 2] = [IoBackend::Std, IoBackend::Uring];

/// Whether this kernel lets the process use io_uring (independently of the crate's probe).
fn kernel_has_uring() -> bool {
    io_uring::IoUring::new(8).is_ok()
}

/// Deterministic pseudo-random bytes (xorshift), cheap to make in megabytes.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `chunks` through `backend`, checking `position` after each; returns the file bytes.
fn write_chunks(backend: IoBackend, path: &Path, chunks: &[Vec<u8>], sync: bool) -> Vec<u8> {
    let mut sink = backend.create(path).unwrap();
    let mut total = 0u64;
    for chunk in chunks {
        sink.write_all(chunk).unwrap();
        total += chunk.len() as u64;
        assert_eq!(sink.position(), total);
    }
    assert_eq!(sink.finish(sync).unwrap(), total);
    std::fs::read(path).unwrap()
}

fn chunk_strategy() -> impl Strategy<Value = Vec<(usize, u64)>> {
    let size = prop_oneof![
        4 => 0usize..64,
        2 => 0usize..WRITE_BUFFER + 17,
        1 => Just(WRITE_BUFFER),
        1 => 0usize..3 * WRITE_BUFFER,
    ];
    prop::collection::vec((size, any::<u64>()), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any chunk sequence comes out as its concatenation, with either backend.
    #[test]
    fn chunks_are_concatenated(spec in chunk_strategy(), sync in any::<bool>()) {
        let chunks: Vec<Vec<u8>> = spec.iter().map(|&(len, seed)| bytes(len, seed)).collect();
        let expected = chunks.concat();
        let dir = tempfile::tempdir().unwrap();
        for backend in BACKENDS {
            let got = write_chunks(backend, &dir.path().join(backend.name()), &chunks, sync);
            prop_assert!(got == expected, "{} wrote {} bytes, expected {}", backend.name(), got.len(), expected.len());
        }
    }
}

#[test]
fn many_tiny_writes() {
    let data = bytes(5 * WRITE_BUFFER + 333, 42);
    let mut sizes = (0..16usize).cycle();
    let mut chunks = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        let n = sizes.next().unwrap().min(rest.len());
        chunks.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    let dir = tempfile::tempdir().unwrap();
    for backend in BACKENDS {
        assert!(write_chunks(backend, &dir.path().join(backend.name()), &chunks, false) == data);
    }
}

#[test]
fn one_huge_write() {
    // More than all of the io_uring sink's buffers: one call has to wait for its own writes.
    let data = bytes(9 * WRITE_BUFFER + 5, 7);
    let dir = tempfile::tempdir().unwrap();
    for backend in BACKENDS {
        let chunks = [b"head".to_vec(), data.clone(), b"tail".to_vec()];
        let got = write_chunks(backend, &dir.path().join(backend.name()), &chunks, true);
        assert!(got == chunks.concat(), "{}", backend.name());
    }
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    for backend in BACKENDS {
        let path = dir.path().join(backend.name());
        std::fs::write(&path, b"old contents are truncated").unwrap();
        assert!(write_chunks(backend, &path, &[], true).is_empty());
    }
}

#[test]
fn runs_are_byte_identical_across_backends() {
    let dir = tempfile::tempdir().unwrap();
    let mut records: common::Records = (0..200_000u64)
        .map(|i| {
            ((i % 7) as u32, format!("key{:08}", i.wrapping_mul(2_654_435_761) % 1_000_003).into_bytes(), i)
        })
        .collect();
    records.sort();
    let mut files = Vec::new();
    for backend in BACKENDS {
        let path = dir.path().join(format!("{}.run", backend.name()));
        let mut w = RunWriter::<u64>::create(&path, 7, backend).unwrap().with_block_target(4096);
        for (p, k, v) in &records {
            w.push(*p, k, v).unwrap();
        }
        let info = w.finish(true).unwrap();
        assert_eq!(info.total_records(), records.len() as u64);
        assert_eq!(info.bytes, std::fs::metadata(&path).unwrap().len());
        assert!(info.bytes > 3 * WRITE_BUFFER as u64, "the run spans several buffers");
        assert_eq!(common::read_all(&path), records);
        let run = RunReader::<u64>::open(&path, ReadMode::Pread).unwrap();
        assert_eq!(run.total_records(), records.len() as u64);
        files.push(std::fs::read(&path).unwrap());
    }
    assert!(files[0] == files[1], "std and uring runs differ");
}

#[test]
fn drop_without_finish() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(3 * WRITE_BUFFER + 100, 3);
    for backend in BACKENDS {
        // Several writes in flight when the sink is dropped.
        let mut sink = backend.create(&dir.path().join(backend.name())).unwrap();
        sink.write_all(&data).unwrap();
        sink.write_all(&data).unwrap();
        drop(sink);
        // An unfinished run writer removes its temporary file.
        let path = dir.path().join(format!("{}.run", backend.name()));
        let mut w = RunWriter::<u64>::create(&path, 1, backend).unwrap().with_block_target(1 << 16);
        for i in 0..200_000u64 {
            w.push(0, &i.to_be_bytes(), &i).unwrap();
        }
        drop(w);
        assert!(!path.exists());
    }
    let left: Vec<PathBuf> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn resolve_reports_uring_when_available() {
    assert_eq!(IoBackend::Std.resolve(), IoBackend::Std);
    // Auto is the backend that measured faster for page-cache writes: std.
    assert_eq!(IoBackend::Auto.resolve(), IoBackend::Std);
    if std::env::var_os("SPILLWAY_NO_URING").is_some_and(|v| !v.is_empty() && v != "0") {
        assert_eq!(IoBackend::Uring.resolve(), IoBackend::Std);
        assert_eq!(IoBackend::Auto.resolve(), IoBackend::Std);
    } else if kernel_has_uring() {
        assert_eq!(IoBackend::Uring.resolve(), IoBackend::Uring);
    } else {
        eprintln!("io_uring refused by this kernel: expecting the std fallback");
        assert_eq!(IoBackend::Uring.resolve(), IoBackend::Std);
    }
}

/// Runs in a child process (the probe is cached per process) with `SPILLWAY_NO_URING=1`.
#[test]
fn no_uring_env_forces_std() {
    if std::env::var_os("SPILLWAY_NO_URING").is_some() {
        // The child: `resolve_reports_uring_when_available` checks the fallback; writing still works.
        assert_eq!(IoBackend::Uring.resolve(), IoBackend::Std);
        let dir = tempfile::tempdir().unwrap();
        let data = bytes(2 * WRITE_BUFFER + 1, 9);
        assert!(
            write_chunks(IoBackend::Uring, &dir.path().join("f"), std::slice::from_ref(&data), false) == data
        );
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "--test-threads=1",
            "no_uring_env_forces_std",
            "resolve_reports_uring_when_available",
        ])
        .env("SPILLWAY_NO_URING", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 passed"), "{stdout}");
}

/// Writes through `backend` until an error; returns it.
fn write_until_error(backend: IoBackend, path: &Path, total: usize) -> spillway_shuffle::Error {
    let mut sink = match backend.create(path) {
        Ok(sink) => sink,
        Err(e) => return e,
    };
    let chunk = bytes(WRITE_BUFFER / 2 + 3, 5);
    let mut written = 0;
    while written < total {
        if let Err(e) = sink.write_all(&chunk) {
            return e;
        }
        written += chunk.len();
    }
    sink.finish(false).expect_err("the device is full")
}

#[test]
fn dev_full_reports_disk_full() {
    for backend in BACKENDS {
        let err = write_until_error(backend, Path::new("/dev/full"), 8 * WRITE_BUFFER);
        assert!(err.is_disk_full(), "{}: {err}", backend.name());
        assert!(err.to_string().contains("/dev/full"), "{err}");
        // Small writes stay buffered: the error comes from finish.
        let mut sink = backend.create(Path::new("/dev/full")).unwrap();
        sink.write_all(b"x").unwrap();
        let err = sink.finish(false).unwrap_err();
        assert!(err.is_disk_full(), "{}: {err}", backend.name());
    }
}

/// Unmounts the tmpfs when the test ends, even on failure.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A real filesystem running out of space: short writes then `ENOSPC` (needs root to mount;
/// skipped otherwise).
#[test]
fn full_tmpfs_reports_disk_full() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1500k", "tmpfs"])
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping full_tmpfs_reports_disk_full: cannot mount a tmpfs (not root?)");
        return;
    }
    let _mount = Mount(dir.path().to_owned());
    for backend in BACKENDS {
        let path = dir.path().join(backend.name());
        let err = write_until_error(backend, &path, 4 * WRITE_BUFFER);
        assert!(err.is_disk_full(), "{}: {err}", backend.name());
        assert!(err.to_string().contains(backend.name()), "{err}");
        // What reached the disk is what was written, at the right offsets. The size (not a
        // multiple of the buffer) makes one write short: io_uring resubmits the remainder,
        // which fails with ENOSPC. Writes in flight together may fail in any order, so the
        // io_uring file may have holes (zeros) where a write failed.
        let got = std::fs::read(&path).unwrap();
        let chunk = bytes(WRITE_BUFFER / 2 + 3, 5);
        let expected = chunk.iter().copied().cycle();
        let bad =
            got.iter().zip(expected).position(|(&g, e)| g != e && (backend == IoBackend::Std || g != 0));
        assert_eq!(bad, None, "{}: {} bytes on disk", backend.name(), got.len());
        assert!(got.len() < 4 * WRITE_BUFFER);
        std::fs::remove_file(&path).unwrap();
    }
}

/// CPU seconds (user + system) used so far by this process, io_uring workers included.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointed-to, properly sized buffer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: getrusage succeeded, so the struct is initialized (and it was zeroed anyway).
    let usage = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Throughput of 2 GiB written in 1 MiB pushes to a file under the target directory (page
/// cache), with the CPU time it cost. Noisy on a busy machine: compare several rounds.
#[test]
#[ignore = "throughput measurement; run with --release --ignored --nocapture"]
fn throughput_std_vs_uring_2gib() {
    const TOTAL: usize = 2 << 30;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let chunk = bytes(WRITE_BUFFER, 1);
    let mut results: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..5 {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for b in order {
            let backend = BACKENDS[b];
            let path = dir.path().join(backend.name());
            let (start, cpu) = (Instant::now(), cpu_seconds());
            let mut sink = backend.create(&path).unwrap();
            for _ in 0..TOTAL / chunk.len() {
                sink.write_all(&chunk).unwrap();
            }
            assert_eq!(sink.finish(false).unwrap(), TOTAL as u64);
            let (secs, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu);
            let mbps = TOTAL as f64 / 1e6 / secs;
            println!(
                "round {round} {:>5} (resolved {:>5}): {mbps:>5.0} MB/s, {secs:.2} s wall, {cpu:.2} s CPU",
                backend.name(),
                backend.resolve().name(),
            );
            results[b].push((mbps, cpu));
            std::fs::remove_file(&path).unwrap();
        }
    }
    for (backend, mut runs) in BACKENDS.into_iter().zip(results) {
        runs.sort_by(|x, y| x.0.total_cmp(&y.0));
        let (median, best) = (runs[runs.len() / 2], runs[runs.len() - 1]);
        println!(
            "{:>5}: median {:.0} MB/s ({:.2} s CPU), best {:.0} MB/s",
            backend.name(),
            median.0,
            median.1,
            best.0
        );
    }
}
