//! How ranks cooperate: the [`Cluster`] seam between the engine and its communication layer.
//!
//! [`Local`] is one process: splits come from an atomic cursor and nothing is exchanged. With
//! the `mpi` feature, `MpiCluster` runs the same engine code across ranks: rank 0 hands out
//! splits on request, partition sections move to their owner rank after the map phase, and
//! rank 0 gathers every rank's metrics.

#[cfg(feature = "mpi")]
mod mpi;

#[cfg(feature = "mpi")]
pub use self::mpi::MpiCluster;

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::error::Result;
use crate::metrics::Progress;

/// One partition section leaving this rank: the raw bytes of one partition of one local run.
#[derive(Debug, Clone, Copy)]
pub struct OutSection<'a> {
    /// Index of the local run it comes from.
    pub run: u32,
    /// The partition.
    pub partition: u32,
    /// Records in the section.
    pub records: u64,
    /// Blocks in the section.
    pub blocks: u32,
    /// The section's bytes, straight from the run's mapping.
    pub bytes: &'a [u8],
}

/// What arrived: one section from `source`'s run `run`.
#[derive(Debug, Clone, Copy)]
pub struct InSection<'a> {
    /// The sending rank.
    pub source: usize,
    /// The sender's run index.
    pub run: u32,
    /// The partition.
    pub partition: u32,
    /// Records in the section.
    pub records: u64,
    /// Blocks in the section.
    pub blocks: u32,
    /// The bytes (valid during the callback only).
    pub bytes: &'a [u8],
}

impl<'a> InSection<'a> {
    /// A section that stays on its rank (`source`): delivered without messages.
    pub fn local(source: usize, s: &OutSection<'a>) -> Self {
        InSection {
            source,
            run: s.run,
            partition: s.partition,
            records: s.records,
            blocks: s.blocks,
            bytes: s.bytes,
        }
    }
}

/// Byte counts and times of an exchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExchangeStats {
    /// Bytes sent to other ranks.
    pub sent: u64,
    /// Bytes received from other ranks.
    pub received: u64,
    /// Where the time went.
    pub times: ExchangeTimes,
}

/// Wall-clock seconds of the parts of the exchange on one rank (they add up to
/// [`PhaseTimes::exchange`](crate::PhaseTimes::exchange), except `write`, which overlaps `transfer`), and what moved.
///
/// The honest transfer rate of a rank is `bytes_received / transfer` (see
/// [`ExchangeTimes::transfer_rate`]): waiting for the slowest rank to finish its map phase,
/// finding the sections, exchanging descriptors and copying the rank's own sections are
/// not transfer time.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(default)]
pub struct ExchangeTimes {
    /// Waiting for every rank to reach the exchange (a rank that finished its map phase early
    /// waits here for the slowest one).
    pub wait: f64,
    /// Finding the sections of the local runs.
    pub prepare: f64,
    /// Exchanging section descriptors (all-to-all).
    pub descriptors: f64,
    /// Copying this rank's own sections into its new runs.
    pub local: f64,
    /// Moving section bytes between ranks: from the first message posted until every byte
    /// sent has left and every byte received has arrived, without the time the receiving
    /// side stalled because no receive buffer was free (received bytes still being written).
    pub transfer: f64,
    /// Writing received sections into runs (overlaps `transfer` when double-buffered).
    pub write: f64,
    /// Closing the last received run and removing the local runs whose sections left.
    pub finish: f64,
    /// Wall time of the whole data phase (transfer, writes and their overlap), from the first
    /// message posted until the last received run is complete.
    pub data: f64,
    /// Messages sent (a section larger than one chunk takes several).
    pub messages: u64,
    /// Largest message size in bytes that this rank used (the chunk size).
    pub chunk_bytes: u64,
}

impl ExchangeTimes {
    /// Bytes received per second of transfer (0 when nothing moved).
    pub fn transfer_rate(&self, bytes_received: u64) -> f64 {
        if self.transfer > 0.0 { bytes_received as f64 / self.transfer } else { 0.0 }
    }

