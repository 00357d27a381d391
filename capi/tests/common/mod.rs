//! Compiling and running programs against the C ABI, and the reference outputs.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The crate's directory.
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled sample corpus.
pub fn gutenberg() -> PathBuf {
    crate_dir().join("../testdata/gutenberg")
}

/// The directory holding `libspillway_capi.so` as built for this test run: `target/<profile>/
/// deps/`, where this test binary is too (`cargo test` builds the library's every crate type
/// there before the integration tests, and copies it up to `target/<profile>/` only on
/// `cargo build`).
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("target/<profile>/deps/<test>");
    assert!(
        deps.join("libspillway_capi.so").exists(),
        "no libspillway_capi.so beside the test binary in {}",
        deps.display()
    );
    deps.to_path_buf()
}

/// A compiler the tests use.
#[derive(Debug, Clone, Copy)]
pub enum Compiler {
    Gcc,
    Gxx,
    Gfortran,
    /// OpenMPI's C compiler wrapper (feature `mpi`'s tests).
    Mpicc,
}

impl Compiler {
    fn command(self) -> &'static str {
        match self {
            Compiler::Gcc => "gcc",
            Compiler::Gxx => "g++",
            Compiler::Gfortran => "gfortran",
            Compiler::Mpicc => "mpicc",
        }
    }

    /// Fails the test, saying what to install, when the compiler is not on `PATH`.
    pub fn require(self) {
        let found = Command::new(self.command()).arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{} is missing: these tests compile real programs with it. Install it with \
             scripts/install-deps.sh (as root), or `apt-get install {}`",
            self.command(),
            match self {
                Compiler::Gcc => "gcc",
                Compiler::Gxx => "g++",
                Compiler::Gfortran => "gfortran",
                Compiler::Mpicc => "libopenmpi-dev",
            }
        );
    }

    /// Compiles `sources` (relative to the crate) against the header and the shared library
    /// into `dir/name`; fails the test with the compiler's output on an error.
    pub fn build(self, sources: &[&str], dir: &Path, name: &str) -> PathBuf {
        self.require();
        let lib = lib_dir();
        let exe = dir.join(name);
        let mut cmd = Command::new(self.command());
        match self {
            Compiler::Gcc => cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"]),
            // Not `-pedantic`: mpi.h is not.
            Compiler::Mpicc => cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror"]),
            Compiler::Gxx => cmd.args(["-std=c++17", "-Wall", "-Wextra", "-Werror"]),
            // `-J`: the module files go beside the program, not into the working directory.
            Compiler::Gfortran => {
                cmd.args([
                    "-std=f2008",
                    "-Wall",
                    "-Werror",
                    "-Wno-c-binding-type",
                    "-Wno-unused-dummy-argument",
                ]);
                cmd.arg("-J").arg(dir)
            }
        };
        cmd.arg("-I").arg(crate_dir().join("include"));
        for source in sources {
            cmd.arg(crate_dir().join(source));
        }
        cmd.arg("-L").arg(&lib).arg("-lspillway_capi");
        cmd.arg(format!("-Wl,-rpath,{}", lib.display()));
        cmd.arg("-o").arg(&exe);
        let out = cmd.output().expect("running the compiler");
        assert!(
            out.status.success(),
            "{:?} failed:\n{}{}",
            cmd,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        exe
    }
}

/// Runs `exe` with `args`: its exit code, standard output and standard error. The library
/// is loaded from [`lib_dir`] (cargo's `LD_LIBRARY_PATH`, which would win over the rpath,
/// also names `target/<profile>/`, where an older copy may lie).
pub fn run<'a>(exe: &Path, args: impl IntoIterator<Item = &'a OsStr>) -> (i32, String, String) {
    let out =
        Command::new(exe).args(args).env("LD_LIBRARY_PATH", lib_dir()).output().expect("running the program");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `spillway wordcount testdata/gutenberg -o FILE` writes: the engine's `WordCount`
/// (the CLI's default Unicode words; the corpus is ASCII, so ASCII letters give the same).
pub fn engine_wordcount(dir: &Path) -> Vec<u8> {
    use spillway_engine::{Engine, Inputs, OutputSpec, jobs::WordCount, text::WordMode};
    let out = dir.join("reference.tsv");
    let engine = Engine::builder().threads(2).partitions(4).memory_budget(64 << 20).build().unwrap();
    let inputs = Inputs::new([gutenberg()]).unwrap();
    engine.run(&WordCount { mode: WordMode::Unicode }, &inputs, &OutputSpec::File(out.clone())).unwrap();
    std::fs::read(out).unwrap()
}

/// The corpus' text files, as the engine names them when given the directory.
pub fn gutenberg_files() -> Vec<PathBuf> {
    let inputs = spillway_engine::Inputs::new([gutenberg()]).unwrap();
    inputs.files().iter().map(|f| f.path.clone()).collect()
}

/// What `spillway index testdata/gutenberg -o FILE` writes: the engine's `InvertedIndex`.
pub fn engine_index(dir: &Path) -> Vec<u8> {
    use spillway_engine::{Engine, Inputs, OutputSpec, jobs::InvertedIndex, text::WordMode};
    let out = dir.join("reference-index.tsv");
    let engine = Engine::builder().threads(2).partitions(4).memory_budget(64 << 20).build().unwrap();
    let inputs = Inputs::new([gutenberg()]).unwrap();
    let job = InvertedIndex::new(&inputs, WordMode::Unicode);
    engine.run(&job, &inputs, &OutputSpec::File(out.clone())).unwrap();
    std::fs::read(out).unwrap()
}
