//! With the `mpi` feature: a config whose jobs run on the caller's MPI communicator.

use std::mem::ManuallyDrop;
use std::sync::Arc;

use mpi::ffi::MPI_Comm;
use mpi::raw::FromRaw;
use mpi::topology::SimpleCommunicator;
use spillway_engine::cluster::MpiCluster;

use super::*;

/// Makes the jobs run with `config` run on the ranks of `comm` (an intra-communicator:
/// `MPI_COMM_WORLD`, or one from `MPI_Comm_split` or `MPI_Comm_dup`), instead of in this
/// process alone. Collective: every rank of `comm` calls it, and then `spillway_run` with the
/// same job, inputs and output (a file output is written by rank 0 of `comm`, a directory's
/// part files by every rank: the output must be on a filesystem they share).
///
/// The caller owns MPI: it calls `MPI_Init_thread` with `MPI_THREAD_MULTIPLE` before this
/// (the engine's worker threads and its split server use MPI at once; a lower level, as
/// `MPI_Query_thread` tells, fails with `SPILLWAY_STATUS_CONFIG`), and `MPI_Finalize` after
/// `spillway_config_free`. Spillway never initializes or finalizes MPI. The config keeps its
/// own duplicate of `comm` (`MPI_Comm_dup`, freed by `spillway_config_free` or by the next
/// call of this function), so its messages never mix with the caller's, who may free `comm`
/// and go on using MPI meanwhile. Configs on disjoint communicators (the halves of a split)
/// run jobs at the same time; one config runs one job at a time. If a job fails on one rank,
/// the others may wait for it: end the program (`MPI_Abort`) on a failure.
///
/// Declared only when `mpi.h` is included before `spillway.h` (`MPI_Comm` is the MPI
/// library's own type: a pointer in OpenMPI, an `int` in MPICH, so the declaration needs
/// `mpi.h`), and defined only in a library built with the `mpi` feature (`cargo build
/// --release -p spillway-capi --features mpi`), against the MPI library the program uses. A
/// Fortran program passes `MPI_Comm_f2c` of its handle through a small C shim.
///
/// # Safety
///
/// `config` is NULL or a live config not in use by another thread; `comm` is a live
/// communicator handle or `MPI_COMM_NULL`.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_config_set_comm(
    config: *mut SpillwayConfig,
    comm: MPI_Comm,
) -> SpillwayStatus {
    entry(|| {
        // SAFETY: the caller's contract: NULL or a live config used by this thread only.
        let config = unsafe { config.as_mut() }.ok_or_else(|| Failure::null("config"))?;
        if !mpi::environment::is_initialized() || mpi::environment::is_finalized() {
            return Err(Failure::new(
                SpillwayStatus::Config,
                "MPI is not initialized (or already finalized): call MPI_Init_thread with \
                 MPI_THREAD_MULTIPLE first",
            ));
        }
        // SAFETY: `RSMPI_COMM_NULL` is a constant the MPI shim of `mpi-sys` defines.
        if comm == unsafe { mpi::ffi::RSMPI_COMM_NULL } {
            return Err(Failure::new(SpillwayStatus::InvalidArgument, "comm is MPI_COMM_NULL"));
        }
        let mut inter = 0;
        // SAFETY: `comm` is a live communicator (the caller's contract) and `inter` is valid
        // for a write; MPI is initialized (checked above).
        unsafe { mpi::ffi::MPI_Comm_test_inter(comm, &mut inter) };
        if inter != 0 {
            return Err(Failure::new(
                SpillwayStatus::InvalidArgument,
                "comm is an inter-communicator; spillway needs an intra-communicator",
            ));
        }
        // SAFETY: reading the constants the MPI shim of `mpi-sys` defines.
        let (world, own) = unsafe { (mpi::ffi::RSMPI_COMM_WORLD, mpi::ffi::RSMPI_COMM_SELF) };
        let cluster = if comm == world {
            MpiCluster::world()
        } else if comm == own {
            MpiCluster::new(&SimpleCommunicator::self_comm())
        } else {
            // SAFETY: `comm` is a live intra-communicator other than the world and self (the
            // caller's contract, checked as far as MPI can), as `from_raw` requires. The
            // wrapper only borrows it, for this call: `ManuallyDrop` never frees it, and
            // `MpiCluster::new` only duplicates it.
            let borrowed = ManuallyDrop::new(unsafe { SimpleCommunicator::from_raw(comm) });
            MpiCluster::new(&*borrowed)
        };
        let cluster = cluster.map_err(|e| Failure::new(SpillwayStatus::Config, e.to_string()))?;
        config.builder = std::mem::take(&mut config.builder).cluster(Arc::new(cluster));
        Ok(())
    })
}