    pub(crate) fn max(&mut self, o: &ExchangeTimes) {
        self.wait = self.wait.max(o.wait);
        self.prepare = self.prepare.max(o.prepare);
        self.descriptors = self.descriptors.max(o.descriptors);
        self.local = self.local.max(o.local);
        self.transfer = self.transfer.max(o.transfer);
        self.write = self.write.max(o.write);
        self.data = self.data.max(o.data);
        self.finish = self.finish.max(o.finish);
        self.messages += o.messages;
        self.chunk_bytes = self.chunk_bytes.max(o.chunk_bytes);
    }
}

/// Hands out split indices `0..n`, each exactly once across all ranks.
pub trait SplitSource: Send + Sync {
    /// The next split for this thread, or `None` when all are handed out.
    fn next(&self) -> Option<usize>;
    /// Runs on its own thread during the map phase, serving other ranks if this rank hands
    /// out splits; returns when no rank needs it any more. The default does nothing.
    fn serve(&self) {}
    /// Called once after this rank's workers are done with the map phase.
    ///
    /// # Errors
    ///
    /// A communication failure.
    fn finish(&self) -> Result<()>;
}

/// The communication layer under the engine.
pub trait Cluster: Send + Sync + std::fmt::Debug {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Checks, collectively, that every rank computed the same `config` digest and partitioner
    /// `fingerprint`; fails on every rank when one differs.
    ///
    /// # Errors
    ///
    /// [`Error::Cluster`](crate::Error::Cluster) naming what differs.
    fn agree(&self, config: u64, fingerprint: u64) -> Result<()>;
    /// Starts handing out `splits` split indices (`sizes[i]` bytes each); rank 0's progress
    /// counts the splits handed to any rank.
    fn split_source<'a>(&'a self, sizes: &'a [u64], progress: &'a Progress) -> Box<dyn SplitSource + 'a>;
    /// Sends each section to `owner(partition)` and passes every section this rank owns
    /// (its own included) to `deliver`, grouped by (source, run), partitions ascending.
    ///
    /// # Errors
    ///
    /// A communication failure, or `deliver`'s error.
    fn exchange(
        &self,
        outgoing: &[OutSection<'_>],
        owner: &dyn Fn(u32) -> usize,
        deliver: &mut dyn FnMut(InSection<'_>) -> Result<()>,
    ) -> Result<ExchangeStats>;
    /// Gathers `bytes` from every rank to rank 0 (in rank order); `None` on other ranks.
    ///
    /// # Errors
    ///
    /// A communication failure.
    fn gather(&self, bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>>;
}

/// One process, no communication.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

struct LocalSource<'a> {
    next: AtomicUsize,
    count: usize,
    _progress: &'a Progress,
}

impl SplitSource for LocalSource<'_> {
    fn next(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.count).then_some(i)
    }

    fn finish(&self) -> Result<()> {
        Ok(())
    }
}

impl Cluster for Local {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn agree(&self, _config: u64, _fingerprint: u64) -> Result<()> {
        Ok(())
    }

    fn split_source<'a>(&'a self, sizes: &'a [u64], progress: &'a Progress) -> Box<dyn SplitSource + 'a> {
        Box::new(LocalSource { next: AtomicUsize::new(0), count: sizes.len(), _progress: progress })
    }

    fn exchange(
        &self,
        outgoing: &[OutSection<'_>],
        _owner: &dyn Fn(u32) -> usize,
        deliver: &mut dyn FnMut(InSection<'_>) -> Result<()>,
    ) -> Result<ExchangeStats> {
        for s in outgoing {
            deliver(InSection::local(0, s))?;
        }
        Ok(ExchangeStats::default())
    }

    fn gather(&self, bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        Ok(Some(vec![bytes.to_vec()]))
    }
}
