//! How ranks cooperate: the [`Cluster`] seam between the engine and its communication layer.
//!
//! [`Local`] is one process: splits come from an atomic cursor and nothing is exchanged. With
//! the `mpi` feature, `MpiCluster` runs the same engine code across ranks: rank 0 hands out
//! splits on request, partition sections move to their owner rank after the map phase, and
//! rank 0 gathers every rank's metrics.

// The engine's one module with unsafe code: `Send`/`Sync` for an MPI communicator handle.
#[cfg(feature = "mpi")]
#[allow(unsafe_code)]
mod comm;
#[cfg(feature = "mpi")]
mod mpi;
mod splits;
#[cfg(any(feature = "mpi", test))]
mod stream;

#[cfg(feature = "mpi")]
pub use self::mpi::MpiCluster;
pub use self::splits::{
    BATCH_ENV, Backoff, FixedSplits, Known, SERVED, ServerCounts, SplitList, batch, batch_cap, decode_reply,
    encode_reply,
};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::error::Result;
pub use crate::metrics::ExchangeTimes;
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

/// What arrived: one section from `source`'s run `run`, or one piece of it.
///
/// A section that a receive buffer's end cuts (sections travel back to back, one stream per
/// source) arrives in pieces, in order: `offset` is where
/// `bytes` starts within the section and `section_len` the whole section's length (a whole
/// section has `offset == 0` and `bytes.len() == section_len`).
#[derive(Debug, Clone, Copy)]
pub struct InSection<'a> {
    /// The sending rank.
    pub source: usize,
    /// The sender's run index.
    pub run: u32,
    /// The partition.
    pub partition: u32,
    /// Records in the whole section.
    pub records: u64,
    /// Blocks in the whole section.
    pub blocks: u32,
    /// Where `bytes` starts within the section.
    pub offset: u64,
    /// Length of the whole section.
    pub section_len: u64,
    /// The bytes (valid during the callback only).
    pub bytes: &'a [u8],
}

impl<'a> InSection<'a> {
    /// A whole section that stays on its rank (`source`): delivered without messages.
    pub fn local(source: usize, s: &OutSection<'a>) -> Self {
        InSection {
            source,
            run: s.run,
            partition: s.partition,
            records: s.records,
            blocks: s.blocks,
            offset: 0,
            section_len: s.bytes.len() as u64,
            bytes: s.bytes,
        }
    }

    /// Whether this is the whole section (not one piece of it).
    pub fn is_whole(&self) -> bool {
        self.offset == 0 && self.bytes.len() as u64 == self.section_len
    }

