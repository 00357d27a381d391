//! The out-of-core sort, buffered against `O_DIRECT` (`sort-bench --direct-vs-buffered`):
//! `spillway sort --io std` and `--io direct` on the same input with the same `--memory`,
//! alternating for several rounds, each after `sync; echo 1 > /proc/sys/vm/drop_caches`
//! (when allowed: root), reporting wall, user and system time, and the page cache's growth
//! (`Cached` in `/proc/meminfo`): at its peak during the run (sampled every 50 ms) and at the
//! end; beside the disk's own direct bandwidth (`dd` with `oflag=direct` / `iflag=direct`) in
//! the same run. A *bystander* file (1 GiB, standing for the node's other cached files) is
//! read into the cache before each run; how much of it is still cached after the run
//! (`fincore`) shows what the sort evicted. Every output is checked sorted with the input's
//! checksum.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::runner::{self, Measurement};
use crate::{format_size, size_label};

/// The settings of one comparison.
#[derive(Debug)]
pub struct DirectBench {
    /// The spillway binary.
    pub spillway: PathBuf,
    /// The input records.
    pub input: PathBuf,
    /// Where spills and outputs go (one filesystem: the one measured with `dd`).
    pub data: PathBuf,
    /// `--memory` of every run.
    pub memory: u64,
    pub threads: usize,
    /// Rounds; each runs both modes (alternating which goes first).
    pub rounds: usize,
    /// The input's valsort checksum, which every output must have.
    pub checksum: String,
}

/// One measured sort.
#[derive(Debug)]
struct RunResult {
    io: &'static str,
    m: Measurement,
    peak_growth_kib: i64,
    end_growth_kib: i64,
    /// Bytes of the bystander file still cached after the run (None: no `fincore`).
    bystander_left: Option<u64>,
    spills: u64,
    backend: String,
}

