//! The communicator an MPI cluster runs on (feature `mpi`): the engine's own duplicate of the
//! one it was given, shared by its threads. The engine's one exception to `deny(unsafe_code)`.
//!
//! - [`Comm::duplicate`] checks that MPI is initialized (and not finalized) with
//!   `MPI_THREAD_MULTIPLE` (`MPI_Query_thread`), then `MPI_Comm_dup`s the caller's
//!   communicator: the engine's messages can never match the caller's receives, nor another
//!   engine's on the same ranks. It never initializes or finalizes MPI.
//! - Dropping it `MPI_Comm_free`s the duplicate, unless MPI was finalized meanwhile (then
//!   nothing can be freed, and the handle is forgotten).
//! - It is `Send` and `Sync`: the split server, the workers asking for splits and the
//!   exchange's sending and receiving threads all use it at once.

use mpi::Threading;
use mpi::topology::SimpleCommunicator;
use mpi::traits::Communicator;

use crate::error::{Error, Result};

/// The engine's duplicate of a communicator; usable from any thread.
pub(crate) struct Comm {
    /// `None` only while it is dropped.
    inner: Option<SimpleCommunicator>,
}

// SAFETY: a `SimpleCommunicator` is an MPI handle (in OpenMPI a pointer to the library's
// communicator object), which rsmpi does not mark `Send` or `Sync` because MPI only allows
// calls from several threads at once at thread level `MPI_THREAD_MULTIPLE`. A `Comm` exists
// only after `duplicate` checked that the process's MPI provides that level, at which every
// MPI call may be made from any thread, concurrently, on the same communicator (MPI 4.0,
// 11.6.2). The handle itself is never changed after `MPI_Comm_dup` until `drop`, which has
// `&mut self`, so no thread uses it then.
#[allow(unsafe_code)]
unsafe impl Send for Comm {}
// SAFETY: as for `Send` above: shared references only make MPI calls on the handle, which
// `MPI_THREAD_MULTIPLE` allows from any number of threads at once.
#[allow(unsafe_code)]
unsafe impl Sync for Comm {}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let comm = self.get();
        f.debug_struct("Comm").field("rank", &comm.rank()).field("size", &comm.size()).finish()
    }
}

impl Comm {
    /// Duplicates `comm` (`MPI_Comm_dup`: collective, every rank of `comm` calls it).
    ///
    /// # Errors
    ///
    /// [`Error::Cluster`] when MPI is not initialized, already finalized, or provides a thread
    /// level below `MPI_THREAD_MULTIPLE`.
    pub(crate) fn duplicate<C: Communicator>(comm: &C) -> Result<Self> {
        if !mpi::environment::is_initialized() {
            return Err(Error::Cluster(
                "MPI is not initialized: call MPI_Init_thread with MPI_THREAD_MULTIPLE before \
                 giving spillway a communicator"
                    .into(),
            ));
        }
        if mpi::environment::is_finalized() {
            return Err(Error::Cluster("MPI is already finalized".into()));
        }
        let level = mpi::environment::threading_support();
        if level < Threading::Multiple {
            return Err(Error::Cluster(format!(
                "MPI was initialized with thread level {level:?}; spillway needs MPI_THREAD_MULTIPLE \
                 (its worker threads and split server use MPI at once): initialize it with \
                 MPI_Init_thread(..., MPI_THREAD_MULTIPLE, ...)"
            )));
        }
        Ok(Comm { inner: Some(comm.duplicate()) })
    }

    /// The duplicate.
    pub(crate) fn get(&self) -> &SimpleCommunicator {
        self.inner.as_ref().expect("a Comm has its communicator until dropped")
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        if let Some(comm) = self.inner.take()
            && mpi::environment::is_finalized()
        {
            // MPI_Comm_free is erroneous after MPI_Finalize (which released it anyway).
            std::mem::forget(comm);
        }
    }
}