    /// Whether this is the last piece of its section (true for a whole section).
    pub fn is_last(&self) -> bool {
        self.offset + self.bytes.len() as u64 == self.section_len
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

/// Hands out the indices of a [`SplitList`], each exactly once across all ranks.
pub trait SplitSource: Send + Sync {
    /// The next split for this thread, or `None` when all are handed out (or the source was
    /// aborted). With a list that grows, waits (without spinning) until a split is known or
    /// the list is complete.
    fn next(&self) -> Option<usize>;
    /// Ends the waits of [`SplitSource::next`] on this rank (the job fails or stops).
    fn abort(&self) {}
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

/// What the ranks of a job compare before any work starts ([`Cluster::agree`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// Digests of the settings that change the output, each with what it covers (at most
    /// [`Agreement::MAX_SETTINGS`]); a difference is reported by name.
    pub settings: Vec<(&'static str, u64)>,
    /// The partitioner's fingerprint: with equal settings, a difference means another build or
    /// other CPU features route keys differently.
    pub fingerprint: u64,
    /// A value of this rank's choosing; every rank gets rank 0's back.
    pub token: u64,
}

impl Agreement {
    /// The most settings an agreement compares (ranks exchange a fixed-size record).
    pub const MAX_SETTINGS: usize = 8;

    /// The fixed-size record ranks exchange: the settings' digests (zero-padded), the
    /// fingerprint and the token.
    pub fn record(&self) -> [u64; Self::MAX_SETTINGS + 2] {
        assert!(self.settings.len() <= Self::MAX_SETTINGS, "too many settings to agree on");
        let mut record = [0u64; Self::MAX_SETTINGS + 2];
        for (slot, (_, digest)) in record.iter_mut().zip(&self.settings) {
            *slot = *digest;
        }
        record[Self::MAX_SETTINGS] = self.fingerprint;
        record[Self::MAX_SETTINGS + 1] = self.token;
        record
    }

    /// Compares this rank's agreement with every rank's record (`all`, in rank order) and
    /// returns rank 0's token.
    ///
    /// # Errors
    ///
    /// [`Error::Cluster`](crate::Error::Cluster): the first rank whose settings differ, naming
    /// the setting; or, with equal settings, a rank whose partitioner routes keys differently.
    pub fn check(&self, rank: usize, all: &[[u64; Self::MAX_SETTINGS + 2]]) -> Result<u64> {
        let mine = self.record();
        for (r, theirs) in all.iter().enumerate() {
            if let Some((name, _)) =
                self.settings.iter().zip(theirs.iter()).find(|((_, d), t)| d != *t).map(|(s, _)| s)
            {
                return Err(crate::Error::Cluster(format!(
                    "rank {r} runs the job with different settings than rank {rank}: {name} differ \
                     (every rank must be started with the same command line and see the same inputs)"
                )));
            }
        }
        let at = Self::MAX_SETTINGS;
        if let Some((r, theirs)) = all.iter().enumerate().find(|(_, t)| t[at] != mine[at]) {
            return Err(crate::Error::Cluster(format!(
                "rank {r} routes keys differently (partitioner fingerprint {:016x}, rank {rank} has {:016x}): \
                 all ranks must run the same spillway build on CPUs with the same features",
                theirs[at], mine[at]
            )));
        }
        Ok(all.first().map_or(self.token, |first| first[at + 1]))
    }
}

/// The communication layer under the engine.
pub trait Cluster: Send + Sync + std::fmt::Debug {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Checks, collectively, that every rank computed the same settings and partitioner
    /// fingerprint; fails on every rank when one differs. Returns rank 0's
    /// [`Agreement::token`], so that every rank knows one value chosen for this job (the name
    /// of the output's staging directory comes from it).
    ///
    /// # Errors
    ///
    /// [`Error::Cluster`](crate::Error::Cluster) naming what differs.
    fn agree(&self, agreement: &Agreement) -> Result<u64>;
    /// Starts handing out the indices of `splits` to this rank's `threads` workers; rank 0's
    /// progress counts the splits handed to any rank.
    fn split_source<'a>(
        &'a self,
        splits: &'a dyn SplitList,
        threads: usize,
        progress: &'a Progress,
    ) -> Box<dyn SplitSource + 'a>;
    /// Sends each section to `owner(partition)` when that is another rank, and passes every
    /// section that arrives from another rank to `deliver`, grouped by (source, run),
    /// partitions ascending; a section cut by the end of a receive buffer comes in pieces, in
    /// order. Sections this rank owns stay where they are (the caller keeps them). The
    /// receive buffers hold at most `buffer_bytes` in total.
    ///
    /// # Errors
    ///
    /// A communication failure, or `deliver`'s error (after every rank's bytes arrived).
    fn exchange(
        &self,
        outgoing: &[OutSection<'_>],
        owner: &dyn Fn(u32) -> usize,
        buffer_bytes: usize,
        deliver: &mut dyn FnMut(InSection<'_>) -> Result<()>,
    ) -> Result<ExchangeStats>;
    /// Gathers `bytes` from every rank on every rank (in rank order).
    ///
    /// # Errors
    ///
    /// A communication failure.
    fn all_gather(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![bytes.to_vec()])
    }
    /// Gathers `bytes` from every rank to rank 0 (in rank order); `None` on other ranks.
    ///
    /// # Errors
    ///
    /// A communication failure.
    fn gather(&self, bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>>;
    /// Returns once every rank has called it. A rank that failed never does: its front end
    /// ends the job (MPI_Abort), so no rank gets past a barrier that a failed rank missed.
    /// The engine calls it once rank 0 has made the output's staging directory, before the
    /// other ranks look for it.
    ///
    /// # Errors
    ///
    /// A communication failure.
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// One process, no communication.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

/// A cursor over a split list shared by one process's workers (rank 0's too): each takes the
/// next index, and waits for it when the list has not grown that far yet.
pub(crate) struct Cursor<'a> {
    pub(crate) next: AtomicUsize,
    pub(crate) splits: &'a dyn SplitList,
    pub(crate) progress: &'a Progress,
    pub(crate) aborted: AtomicBool,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(splits: &'a dyn SplitList, progress: &'a Progress) -> Self {
        Cursor { next: AtomicUsize::new(0), splits, progress, aborted: AtomicBool::new(false) }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.aborted.load(Ordering::Relaxed) || self.progress.cancelled()
    }

    /// The next index for one of this process's workers.
    pub(crate) fn take(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let mut known = self.splits.known();
        // Woken at least every tenth of a second to see a stop.
        while known.count <= i && !known.complete && !self.stopped() {
            known = self.splits.wait_beyond(i, Duration::from_millis(100));
        }
        (i < known.count && !self.stopped()).then_some(i)
    }

    /// Up to `want` indices for another rank (rank 0's workers share the cursor): `Some(empty)`
    /// when none is known yet but more may come, `None` at the end.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code, reason = "the MPI split server's"))]
    pub(crate) fn grant(&self, want: usize, threads: usize, cap: usize) -> Option<std::ops::Range<usize>> {
        loop {
            let known = self.splits.known();
            let at = self.next.load(Ordering::Relaxed);
            if at >= known.count {
                return if known.complete { None } else { Some(at..at) };
            }
            let n = batch(want, known.count - at, threads, cap);
            if self.next.compare_exchange(at, at + n, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                return Some(at..at + n);
            }
        }
    }
}

struct LocalSource<'a>(Cursor<'a>);

impl SplitSource for LocalSource<'_> {
    fn next(&self) -> Option<usize> {
        self.0.take()
    }

    fn abort(&self) {
        self.0.aborted.store(true, Ordering::Relaxed);
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

    fn agree(&self, agreement: &Agreement) -> Result<u64> {
        Ok(agreement.token)
    }

    fn split_source<'a>(
        &'a self,
        splits: &'a dyn SplitList,
        _threads: usize,
        progress: &'a Progress,
    ) -> Box<dyn SplitSource + 'a> {
        Box::new(LocalSource(Cursor::new(splits, progress)))
    }

    fn exchange(
        &self,
        _outgoing: &[OutSection<'_>],
        _owner: &dyn Fn(u32) -> usize,
        _buffer_bytes: usize,
        _deliver: &mut dyn FnMut(InSection<'_>) -> Result<()>,
    ) -> Result<ExchangeStats> {
        // One rank owns every partition: nothing moves.
        Ok(ExchangeStats::default())
    }

    fn gather(&self, bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        Ok(Some(vec![bytes.to_vec()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list that grows by one split every call of `wait_beyond`, up to `n`.
    struct Growing {
        known: std::sync::Mutex<usize>,
        n: usize,
    }

    impl SplitList for Growing {
        fn known(&self) -> Known {
            let k = *self.known.lock().unwrap();
            Known { count: k, complete: k == self.n }
        }

        fn wait_beyond(&self, _seen: usize, _timeout: Duration) -> Known {
            let mut k = self.known.lock().unwrap();
            *k = (*k + 1).min(self.n);
            Known { count: *k, complete: *k == self.n }
        }

        fn size(&self, _i: usize) -> u64 {
            1
        }
    }

    #[test]
    fn a_cursor_hands_out_a_growing_list_once_to_workers_and_grants() {
        let list = Growing { known: std::sync::Mutex::new(0), n: 500 };
        let progress = Progress::default();
        let cursor = Cursor::new(&list, &progress);
        // Nothing known yet: a grant says later, not the end.
        assert_eq!(cursor.grant(4, 8, usize::MAX), Some(0..0));
        let mut seen = Vec::new();
        while let Some(i) = cursor.take() {
            seen.push(i);
            if let Some(range) = cursor.grant(4, 8, usize::MAX) {
                assert!(range.len() <= 4);
                seen.extend(range);
            }
        }
        assert_eq!(cursor.grant(4, 8, usize::MAX), None);
        seen.sort_unstable();
        assert_eq!(seen, (0..500).collect::<Vec<_>>());
    }
}
