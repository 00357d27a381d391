//! A resumable job (`--resume`) on a disk that fills up: a small tmpfs holds the output
//! directory and so the job directory beside it, and a ballast file leaves the job too little
//! room. The job fails with one message naming the file it could not write and "No space left
//! on device" (exit 1), its journal still reads cleanly (at most a torn last record), and once
//! the ballast is gone the same command finishes the job, with the output of a clean run.
//!
//! Mounting needs root: run as another user, the test says so and skips; run as root, a
//! refused `mount` fails it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use spillway_engine::journal;
use spillway_tests::{gutenberg_files, messy_text, read_parts, spillway_bin};

/// The tmpfs's size.
const TMPFS_BYTES: u64 = 4 << 20;

/// Room left to the job beside the ballast, in bytes: its first spill fails (nothing
/// journaled); a spill or merge fails with a few splits journaled; a merge fails with many.
/// (The job needs about 600 KiB at its peak, in the merges; where it fails varies with the
/// timing of its two threads, so the amounts stay clear of that.)
const ROOM: [u64; 3] = [16 << 10, 160 << 10, 400 << 10];

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes`; `None` (with the reason printed) when not running as root.
    ///
    /// # Panics
    ///
    /// When running as root and `mount` is refused.
    fn mount(bytes: u64) -> Option<Tmpfs> {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .expect("an effective uid in /proc/self/status");
        if euid != "0" {
            eprintln!("SKIPPED: mounting a tmpfs needs root (running as uid {euid})");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700"), "spillway-full-disk"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            output.status.success(),
            "running as root, but `mount -t tmpfs` on {} was refused ({}): {}",
            dir.path().display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(self.dir.path()).status().is_ok_and(|s| s.success());
        if !unmounted {
            // Busy (a job still running after a failed assertion): detach it now, it goes when
            // the last user does.
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

/// Fills the filesystem of `path` with a file there, then frees `room` bytes of it.
fn ballast(path: &Path, room: u64) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a_u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("writing the ballast {}: {e}", path.display()),
        }
    }
    assert!(written >= room, "the filesystem held only {written} bytes");
    file.set_len(written - room).unwrap();
}

/// `spillway wordcount --resume` writing part files into `out`, with the settings of the
/// resume tests (small budget and splits, F = 2: many runs and merges).
fn wordcount(inputs: &[PathBuf], out: &Path) -> Output {
    Command::new(spillway_bin())
        .args(["wordcount", "-q", "--memory", "256K", "--max-open-runs", "2", "-t", "2", "-r", "3"])
        .args(["--split-size", "16K", "--resume", "--out-dir"])
        .arg(out)
        .args(inputs)
        .output()
        .unwrap()
}

fn job_dir(out: &Path) -> PathBuf {
    out.with_file_name(format!(".{}.spillway-job", out.file_name().unwrap().to_string_lossy()))
}

/// The runs that `records` leave live: committed or merged into, and not merged since.
fn live_runs(records: &[journal::Record]) -> Vec<journal::RunRef> {
    let mut live: Vec<journal::RunRef> = Vec::new();
    for record in records {
        match record {
            journal::Record::Committed { runs, .. } => live.extend(runs.iter().cloned()),
            journal::Record::Merged { inputs, output } => {
                live.retain(|run| !inputs.contains(&run.name));
                live.push(output.clone());
            }
            _ => {}
        }
    }
    live
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every amount of room in [`ROOM`]: the job fails cleanly, its journal reads, and with the
/// room back `--resume` finishes it with the output of a clean run elsewhere.
#[test]
fn a_resumable_job_on_a_full_disk_fails_cleanly_and_resumes_once_there_is_room() {
    let Some(tmpfs) = Tmpfs::mount(TMPFS_BYTES) else { return };
    let work = tempfile::tempdir().unwrap();
    let mut inputs: Vec<PathBuf> = gutenberg_files().into_iter().take(2).collect();
    let messy = work.path().join("messy.txt");
    std::fs::write(&messy, messy_text(11, 400_000)).unwrap();
    inputs.push(messy);

    let clean_out = work.path().join("clean");
    let clean = wordcount(&inputs, &clean_out);
    assert!(clean.status.success(), "clean run: {}", stderr(&clean));
    let expected = read_parts(&clean_out);

    for room in ROOM {
        let out = tmpfs.path().join(format!("out-{room}"));
        let ballast_path = tmpfs.path().join("ballast");
        ballast(&ballast_path, room);
        let what = format!("with {} KiB of room", room >> 10);

        let full = wordcount(&inputs, &out);
        let text = stderr(&full);
        assert_eq!(full.status.code(), Some(1), "{what}: {text}");
        let line = text.trim();
        assert!(!line.contains('\n'), "{what}: one line: {text}");
        assert!(
            line.starts_with("spillway: error: ") && line.contains("No space left on device"),
            "{what}: {text}"
        );
        // It names the file: one under the tmpfs (a run or the journal in the job directory,
        // or a part file in the output's staging directory).
        let mount = tmpfs.path().to_str().unwrap();
        assert!(line.contains(&format!("{mount}/")), "{what}: names no file on the full disk: {text}");
        // Nothing is left on the disk but the job directory: no output, no staging directory.
        let mut left: Vec<String> = std::fs::read_dir(tmpfs.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [format!(".out-{room}.spillway-job"), "ballast".into()], "{what}");

        // The journal reads: whole, or up to a record torn by the failed write.
        let journal_path = job_dir(&out).join("journal-s1-r0"); // the first session, one rank
        let bytes = std::fs::read(&journal_path)
            .unwrap_or_else(|e| panic!("{what}: reading {}: {e}", journal_path.display()));
        let parsed = journal::parse(&bytes);
        assert!(
            parsed.stopped.as_deref().is_none_or(|s| s.starts_with("torn record")),
            "{what}: journal stopped: {:?}",
            parsed.stopped
        );
        assert!(
            matches!(parsed.records.first(), Some(journal::Record::Begin(_))),
            "{what}: the journal begins the job: {:?}",
            parsed.records.first()
        );
        // No half-written file is left beside them: a failed run write removes its own.
        let partial: Vec<_> = std::fs::read_dir(job_dir(&out))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".partial"))
            .collect();
        assert!(partial.is_empty(), "{what}: left in the job directory: {partial:?}");
        // Every run it names as live is there, whole: the failed write never reached it.
        for run in live_runs(&parsed.records) {
            let path = job_dir(&out).join(&run.name);
            let len = std::fs::metadata(&path).map(|m| m.len());
            assert_eq!(len.ok(), Some(run.bytes), "{what}: journaled run {}", path.display());
        }

        std::fs::remove_file(&ballast_path).unwrap();
        let resumed = wordcount(&inputs, &out);
        assert!(resumed.status.success(), "{what}: resume: {}", stderr(&resumed));
        assert_eq!(read_parts(&out), expected, "{what}: resumed output");
        assert!(!job_dir(&out).exists(), "{what}: the job directory goes once the output is committed");
        let success: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
        assert_eq!(success["resumed"]["runs_dropped"], 0, "{what}: every journaled run is kept: {success}");
        eprintln!("{what}: failed with {line:?}; resumed: {}", success["resumed"]);
        std::fs::remove_dir_all(&out).unwrap();
    }
}