/// `Cached` of `/proc/meminfo`, in KiB.
fn cached_kib() -> Result<u64> {
    let info = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    info.lines()
        .find_map(|l| l.strip_prefix("Cached:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no Cached line in /proc/meminfo")
}

/// Bytes of `file` in the page cache (`fincore`), or None without it.
fn cached_bytes(file: &Path) -> Option<u64> {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(file)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Reads `file` whole (into the page cache).
fn read_through(file: &Path) -> Result<()> {
    use std::io::Read as _;
    let mut f = fs::File::open(file)?;
    let mut buf = vec![0u8; 4 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

/// `sync; echo 1 > /proc/sys/vm/drop_caches`; false where not allowed.
fn drop_caches() -> bool {
    let _ = Command::new("sync").status();
    fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}

/// `dd` of 4 GiB (or `bytes`) with `oflag=direct`, then read back with `iflag=direct`: MB/s.
fn dd_bandwidth(dir: &Path, bytes: u64) -> Result<(f64, f64)> {
    let file = dir.join("dd-direct.tmp");
    let count = (bytes / (4 << 20)).max(1);
    let run = |args: &[String]| -> Result<f64> {
        let t = std::time::Instant::now();
        let out = Command::new("dd").args(args).output().context("running dd")?;
        if !out.status.success() {
            bail!("dd {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok((count * (4 << 20)) as f64 / t.elapsed().as_secs_f64() / 1e6)
    };
    let of = format!("of={}", file.display());
    let iff = format!("if={}", file.display());
    let write =
        run(&["if=/dev/zero".into(), of, "bs=4M".into(), format!("count={count}"), "oflag=direct".into()]);
    let read = write
        .as_ref()
        .ok()
        .map(|_| run(&[iff, "of=/dev/null".into(), "bs=4M".into(), "iflag=direct".into()]));
    let _ = fs::remove_file(&file);
    Ok((write?, read.expect("read after a successful write")?))
}

/// Runs the comparison, prints the table and writes it to `results/sort-direct.md`.
///
/// # Errors
///
/// A run fails, an output is wrong, or the results cannot be written.
pub fn run(b: &DirectBench, results: &Path) -> Result<()> {
    let spill = b.data.join("spill-direct");
    fs::create_dir_all(&spill)?;
    let out = b.data.join("out-direct-bench.dat");
    let metrics = b.data.join("metrics-direct-bench.json");
    let input_bytes = fs::metadata(&b.input)?.len();
    let mut notes = Vec::new();
    let load_before = runner::load_average();
    let (dd_write, dd_read) = dd_bandwidth(&b.data, 4 << 30)?;
    println!("dd direct: write {dd_write:.0} MB/s, read {dd_read:.0} MB/s");
    // The bystander: 1 GiB of the input's bytes, another file.
    let bystander = b.data.join("bystander.tmp");
    {
        let mut from = fs::File::open(&b.input)?;
        let mut to = fs::File::create(&bystander)?;
        std::io::copy(&mut std::io::Read::take(&mut from, 1 << 30), &mut to)?;
    }
    let bystander_len = fs::metadata(&bystander)?.len();
    let mut runs: Vec<RunResult> = Vec::new();
    let mut dropped = true;
    for round in 0..b.rounds {
        let order: [&'static str; 2] = if round % 2 == 0 { ["std", "direct"] } else { ["direct", "std"] };
        for io in order {
            let _ = fs::remove_file(&out);
            dropped &= drop_caches();
            read_through(&bystander)?;
            let before = cached_kib()?;
            // The page cache's peak during the run, sampled.
            let stop = Arc::new(AtomicBool::new(false));
            let peak = Arc::new(AtomicU64::new(before));
            let sampler = {
                let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(c) = cached_kib() {
                            peak.fetch_max(c, Ordering::Relaxed);
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })
            };
            let mut cmd = Command::new(&b.spillway);
            cmd.args(["sort", "--quiet", "--no-sync", "--threads", &b.threads.to_string()])
                .args(["--memory", &size_label(b.memory), "--io", io, "--spill-dir"])
                .arg(&spill)
                .arg("--metrics")
                .arg(&metrics)
                .arg("--out")
                .arg(&out)
                .arg(&b.input);
            let m = runner::run_measured(&mut cmd);
            stop.store(true, Ordering::Relaxed);
            let _ = sampler.join();
            let m = m?;
            let after = cached_kib()?;
            let bystander_left = cached_bytes(&bystander);
            if !m.status.success() {
                bail!("spillway sort --io {io} failed: {}", m.status);
            }
            let json = fs::read_to_string(&metrics).context("reading the sort's metrics")?;
            let value: serde_json::Value = serde_json::from_str(&json)?;
            let spills = value["spills"].as_u64().unwrap_or(0);
            let backend = value["io_backend"].as_str().unwrap_or("?").to_owned();
            let valsort = Command::new(&b.spillway).arg("valsort").arg(&out).output()?;
            let report = String::from_utf8_lossy(&valsort.stderr);
            if !valsort.status.success() || !report.contains(&b.checksum) {
                bail!("--io {io}: the output is not the sorted input: {report}");
            }
            let r = RunResult {
                io,
                m,
                peak_growth_kib: peak.load(Ordering::Relaxed) as i64 - before as i64,
                end_growth_kib: after as i64 - before as i64,
                bystander_left,
                spills,
                backend,
            };
            let left = |r: &RunResult| match r.bystander_left {
                Some(b) => format!("{:.0}%", 100.0 * b as f64 / bystander_len as f64),
                None => "?".to_owned(),
            };
            println!(
                "  round {}: --io {:<6} {:>7.2} s wall, {:>6.2} s user, {:>6.2} s sys, Cached +{} peak, +{} at the end, bystander {} cached ({} runs, {})",
                round + 1,
                io,
                r.m.wall.as_secs_f64(),
                r.m.user.as_secs_f64(),
                r.m.sys.as_secs_f64(),
                format_size(r.peak_growth_kib.max(0) as u64 * 1024),
                format_size(r.end_growth_kib.max(0) as u64 * 1024),
                left(&r),
                r.spills,
                r.backend
            );
            std::io::stdout().flush()?;
            runs.push(r);
        }
    }
    let _ = fs::remove_file(&out);
    let _ = fs::remove_file(&metrics);
    let _ = fs::remove_file(&bystander);
    let _ = fs::remove_dir(&spill);
    if !dropped {
        notes.push(
            "the page cache could not be dropped before the runs (not root): growth is relative".to_owned(),
        );
    }
    let load_after = runner::load_average();

    let mut md = String::new();
    md.push_str(&format!(
        "# Out-of-core sort: buffered against O_DIRECT\n\n{} input (`{}`), `spillway sort -t {} --memory {}`, {} rounds alternating; {}; load average {load_before} before, {load_after} after.\n\n",
        format_size(input_bytes),
        b.input.display(),
        b.threads,
        size_label(b.memory),
        b.rounds,
        runner::date(),
    ));
    md.push_str(&format!("Disk's own direct bandwidth (`dd bs=4M`, 4 GiB, same filesystem): write {dd_write:.0} MB/s, read {dd_read:.0} MB/s.\n\n"));
    md.push_str("| `--io` | round | wall s | user s | sys s | Cached growth, peak | Cached growth, end | 1 GiB bystander still cached | runs |\n|---|---|---|---|---|---|---|---|---|\n");
    for (i, r) in runs.iter().enumerate() {
        let left = match r.bystander_left {
            Some(b) => format!("{:.0}%", 100.0 * b as f64 / bystander_len as f64),
            None => "? (no fincore)".to_owned(),
        };
        md.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {left} | {} |\n",
            r.io,
            i / 2 + 1,
            r.m.wall.as_secs_f64(),
            r.m.user.as_secs_f64(),
            r.m.sys.as_secs_f64(),
            format_size(r.peak_growth_kib.max(0) as u64 * 1024),
            format_size(r.end_growth_kib.max(0) as u64 * 1024),
            r.spills
        ));
    }
    md.push_str("\n| `--io` | median wall s | median user s | median sys s |\n|---|---|---|---|\n");
    for io in ["std", "direct"] {
        let of: Vec<&RunResult> = runs.iter().filter(|r| r.io == io).collect();
        let med =
            |f: fn(&Measurement) -> Duration| runner::median(&of.iter().map(|r| f(&r.m)).collect::<Vec<_>>());
        md.push_str(&format!(
            "| {io} | {:.2} | {:.2} | {:.2} |\n",
            med(|m| m.wall).as_secs_f64(),
            med(|m| m.user).as_secs_f64(),
            med(|m| m.sys).as_secs_f64()
        ));
    }
    for n in &notes {
        md.push_str(&format!("\nNote: {n}\n"));
    }
    println!("\n{md}");
    fs::create_dir_all(results)?;
    let label =
        if input_bytes >= 1 << 30 { format!("{}G", input_bytes >> 30) } else { size_label(input_bytes) };
    let path = results.join(format!("sort-direct-{label}.md"));
    fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    println!("written to {}", path.display());
    Ok(())
}
