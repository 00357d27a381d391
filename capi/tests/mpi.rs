//! The C ABI on the caller's MPI communicator (feature `mpi`; `scripts/test.sh` runs it in
//! its multi-rank step): `tests/c/mpi.c`, compiled with `mpicc`, initializes MPI itself, runs
//! a word count on `MPI_COMM_WORLD` and then one on each half of a split world at the same
//! time, then goes on using MPI (an `MPI_Allreduce`), under `mpirun` with 1, 2, 3 and 4 ranks
//! (oversubscribed). Every output is byte-identical to `spillway wordcount`'s. A thread level
//! below `MPI_THREAD_MULTIPLE` and `MPI_COMM_NULL` are refused with a message.

#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Compiler, engine_wordcount, gutenberg, lib_dir};

/// `mpirun -n np exe args...`, allowed as root and oversubscribed, loading the library as
/// built for this test run.
fn mpirun(np: usize, exe: &Path, args: &[&Path]) -> Output {
    Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("OMPI_MCA_hwloc_base_binding_policy", "none")
        .env("OMPI_MCA_btl", "self,vader")
        .env("LD_LIBRARY_PATH", lib_dir())
        .arg("-n")
        .arg(np.to_string())
        .arg(exe)
        .args(args)
        .output()
        .expect("mpirun not found: run scripts/install-deps.sh (installs OpenMPI) first")
}

#[test]
fn a_c_mpi_program_runs_jobs_on_the_world_and_on_both_halves_of_a_split() {
    let dir = tempfile::tempdir().unwrap();
    let exe = Compiler::Mpicc.build(&["tests/c/mpi.c"], dir.path(), "mpi");
    let expected = engine_wordcount(dir.path());
    for np in 1..=4 {
        let out = dir.path().join(format!("out-{np}"));
        std::fs::create_dir(&out).unwrap();
        let run = mpirun(np, &exe, &[&out, &gutenberg()]);
        let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
        assert!(run.status.success(), "{np} ranks failed: {stdout}{stderr}");
        assert!(stdout.contains(&format!("{np} ranks agree: ")), "{np} ranks: {stdout}{stderr}");
        let halves = if np == 1 { 1 } else { 2 };
        let mut outputs = vec!["world.tsv".to_string()];
        outputs.extend((0..halves).map(|h| format!("half-{h}.tsv")));
        for name in &outputs {
            let got = std::fs::read(out.join(name)).unwrap_or_default();
            assert!(
                got == expected,
                "{np} ranks: {name} differs from spillway wordcount ({} vs {} bytes)",
                got.len(),
                expected.len()
            );
        }
        // Nothing else: no half-1 at one rank, no staging or spill directories left.
        let mut names: Vec<String> =
            std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        outputs.sort();
        assert_eq!(names, outputs, "{np} ranks");
        eprintln!("{np} ranks: {}", stdout.trim());
    }
}

#[test]
fn a_thread_level_below_multiple_and_a_null_communicator_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let exe = Compiler::Mpicc.build(&["tests/c/mpi.c"], dir.path(), "mpi");
    let run = mpirun(1, &exe, &[Path::new("--funneled")]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    // SPILLWAY_STATUS_CONFIG (4), SPILLWAY_STATUS_INVALID_ARGUMENT (3).
    assert!(
        stdout.contains("funneled: status 4: ") && stdout.contains("needs MPI_THREAD_MULTIPLE"),
        "{stdout}"
    );
    assert!(stdout.contains("null comm: status 3: comm is MPI_COMM_NULL"), "{stdout}");
}
