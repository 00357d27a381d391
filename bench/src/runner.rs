//! Running child processes and measuring them (wall time, CPU time, peak RSS).
//!
//! [`run_measured`] spawns the command and reaps it with `wait4(2)`, which
//! returns the child's resource usage together with its exit status.
//!
//! # What `ru_maxrss` means here (Linux)
//!
//! The kernel fills the `wait4` rusage of a reaped child with the equivalent
//! of `RUSAGE_BOTH` for that child: its own usage *plus* the usage of all of
//! *its* descendants that it (transitively) waited for. For the two kinds of
//! field this means:
//!
//! * `ru_utime` / `ru_stime` are **sums** over the child and its waited-for
//!   descendants — for `sh -c 'a | b | c'` that is the CPU time of the whole
//!   pipeline;
//! * `ru_maxrss` is a **maximum**, not a sum: the largest peak RSS of any single
//!   process in that tree (the kernel keeps `max(own hiwater, cmaxrss)`).
//!   For a pipeline such as `tr -cs A-Za-z '\n' | LC_ALL=C sort | uniq -c`
//!   it is therefore the peak of its largest member (here `sort`), and it
//!   *under*-estimates the memory of the whole pipeline when several members
//!   are large at the same time. Members that `sh` did not wait for
//!   (daemonized/orphaned grandchildren) are not counted.
//!
//! This was checked on this machine (Linux 6.x, dash as `/bin/sh`) by the
//! test `shell_rusage_is_max_of_descendants`: `sh -c 'dd bs=64M ...; dd
//! bs=32M ...; true'` reports ~64 MiB (not ~96 MiB, and not sh's ~1 MiB),
//! and the same holds when the two `dd`s run concurrently in a pipeline.
//!
//! One more caveat: `ru_maxrss` also covers the child *before* it called
//! `exec`. A child created with `fork` starts with (a copy-on-write view of)
//! the parent's RSS, which then counts as its peak. Rust's
//! `std::process::Command` uses `posix_spawn`/`vfork`-style spawning where it
//! can, and the benchmark runner keeps its own RSS small, so this does not
//! distort the numbers here.

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Resource usage of one measured child process (tree).
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    /// Wall-clock time from just before spawning to just after reaping.
    pub wall: Duration,
    /// Peak resident set size in KiB (`ru_maxrss`; see the module docs for
    /// what it covers when the child has children of its own).
    pub max_rss_kib: u64,
    /// User CPU time of the child and its waited-for descendants.
    pub user: Duration,
    /// System CPU time of the child and its waited-for descendants.
    pub sys: Duration,
    /// Exit status of the child.
    pub status: ExitStatus,
}

impl Measurement {
    /// User + system CPU time.
    pub fn cpu(&self) -> Duration {
        self.user + self.sys
    }

    /// Peak RSS in MiB.
    pub fn max_rss_mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}

/// Spawns `cmd`, waits for it with `wait4(2)` and returns its wall time,
/// CPU times, peak RSS and exit status.
///
/// A non-zero exit status is *not* an error; check
/// [`Measurement::status`]. The child is reaped here, so the
/// `std::process::Child` handle is dropped without being waited on.
pub fn run_measured(cmd: &mut Command) -> Result<Measurement> {
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("spawning {:?}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a plain C struct of integers and timevals for which
    // the all-zero bit pattern is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid, exclusively borrowed
        // out-pointers for the duration of the call; `pid` is our own
        // un-reaped child (std does not reap it behind our back because we
        // never call `wait`/`try_wait` on `child`).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if r == -1 && err.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(err).with_context(|| format!("wait4 on pid {pid}"));
    }
    let wall = start.elapsed();
    drop(child); // closes any piped stdio handles; does not wait
    Ok(Measurement {
        wall,
        max_rss_kib: usage.ru_maxrss.max(0) as u64,
        user: timeval(usage.ru_utime),
        sys: timeval(usage.ru_stime),
        status: ExitStatus::from_raw(status),
    })
}

/// A `sh -c SCRIPT NAME ARGS...` command: inside the script the extra
/// arguments are `"$1"`, `"$2"`, ... / `"$@"`, so file names never need
/// shell quoting.
pub fn shell_command<I, S>(script: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg("sh").args(args);
    cmd
}

/// Runs a shell pipeline via `sh -c` (see [`shell_command`]) and measures it
/// with [`run_measured`]. Peak RSS is that of the largest single process of
/// the pipeline; CPU times are summed over it (see the module docs).
pub fn run_shell_measured<I, S>(script: &str, args: I) -> Result<Measurement>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_measured(&mut shell_command(script, args))
}

/// Median of a non-empty list of durations (upper median for even lengths).
pub fn median(values: &[Duration]) -> Duration {
    let mut v = values.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

/// The 1-minute load average from /proc/loadavg ("?" if unavailable): the numbers mean
/// something only on an otherwise idle machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// The date and time now (UTC), from `date`.
pub fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `mpirun` set up for one small host: consent to run as root, oversubscription (more ranks
/// than cores), no binding (a rank bound to one core starves its threads), shared memory only.
pub fn mpirun() -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("OMPI_MCA_hwloc_base_binding_policy", "none")
        .env("OMPI_MCA_btl", "self,vader");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_and_wall_time() {
        let ok = run_shell_measured("sleep 0.05", [] as [&str; 0]).unwrap();
        assert!(ok.status.success());
        assert!(ok.wall >= Duration::from_millis(50));
        assert!(ok.max_rss_kib > 0);
        let fail = run_shell_measured("exit \"$1\"", ["3"]).unwrap();
        assert_eq!(fail.status.code(), Some(3));
        assert!(run_measured(&mut Command::new("/nonexistent/program")).is_err());
    }

    #[test]
    fn shell_rusage_is_max_of_descendants() {
        let dd = |mib: u32| format!("dd if=/dev/zero of=/dev/null bs={mib}M count=1 2>/dev/null");
        // Sequential: max, not sum; the trailing `true` keeps sh from
        // exec-ing the last command itself.
        let seq = run_shell_measured(&format!("{}; {}; true", dd(64), dd(32)), [] as [&str; 0]).unwrap();
        assert!(seq.status.success());
        let mib = seq.max_rss_mib();
        eprintln!("sequential dd 64M; dd 32M: {mib:.1} MiB, cpu {:?}", seq.cpu());
        assert!((64.0..90.0).contains(&mib), "sequential: {mib} MiB");
        // Concurrent pipeline: still the max of its members, not the sum.
        let pipe = run_shell_measured(
            "dd if=/dev/zero bs=64M count=1 2>/dev/null | sleep 0.3 & \
             dd if=/dev/zero of=/dev/null bs=48M count=1 2>/dev/null; wait",
            [] as [&str; 0],
        )
        .unwrap();
        assert!(pipe.status.success());
        let mib = pipe.max_rss_mib();
        eprintln!("concurrent dd 64M | sleep & dd 48M: {mib:.1} MiB");
        assert!((64.0..100.0).contains(&mib), "concurrent: {mib} MiB");
    }
}
