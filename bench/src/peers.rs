//! The systems the benchmarks compare Spillway with ("peers"), and finding or building them.
//!
//! * MR-MPI (`libmrmpi-dev`): a C++ word count and record sort (`bench/peers/*.cpp`, embedded
//!   here) built with `mpicxx` into `<this executable's directory>/bench-peers/` on first use
//!   (rebuilt when the source changes), run under [`runner::mpirun`](crate::runner::mpirun).
//! * Polars and DuckDB (PyPI): `bench/peers/{polars,duckdb}_peer.py`, run by the Python of the
//!   venv `bench/.venv` (or `$SPILLWAY_BENCH_PYTHON`), two threads each.
//! * GNU sort and the coreutils pipeline need nothing but `sh`.
//!
//! `scripts/install-peers.sh` installs the missing ones. A peer that cannot be found is a
//! [`Missing`] note, and the benchmark skips it.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Why a peer is skipped, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub String);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (scripts/install-peers.sh installs it)", self.0)
    }
}

const MRMPI_WORDCOUNT: &str = include_str!("../peers/mrmpi_wordcount.cpp");
const MRMPI_SORT: &str = include_str!("../peers/mrmpi_sort.cpp");
const POLARS: &str = include_str!("../peers/polars_peer.py");
const DUCKDB: &str = include_str!("../peers/duckdb_peer.py");

/// Where peers are built and their scripts written: `bench-peers/` beside this executable.
pub fn peers_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the current executable")?;
    let dir = exe.parent().map_or_else(|| PathBuf::from("bench-peers"), |d| d.join("bench-peers"));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Writes `text` to `path` unless it already holds exactly that.
fn write_if_changed(path: &Path, text: &str) -> Result<bool> {
    if fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(false);
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

/// The MR-MPI programs of the benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MrMpi {
    /// `mrmpi_wordcount OUTDIR SPILLDIR MEMSIZE_MB INPUT...`
    WordCount,
    /// `mrmpi_sort OUTDIR SPILLDIR MEMSIZE_MB INPUT...`
    Sort,
}

/// The MR-MPI program `which`, built with `mpicxx` if it is missing or its source changed.
pub fn mrmpi(which: MrMpi) -> Result<PathBuf, Missing> {
    let (name, source) = match which {
        MrMpi::WordCount => ("mrmpi_wordcount", MRMPI_WORDCOUNT),
        MrMpi::Sort => ("mrmpi_sort", MRMPI_SORT),
    };
    if !Path::new("/usr/include/mrmpi/mapreduce.h").exists() {
        return Err(Missing(
            "MR-MPI not installed: no /usr/include/mrmpi/mapreduce.h (Debian libmrmpi-dev)".into(),
        ));
    }
    if which_program("mpirun").is_none() {
        return Err(Missing("MR-MPI needs mpirun (Debian openmpi-bin)".into()));
    }
    let build = || -> Result<PathBuf> {
        let dir = peers_dir()?;
        let src = dir.join(format!("{name}.cpp"));
        let bin = dir.join(name);
        if write_if_changed(&src, source)? || !bin.exists() {
            let out = Command::new("mpicxx")
                .args(["-O2", "-std=c++17", "-o"])
                .arg(&bin)
                .arg(&src)
                .arg("-lMapReduceMPI")
                .stdin(Stdio::null())
                .output()
                .context("running mpicxx (Debian libopenmpi-dev)")?;
            if !out.status.success() {
                let _ = fs::remove_file(&bin);
                bail!("mpicxx failed on {}: {}", src.display(), String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        Ok(bin)
    };
    build().map_err(|e| Missing(format!("MR-MPI {name} could not be built: {e:#}")))
}

/// The Python peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Python {
    /// Polars (`polars_peer.py`).
    Polars,
    /// DuckDB (`duckdb_peer.py`).
    DuckDb,
}

impl Python {
    fn module(self) -> &'static str {
        match self {
            Python::Polars => "polars",
            Python::DuckDb => "duckdb",
        }
    }
}

/// The Python that has the peers: `$SPILLWAY_BENCH_PYTHON`, else the venv `bench/.venv` that
/// `scripts/install-peers.sh` makes.
pub fn python_interpreter() -> PathBuf {
    std::env::var_os("SPILLWAY_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// The interpreter and script of a Python peer, with its version, or why it is missing.
pub fn python(which: Python) -> Result<(PathBuf, PathBuf, String), Missing> {
    let python = python_interpreter();
    let module = which.module();
    let probe = Command::new(&python)
        .args(["-c", &format!("import {module}; print({module}.__version__)")])
        .stdin(Stdio::null())
        .output();
    let version = match probe {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(_) => return Err(Missing(format!("{module} is not installed for {}", python.display()))),
        Err(_) => return Err(Missing(format!("no Python at {}", python.display()))),
    };
    let script = (|| -> Result<PathBuf> {
        let path = peers_dir()?.join(format!("{module}_peer.py"));
        write_if_changed(&path, if which == Python::Polars { POLARS } else { DUCKDB })?;
        Ok(path)
    })()
    .map_err(|e| Missing(format!("{e:#}")))?;
    Ok((python, script, version))
}

/// The path of `name` on `$PATH`, if any.
pub fn which_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// The version line of a program (`sort --version`), or "".
pub fn version_line(program: &str) -> String {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peers are found or explained, never an error: the tests do not need them installed.
    #[test]
    fn peers_are_found_or_skipped_with_a_note() {
        for which in [Python::Polars, Python::DuckDb] {
            match python(which) {
                Ok((python, script, version)) => {
                    assert!(script.is_file(), "{}", script.display());
                    eprintln!("{} {version} via {}", which.module(), python.display());
                }
                Err(note) => eprintln!("skipped: {note}"),
            }
        }
        match mrmpi(MrMpi::WordCount) {
            Ok(bin) => assert!(bin.is_file()),
            Err(note) => {
                assert!(note.to_string().contains("install-peers.sh"));
                eprintln!("skipped: {note}");
            }
        }
    }
}
