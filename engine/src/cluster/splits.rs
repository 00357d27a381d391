//! What the split sources hand out, and the rules of rank 0's split server that need no MPI:
//! the list of splits (all known up front, or growing while the map phase runs), the size of
//! a batch (guided self-scheduling), the replies' encoding, and the back-off of a waiting
//! thread.
//!
//! A rank that is not rank 0 asks for several splits at once: as many as its worker threads,
//! but never more than the remaining splits over twice the threads of all ranks (guided
//! self-scheduling: large batches while much is left, single splits at the end, so the last
//! splits spread over the ranks and the tail stays balanced). Which rank maps a split does not
//! change the output (the runs of every split go through the same partitioner and merges).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What a split list holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Splits known (indices `0..count`).
    pub count: usize,
    /// No more will come.
    pub complete: bool,
}

/// The splits a job maps, indexed `0..`: all known up front ([`FixedSplits`]), or arriving
/// while the map phase runs (an [`InputFeed`](crate::InputFeed)).
pub trait SplitList: Send + Sync {
    /// What is known now.
    fn known(&self) -> Known;
    /// Waits (on a condition variable, never spinning) until more than `seen` splits are
    /// known, the list is complete, or `timeout` passed; returns what is known then.
    fn wait_beyond(&self, seen: usize, timeout: Duration) -> Known;
    /// Bytes of split `i` (known).
    fn size(&self, i: usize) -> u64;
    /// What another rank needs to map split `i` of a list that only rank 0 reads (its
    /// file's path and the range); empty when every rank knows the list.
    fn describe(&self, _i: usize) -> Vec<u8> {
        Vec::new()
    }
    /// On a rank that does not read the list: takes in split `i` as [`SplitList::describe`]
    /// gave it (opening its file the first time).
    ///
    /// # Errors
    ///
    /// The file cannot be opened here.
    fn adopt(&self, _i: usize, _description: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// Splits all known up front, by their sizes.
#[derive(Debug, Clone, Copy)]
pub struct FixedSplits<'a>(pub &'a [u64]);

impl SplitList for FixedSplits<'_> {
    fn known(&self) -> Known {
        Known { count: self.0.len(), complete: true }
    }

    fn wait_beyond(&self, _seen: usize, _timeout: Duration) -> Known {
        self.known()
    }

    fn size(&self, i: usize) -> u64 {
        self.0[i]
    }
}

/// Caps the splits of one reply (for measurements: `1` turns batching off).
pub const BATCH_ENV: &str = "SPILLWAY_SPLIT_BATCH";

/// The most splits one reply carries, from [`BATCH_ENV`] (unset: no cap beyond the rule).
pub fn batch_cap() -> usize {
    std::env::var(BATCH_ENV).ok().and_then(|v| v.trim().parse().ok()).filter(|&n| n > 0).unwrap_or(usize::MAX)
}

/// How many splits to hand a rank that asks for `want` (its worker threads) when `remaining`
/// are left and all ranks have `threads` workers in all: guided self-scheduling, at most
/// `cap`, at least one (if any remain).
pub fn batch(want: usize, remaining: usize, threads: usize, cap: usize) -> usize {
    let guided = remaining / (2 * threads.max(1));
    guided.clamp(1, want.clamp(1, cap.max(1))).min(remaining)
}

/// A reply's count that says no split will come any more.
const END: u64 = u64::MAX;

/// A reply: the splits `indices` with each one's description, or the end (`None`).
pub fn encode_reply(splits: Option<&[(usize, Vec<u8>)]>) -> Vec<u8> {
    let Some(splits) = splits else { return END.to_le_bytes().to_vec() };
    let mut out = (splits.len() as u64).to_le_bytes().to_vec();
    for (i, desc) in splits {
        out.extend_from_slice(&(*i as u64).to_le_bytes());
        out.extend_from_slice(&(desc.len() as u64).to_le_bytes());
        out.extend_from_slice(desc);
    }
    out
}

/// One split of a reply: its index and description.
pub type Granted<'a> = (usize, &'a [u8]);

/// Reads a reply of [`encode_reply`]: `None` for the end.
///
/// # Errors
///
/// [`Error::Cluster`] for a malformed reply.
pub fn decode_reply(bytes: &[u8]) -> Result<Option<Vec<Granted<'_>>>> {
    let bad = || Error::Cluster(format!("malformed split reply of {} bytes from rank 0", bytes.len()));
    let mut at = 0usize;
    let word = |at: &mut usize| -> Result<u64> {
        let w = bytes.get(*at..*at + 8).ok_or_else(bad)?;
        *at += 8;
        Ok(u64::from_le_bytes(w.try_into().expect("8 bytes")))
    };
    let count = word(&mut at)?;
    if count == END {
        return Ok(None);
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let i = usize::try_from(word(&mut at)?).map_err(|_| bad())?;
        let len = usize::try_from(word(&mut at)?).map_err(|_| bad())?;
        let desc = at.checked_add(len).and_then(|end| bytes.get(at..end)).ok_or_else(bad)?;
        at += len;
        out.push((i, desc));
    }
    Ok(Some(out))
}

