//! Spillway's C ABI: MapReduce jobs whose map, combine and reduce are C functions.
//!
//! The header `include/spillway.h` is generated from this crate by cbindgen and checked in
//! (`tests/header.rs` fails when it is out of date; `SPILLWAY_BLESS=1 cargo test -p
//! spillway-capi --test header` rewrites it). The library builds as `libspillway_capi.so`
//! and `libspillway_capi.a`.
//!
//! - [`spillway_config_new`] and its setters hold the engine's settings (threads, partitions,
//!   memory budget, open-run bound, spill directory, attempts, resume).
//! - [`spillway_job_new`] makes a job from a map, an optional combine and a reduce callback
//!   and a `void *user` pointer; values are opaque byte strings.
//! - With the `mpi` feature, `spillway_config_set_comm` runs the config's jobs on the ranks of
//!   the caller's MPI communicator (a duplicate of it).
//! - [`spillway_run`] runs a job over input paths into a directory of part files or one
//!   file, and can return the job's metrics as JSON.
//!
//! Every function returns a [`SpillwayStatus`]; on failure [`spillway_last_error`] gives the
//! message (per thread). No Rust panic crosses the boundary: each entry point catches them,
//! and a callback that fails (returns non-zero) or a panic under it fails the job with its
//! message, after the engine's retries.
//!
//! It uses only the engine's public API.
//!
//! # Example (from Rust, as C would call it)
//!
//! ```
//! use std::ffi::{CString, c_char, c_int, c_void};
//! use spillway_capi::*;
//!
//! unsafe extern "C" fn map(_: *mut c_void, data: *const u8, len: usize, e: *mut SpillwayEmitter) -> c_int {
//!     // SAFETY: the engine passes `len` readable bytes at `data` and a live emitter.
//!     let text = unsafe { std::slice::from_raw_parts(data, len) };
//!     for word in text.split(|b| !b.is_ascii_alphabetic()).filter(|w| !w.is_empty()) {
//!         // SAFETY: `e` is the emitter of this call; the slices are valid.
//!         unsafe { spillway_emit(e, word.as_ptr(), word.len(), [1u8].as_ptr(), 1) };
//!     }
//!     0
//! }
//! unsafe extern "C" fn reduce(_: *mut c_void, key: *const u8, key_len: usize, values: *mut SpillwayValues, out: *mut SpillwayWriter) -> c_int {
//!     let (mut n, mut v, mut l) = (0u64, std::ptr::null(), 0usize);
//!     // SAFETY: `values` and `out` are this call's; the out-pointers are valid.
//!     unsafe {
//!         while spillway_values_next(values, &mut v, &mut l) == SpillwayStatus::Ok { n += 1 }
//!         spillway_write(out, key, key_len);
//!         let line = format!("\t{n}\n");
//!         spillway_write(out, line.as_ptr(), line.len());
//!     }
//!     0
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("in.txt"), "b a b\n")?;
//! let input = CString::new(dir.path().join("in.txt").to_str().unwrap())?;
//! let output = CString::new(dir.path().join("out.tsv").to_str().unwrap())?;
//! let (mut config, mut job) = (std::ptr::null_mut(), std::ptr::null_mut());
//! // SAFETY: every pointer passed is valid for the call; the handles are freed once.
//! unsafe {
//!     assert_eq!(spillway_config_new(&mut config), SpillwayStatus::Ok);
//!     assert_eq!(spillway_config_set_threads(config, 2), SpillwayStatus::Ok);
//!     assert_eq!(spillway_job_new(Some(map), None, Some(reduce), std::ptr::null_mut(), &mut job), SpillwayStatus::Ok);
//!     let inputs = [input.as_ptr()];
//!     let status = spillway_run(config, job, inputs.as_ptr(), 1, SpillwayOutput::File as c_int, output.as_ptr(), std::ptr::null_mut());
//!     assert_eq!(status, SpillwayStatus::Ok);
//!     spillway_job_free(job);
//!     spillway_config_free(config);
//! }
//! assert_eq!(std::fs::read_to_string(dir.path().join("out.tsv"))?, "a\t1\nb\t2\n");
//! # Ok(()) }
//! ```

#![deny(unsafe_code)]
#![deny(missing_docs)]

// In the header's order (cbindgen follows the modules as declared here).
mod error;

mod handles;

mod config;

#[cfg(feature = "mpi")]
mod comm;

mod job;

mod callbacks;

mod run;

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use spillway_engine::shuffle::rkyv::vec::ArchivedVec;
use spillway_engine::{
    Combiner, Emitter, Engine, EngineBuilder, Error, Inputs, Job, JobError, OutputSpec, Sink, Split,
    SplitMode, Values, panic_message,
};

pub use callbacks::*;
#[cfg(feature = "mpi")]
pub use comm::*;
pub use config::*;
pub use error::*;
use handles::*;
pub use job::*;
pub use run::*;