/// Pauses of a thread polling for a message that is not there yet: yields for 200 µs, then sleeps
/// that double from 10 µs up to a cap (a longer one once it waited 100 ms: a streamed input
/// that has nothing yet), so that a waiting rank leaves the cores to the ranks that work.
#[derive(Debug)]
pub struct Backoff {
    sleep: Duration,
    since: Option<Instant>,
    caps: (Duration, Duration),
}

impl Default for Backoff {
    /// A rank waiting for its reply: sleeps up to 1 ms, then 10 ms.
    fn default() -> Self {
        Backoff::with_caps(Duration::from_millis(1), Duration::from_millis(10))
    }
}

impl Backoff {
    /// Sleeps of at most `short`, and of at most `long` after 100 ms of waiting.
    pub fn with_caps(short: Duration, long: Duration) -> Self {
        Backoff { sleep: Duration::from_micros(10), since: None, caps: (short, long) }
    }

    /// The split server: sleeps up to 200 µs (a request waits at most that long), then 2 ms.
    pub fn server() -> Self {
        Backoff::with_caps(Duration::from_micros(200), Duration::from_millis(2))
    }

    /// Something arrived: the next wait starts short again.
    pub fn reset(&mut self) {
        (self.sleep, self.since) = (Duration::from_micros(10), None);
    }

    /// One pause.
    pub fn pause(&mut self) {
        let since = *self.since.get_or_insert_with(Instant::now);
        // A reply usually comes within a round trip: yield (the CPU goes to any thread that
        // wants it) for the first 200 µs, then sleep.
        if since.elapsed() < Duration::from_micros(200) {
            std::thread::yield_now();
            return;
        }
        let cap = if since.elapsed() > Duration::from_millis(100) { self.caps.1 } else { self.caps.0 };
        std::thread::sleep(self.sleep);
        self.sleep = (self.sleep * 2).min(cap);
    }
}

/// What this process's split server answered (for measurements: `split-server-bench`).
pub static SERVED: ServerCounts = ServerCounts { requests: AtomicUsize::new(0), splits: AtomicUsize::new(0) };

/// Counts of a split server, for measurements.
#[derive(Debug, Default)]
pub struct ServerCounts {
    /// Requests answered.
    pub requests: AtomicUsize,
    /// Splits handed out in them.
    pub splits: AtomicUsize,
}

impl ServerCounts {
    /// (requests, splits).
    pub fn get(&self) -> (usize, usize) {
        (self.requests.load(Ordering::Relaxed), self.splits.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_shrink_to_single_splits_at_the_end() {
        // 8 ranks of 8 threads, 10 000 splits: large batches first, capped by the threads.
        assert_eq!(batch(8, 10_000, 64, usize::MAX), 8);
        assert_eq!(batch(8, 500, 64, usize::MAX), 3);
        assert_eq!(batch(8, 100, 64, usize::MAX), 1);
        assert_eq!(batch(8, 1, 64, usize::MAX), 1);
        assert_eq!(batch(8, 0, 64, usize::MAX), 0);
        assert_eq!(batch(8, 10_000, 64, 1), 1);
        assert_eq!(batch(0, 10_000, 0, usize::MAX), 1);
        // Handing out every split in guided batches gives each once.
        let mut left = 1000;
        let mut handed = 0;
        while left > 0 {
            let b = batch(4, left, 16, usize::MAX);
            assert!((1..=4).contains(&b));
            left -= b;
            handed += b;
        }
        assert_eq!(handed, 1000);
    }

    #[test]
    fn replies_round_trip_and_bad_ones_are_errors() {
        let splits = vec![(3usize, b"a.txt".to_vec()), (4, Vec::new())];
        let bytes = encode_reply(Some(&splits));
        let back = decode_reply(&bytes).unwrap().unwrap();
        assert_eq!(back, vec![(3usize, &b"a.txt"[..]), (4, &b""[..])]);
        assert_eq!(decode_reply(&encode_reply(None)).unwrap(), None);
        assert!(decode_reply(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_reply(&[1, 2]).is_err());
    }
}
