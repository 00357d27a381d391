//! The MPI cluster (feature `mpi`): rsmpi over the system's MPI library.
//!
//! - Start-up: `all_gather` of the settings' digests, the partitioner fingerprint and a token
//!   (rank 0's is the job's).
//! - Splits: rank 0 runs a server thread answering split requests (one in flight per rank, for
//!   a batch of splits sized by guided self-scheduling: `super::splits`), and its own workers
//!   take splits from the same atomic cursor, so a split is handed out exactly once and a slow
//!   rank simply asks less often. A request that finds no split yet (streamed inputs) is
//!   answered once one arrives; the asking rank polls for its reply with pauses that grow
//!   (`Backoff`), never a spinning blocking receive.
//! - Exchange: a barrier polled with sleeps (the wait for the slowest map phase, timed on its
//!   own), then section descriptors all-to-all-v together with each receiver's message size.
//!   One thread sends one stream per destination (the sections of all runs for it, back to
//!   back: `super::stream`), in messages of at most the receiver's size (64 MiB by default,
//!   below 2 GiB since MPI counts are 32-bit), straight from the mapped runs where a message
//!   lies in one section (always for a section of at least the receiver's direct threshold,
//!   1 MiB by default) and packed where it spans several, a window of sends at a time; meanwhile it
//!   receives each source's stream, a fill at a time, into two reused aligned buffers that
//!   together stay within the memory budget: while one fills, the caller writes the other's
//!   sections (a section cut by a buffer's end arrives in pieces). `SPILLWAY_MPI_CHUNK`,
//!   `SPILLWAY_MPI_DIRECT` and `SPILLWAY_MPI_BUFFER` override the message size and the direct
//!   threshold and cap the buffers,
//!   `SPILLWAY_MPI_WINDOW` and `SPILLWAY_MPI_PACK` the window's messages and packed bytes (for
//!   measurements and tests).
//! - Metrics: variable-length gather to rank 0.
//!
//! It runs on the engine's own duplicate of a communicator (`super::comm`): the world's
//! ([`MpiCluster::world`]) or one the caller passes ([`MpiCluster::new`], e.g. from
//! `MPI_Comm_split`), so its messages never meet the caller's. It requires
//! `MPI_THREAD_MULTIPLE` (OpenMPI provides it): worker threads, the split server and the
//! exchange's threads each use the communicator at once.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use mpi::datatype::{Partition, PartitionMut};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use spillway_shuffle::Aligned;

use super::comm::Comm;
use super::stream::{
    Cut, DESCRIPTOR, Descriptor, Fill, Incoming, RECEIVE_BUFFERS, ReceivePlan, Sender, pieces, staggered,
};
use super::{
    Agreement, Backoff, Cluster, Cursor, ExchangeStats, InSection, OutSection, SERVED, SplitList,
    SplitSource, batch_cap, decode_reply, encode_reply,
};
use crate::error::{Error, Result};
use crate::metrics::Progress;

const TAG_REQUEST: i32 = 101;
const TAG_REPLY: i32 = 102;
const TAG_FINISHED: i32 = 103;
const TAG_DATA: i32 = 104;
/// Default message size (the receiver's choice). Message sizes from 1 MiB to 1 GiB measured
/// alike within noise (`bench/README.md`), 64 MiB and up slightly ahead; 64 MiB keeps a large
/// section in several messages.
const DEFAULT_CHUNK: usize = 64 << 20;
/// Overrides the message size (bytes, K/M/G suffixes), for measurements and for tests that
/// want sections in many messages.
const CHUNK_ENV: &str = "SPILLWAY_MPI_CHUNK";
/// Caps the receive buffers below the memory budget (bytes in total, K/M/G suffixes), for
/// tests that want sections larger than a buffer (received in pieces).
const BUFFER_ENV: &str = "SPILLWAY_MPI_BUFFER";
/// Overrides the direct threshold (bytes, K/M/G suffixes): sections of at least this many bytes
/// go in messages of their own, never copied (`stream::Cut::default_direct` by default).
const DIRECT_ENV: &str = "SPILLWAY_MPI_DIRECT";
/// Sends in flight at most (the window): messages.
const WINDOW: usize = 32;
/// Sends in flight at most (the window): bytes packed from several sections (copies).
const PACK_CAP: usize = 64 << 20;
/// Override the window's messages and packed bytes (for measurements and tests).
const WINDOW_ENV: &str = "SPILLWAY_MPI_WINDOW";
const PACK_ENV: &str = "SPILLWAY_MPI_PACK";

/// The ranks of one communicator, running one engine's jobs.
///
/// It holds the engine's own duplicate of the communicator it was made from (`MPI_Comm_dup`),
/// freed when the cluster (and every engine holding it) is dropped, so its messages never mix
/// with the caller's or with another engine's. It never initializes or finalizes MPI: the
/// caller does, with `MPI_THREAD_MULTIPLE`, and drops the cluster before finalizing. Two
/// clusters on disjoint communicators (the halves of an `MPI_Comm_split`) run jobs at the
/// same time; one cluster runs one job at a time.
///
/// # Example
///
/// ```no_run
/// use std::sync::Arc;
/// use mpi::traits::*;
/// use spillway_engine::{Engine, Inputs, OutputSpec, cluster::MpiCluster, jobs::WordCount, text::WordMode};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Multiple).ok_or("MPI already initialized")?;
/// let world = universe.world();
/// let half = world.split_by_color(mpi::topology::Color::with_value(world.rank() % 2)).ok_or("no color")?;
/// let cluster = Arc::new(MpiCluster::new(&half)?);
/// let engine = Engine::builder().threads(2).cluster(cluster).build()?;
/// let out = format!("counts-{}.tsv", world.rank() % 2);
/// engine.run(&WordCount { mode: WordMode::Unicode }, &Inputs::new(["books"])?, &OutputSpec::File(out.into()))?;
/// drop(engine); // frees the engine's communicator before MPI_Finalize
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MpiCluster {
    comm: Comm,
    rank: usize,
    size: usize,
}

impl MpiCluster {
    /// The cluster of `MPI_COMM_WORLD` (a duplicate of it).
    ///
    /// # Errors
    ///
    /// As [`MpiCluster::new`].
    pub fn world() -> Result<Self> {
        Self::new(&SimpleCommunicator::world())
    }

    /// The cluster of the ranks of `comm` (an intra-communicator: the world, or one from
    /// `split`/`duplicate`), on a duplicate of it. Collective: every rank of `comm` calls it.
    ///
    /// # Errors
    ///
    /// [`Error::Cluster`] when MPI is not initialized, already finalized, or was initialized
    /// with a thread level below `MPI_THREAD_MULTIPLE` (`MPI_Query_thread`).
    pub fn new<C: Communicator>(comm: &C) -> Result<Self> {
        let comm = Comm::duplicate(comm)?;
        let (rank, size) = (comm.get().rank() as usize, comm.get().size() as usize);
        Ok(MpiCluster { comm, rank, size })
    }
}

/// Rank 0's source: its workers and the split server share one cursor.
struct RootSource<'a> {
    comm: &'a Comm,
    cursor: Cursor<'a>,
    others: usize,
    /// The workers of every rank, as last reported in their requests (rank 0's own: its
    /// threads), for the size of a batch.
    threads: Vec<usize>,
    cap: usize,
}

impl SplitSource for RootSource<'_> {
    fn next(&self) -> Option<usize> {
        // Rank 0's own workers take from the cursor directly; the engine counts their progress.
        self.cursor.take()
    }

    fn abort(&self) {
        self.cursor.aborted.store(true, Ordering::Relaxed);
    }

    /// Answers split requests until every other rank has said it is finished. A request that
    /// finds no split known yet (a list that grows) waits here, unanswered, until one is (or
    /// the list is complete): the asking rank waits for its reply, not polling rank 0 again.
    fn serve(&self) {
        let world = self.comm.get();
        let mut threads = self.threads.clone();
        let mut waiting: VecDeque<(i32, usize)> = VecDeque::new();
        let mut finished = 0;
        let mut idle = Backoff::server();
        while finished < self.others {
            let mut busy = false;
            if let Some((msg, status)) = world.any_process().immediate_matched_probe_with_tag(TAG_REQUEST) {
                let mut want = 0u64;
                msg.matched_receive_into(&mut want);
                let rank = status.source_rank();
                let want = usize::try_from(want).unwrap_or(usize::MAX).max(1);
                threads[rank as usize] = want;
                waiting.push_back((rank, want));
                busy = true;
            } else if let Some((msg, _)) = world.any_process().immediate_matched_probe_with_tag(TAG_FINISHED)
            {
                let mut ignored = 0u64;
                msg.matched_receive_into(&mut ignored);
                finished += 1;
                busy = true;
            }
            let all: usize = threads.iter().sum();
            while let Some(&(rank, want)) = waiting.front() {
                // A job that stops ends the waits of the other ranks too.
                let grant = if self.cursor.stopped() { None } else { self.cursor.grant(want, all, self.cap) };
                let reply = match grant {
                    Some(range) if range.is_empty() => break, // nothing known yet: later
                    Some(range) => {
                        let p = self.cursor.progress;
                        let splits: Vec<_> = range
                            .map(|i| {
                                p.bytes_mapped.fetch_add(self.cursor.splits.size(i), Ordering::Relaxed);
                                (i, self.cursor.splits.describe(i))
                            })
                            .collect();
                        p.splits_done.fetch_add(splits.len() as u64, Ordering::Relaxed);
                        SERVED.splits.fetch_add(splits.len(), Ordering::Relaxed);
                        encode_reply(Some(&splits))
                    }
                    None => encode_reply(None),
                };
                world.process_at_rank(rank).send_with_tag(&reply[..], TAG_REPLY);
                waiting.pop_front();
                SERVED.requests.fetch_add(1, Ordering::Relaxed);
                busy = true;
            }
            if busy {
                idle.reset();
            } else {
                idle.pause();
            }
        }
    }

    fn finish(&self) -> Result<()> {
        Ok(())
    }
}

/// Another rank's source: one worker at a time asks rank 0 for a batch (as many splits as
/// this rank has workers, or fewer near the end), which the workers then share.
struct RemoteSource<'a> {
    comm: &'a Comm,
    splits: &'a dyn SplitList,
    progress: &'a Progress,
    threads: usize,
    state: Mutex<Remote>,
    arrived: Condvar,
}

#[derive(Default)]
struct Remote {
    queue: VecDeque<usize>,
    /// A worker is asking rank 0 now.
    asking: bool,
    /// Rank 0 said there are no more.
    ended: bool,
    aborted: bool,
    error: Option<Error>,
}

impl RemoteSource<'_> {
    /// Asks rank 0 for splits and waits for the reply (polled, pausing between polls: a
    /// blocking MPI receive spins); takes in each split's description. `None`: no more.
    fn ask(&self) -> Result<Option<Vec<usize>>> {
        let world = self.comm.get();
        let root = world.process_at_rank(0);
        let wanted = self.progress.threads_wanted.load(Ordering::Relaxed);
        let want = if wanted == 0 { self.threads } else { wanted };
        root.send_with_tag(&(want as u64), TAG_REQUEST);
        let mut pause = Backoff::default();
        let (msg, status) = loop {
            if let Some(found) = root.immediate_matched_probe_with_tag(TAG_REPLY) {
                break found;
            }
            if self.progress.cancelled() || lock(&self.state).aborted {
                return Ok(None); // the job stops: a late reply is never read
            }
            pause.pause();
        };
        let mut bytes = vec![0u8; usize::try_from(status.count(u8::equivalent_datatype())).unwrap_or(0)];
        msg.matched_receive_into(&mut bytes[..]);
        let Some(splits) = decode_reply(&bytes)? else { return Ok(None) };
        for (i, desc) in &splits {
            self.splits.adopt(*i, desc)?;
        }
        Ok(Some(splits.into_iter().map(|(i, _)| i).collect()))
    }
}

impl SplitSource for RemoteSource<'_> {
    fn next(&self) -> Option<usize> {
        let mut state = lock(&self.state);
        loop {
            if state.aborted || self.progress.cancelled() {
                return None;
            }
            if let Some(i) = state.queue.pop_front() {
                return Some(i);
            }
            if state.ended {
                return None;
            }
            if state.asking {
                state = self
                    .arrived
                    .wait_timeout(state, Duration::from_millis(100))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            state.asking = true;
            drop(state);
            let reply = self.ask();
            state = lock(&self.state);
            state.asking = false;
            match reply {
                Ok(Some(splits)) => state.queue.extend(splits),
                Ok(None) => state.ended = true,
                Err(e) => {
                    state.ended = true;
                    state.error = Some(e);
                }
            }
            self.arrived.notify_all();
        }
    }

    fn abort(&self) {
        lock(&self.state).aborted = true;
        self.arrived.notify_all();
    }

    fn finish(&self) -> Result<()> {
        self.comm.get().process_at_rank(0).send_with_tag(&0u64, TAG_FINISHED);
        lock(&self.state).error.take().map_or(Ok(()), Err)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Returns when every rank has called it; sleeps between polls.
fn wait_for_all(world: &SimpleCommunicator) {
    let mut request = world.immediate_barrier();
    loop {
        match request.test() {
            Ok(_) => break,
            Err(pending) => {
                request = pending;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

/// Waits for `request`, yielding the CPU between polls.
///
/// A blocking MPI wait spins in the progress engine without yielding (OpenMPI's default,
/// `mpi_yield_when_idle=0`), which starves the thread that writes the received sections
/// whenever ranks share cores (writing took about nine times as long with blocking waits; see
/// `bench/README.md`). Each poll drives MPI's progress; the copy of a message happens inside
/// one, so the polls cost nothing when nothing else wants the core.
fn wait_yielding<'a, D: ?Sized, S: mpi::request::Scope<'a>>(mut request: mpi::request::Request<'a, D, S>) {
    loop {
        match request.test() {
            Ok(_) => return,
            Err(pending) => {
                request = pending;
                std::thread::yield_now();
            }
        }
    }
}

/// A size in bytes (K/M/G suffixes) from the environment variable `name`, if set and valid.
fn size_setting(name: &str) -> Option<usize> {
    let text = std::env::var(name).ok()?;
    let t = text.trim();
    let (digits, shift) = match t.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&t[..t.len() - 1], 10),
        Some(b'M') => (&t[..t.len() - 1], 20),
        Some(b'G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    digits.parse::<usize>().ok().map(|n| n.saturating_mul(1 << shift))
}

/// What the exchange thread did.
struct Moved {
    sent: u64,
    received: u64,
    messages: u64,
    /// Bytes copied into messages that span several sections.
    packed: u64,
    /// Time spent receiving: from the start until the last fill arrived, less the stalls
    /// waiting for a free buffer (the writer being behind).
    receiving: Duration,
    /// Time spent after the last fill arrived waiting for the other ranks to take this
    /// rank's sends.
    draining: Duration,
}

/// The receiving half of the exchange thread: fills in order, into free buffers, handed on.
struct Receiver<'f> {
    world: &'f SimpleCommunicator,
    fills: &'f [Fill],
    next: usize,
    free: &'f mpsc::Receiver<Aligned>,
    full: &'f mpsc::Sender<(usize, Aligned)>,
    received: u64,
    stalled: Duration,
    /// When the last fill arrived.
    done: Option<Instant>,
}

impl Receiver<'_> {
    fn finished(&self) -> bool {
        self.next == self.fills.len()
    }

    /// Receives the next fill: its messages are posted at once (messages from one source
    /// arrive in the order they were sent, MPI's non-overtaking rule) and polled.
    fn receive_one(&mut self) {
        let i = self.next;
        let fill = &self.fills[i];
        let waited = Instant::now();
        let mut buffer = self.free.recv().expect("the writer gives every buffer back");
        self.stalled += waited.elapsed();
        if buffer.len() < fill.len {
            buffer.resize(fill.len, 0);
        }
        let from = self.world.process_at_rank(fill.source as i32);
        mpi::request::scope(|scope| {
            let mut rest = &mut buffer[..fill.len];
            let mut posted = Vec::with_capacity(fill.messages.len());
            for &len in &fill.messages {
                let (piece, tail) = std::mem::take(&mut rest).split_at_mut(len);
                posted.push(from.immediate_receive_into_with_tag(scope, piece, TAG_DATA));
                rest = tail;
            }
            posted.into_iter().for_each(wait_yielding);
        });
        self.received += fill.len as u64;
        self.next += 1;
        if self.finished() {
            self.done = Some(Instant::now());
        }
        // The writer only goes away after this thread has finished.
        let _ = self.full.send((i, buffer));
    }
}

/// The sending thread: posts the sends a window at a time (`Sender::next_batch`), each window
/// when the previous one has completed. Returns (bytes sent, bytes packed).
fn send_all(comm: &Comm, mut sender: Sender<'_>) -> (u64, u64) {
    let world = comm.get();
    let mut sent = 0u64;
    loop {
        let batch = sender.next_batch();
        if batch.is_empty() {
            break;
        }
        mpi::request::scope(|scope| {
            let posted: Vec<_> = batch
                .iter()
                .map(|(d, m)| {
                    sent += m.bytes().len() as u64;
                    world.process_at_rank(*d as i32).immediate_send_with_tag(scope, m.bytes(), TAG_DATA)
                })
                .collect();
            posted.into_iter().for_each(wait_yielding);
        });
    }
    (sent, sender.packed)
}

/// The exchange thread: starts a thread that sends (`send_all`) and meanwhile receives fill
/// after fill into free buffers and passes them on. Sending and receiving never wait for each
/// other on one thread: a rank blocked in a receive still posts its next window of sends,
/// which the rank it waits for may be waiting on.
fn move_bytes(
    comm: &Comm,
    sender: Sender<'_>,
    fills: &[Fill],
    free: &mpsc::Receiver<Aligned>,
    full: &mpsc::Sender<(usize, Aligned)>,
) -> Result<Moved> {
    let started = Instant::now();
    let messages = sender.messages();
    let mut receiver = Receiver {
        world: comm.get(),
        fills,
        next: 0,
        free,
        full,
        received: 0,
        stalled: Duration::ZERO,
        done: fills.is_empty().then(Instant::now),
    };
    let (sent, packed) = std::thread::scope(|scope| {
        let sending = std::thread::Builder::new()
            .name("spillway-send".into())
            .spawn_scoped(scope, move || send_all(comm, sender))
            .map_err(|source| Error::Spawn { thread: "spillway-send".into(), source })?;
        while !receiver.finished() {
            receiver.receive_one();
        }
        Ok::<_, Error>(sending.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })?;
    let done = receiver.done.unwrap_or_else(Instant::now);
    Ok(Moved {
        sent,
        received: receiver.received,
        messages,
        packed,
        receiving: done.duration_since(started).saturating_sub(receiver.stalled),
        draining: done.elapsed(),
    })
}

/// Exclusive prefix sums: where each rank's piece starts.
fn displacements(counts: &[i32]) -> Vec<i32> {
    counts
        .iter()
        .scan(0i32, |acc, &c| {
            let d = *acc;
            *acc += c;
            Some(d)
        })
        .collect()
}

fn to_count(n: usize, what: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::Cluster(format!("{what} of {n} bytes exceeds one MPI message")))
}

impl Cluster for MpiCluster {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn agree(&self, agreement: &Agreement) -> Result<u64> {
        let world = self.comm.get();
        let mine = agreement.record();
        let mut all = vec![0u64; mine.len() * self.size];
        world.all_gather_into(&mine[..], &mut all[..]);
        let records: Vec<_> =
            all.chunks_exact(mine.len()).map(|c| c.try_into().expect("fixed-size record")).collect();
        agreement.check(self.rank, &records)
    }

    fn split_source<'a>(
        &'a self,
        splits: &'a dyn SplitList,
        threads: usize,
        progress: &'a Progress,
    ) -> Box<dyn SplitSource + 'a> {
        if self.rank == 0 {
            Box::new(RootSource {
                comm: &self.comm,
                cursor: Cursor::new(splits, progress),
                others: self.size - 1,
                threads: vec![threads.max(1); self.size],
                cap: batch_cap(),
            })
        } else {
            Box::new(RemoteSource {
                comm: &self.comm,
                splits,
                progress,
                threads: threads.max(1),
                state: Mutex::new(Remote::default()),
                arrived: Condvar::new(),
            })
        }
    }

    fn exchange(
        &self,
        outgoing: &[OutSection<'_>],
        owner: &dyn Fn(u32) -> usize,
        buffer_bytes: usize,
        deliver: &mut dyn FnMut(InSection<'_>) -> Result<()>,
    ) -> Result<ExchangeStats> {
        let world = self.comm.get();
        let n = self.size;
        let mut stats = ExchangeStats::default();
        // 0. Every rank has finished its map phase: the time a fast rank waits here is not
        // transfer time. Polled with sleeps, so that a waiting rank leaves the CPU to the
        // ranks still mapping (a blocking barrier busy-polls).
        let started = Instant::now();
        wait_for_all(world);
        stats.times.wait = started.elapsed().as_secs_f64();

        // 1. Descriptors, all-to-all-v, after one all-to-all of (descriptor bytes, the
        // receiver's message size and direct threshold): each sender cuts its sections into the
        // messages that the receiver posts.
        let started = Instant::now();
        let buffer_bytes = size_setting(BUFFER_ENV).map_or(buffer_bytes, |cap| cap.min(buffer_bytes));
        let plan = ReceivePlan::new(
            buffer_bytes,
            size_setting(CHUNK_ENV).unwrap_or(DEFAULT_CHUNK),
            size_setting(DIRECT_ENV),
        );
        let mut per_dest: Vec<Vec<&OutSection<'_>>> = vec![Vec::new(); n];
        for s in outgoing {
            let d = owner(s.partition);
            if d != self.rank {
                per_dest[d].push(s);
            }
        }
        // Both buffers get a real allocation even when empty: two empty vectors share one
        // dangling pointer, and MPI refuses a send buffer equal to the receive buffer.
        let mut send_desc = Vec::with_capacity(DESCRIPTOR);
        let mut send_counts = vec![0i32; n];
        let mut send_triples = vec![0i32; 3 * n];
        for (d, sections) in per_dest.iter().enumerate() {
            for s in sections {
                let desc = Descriptor {
                    run: s.run,
                    partition: s.partition,
                    records: s.records,
                    blocks: s.blocks,
                    len: s.bytes.len(),
                };
                send_desc.extend_from_slice(&desc.encode());
            }
            send_counts[d] = to_count(sections.len() * DESCRIPTOR, "descriptor list")?;
            send_triples[3 * d] = send_counts[d];
            send_triples[3 * d + 1] = to_count(plan.chunk, "message size")?;
            send_triples[3 * d + 2] = to_count(plan.direct, "direct threshold")?;
        }
        let mut recv_triples = vec![0i32; 3 * n];
        world.all_to_all_into(&send_triples[..], &mut recv_triples[..]);
        let recv_counts: Vec<i32> = (0..n).map(|r| recv_triples[3 * r]).collect();
        // How each destination receives: its message size and direct threshold.
        let dest_cut: Vec<Cut> = (0..n)
            .map(|r| Cut {
                chunk: recv_triples[3 * r + 1].max(16) as usize,
                direct: recv_triples[3 * r + 2].max(0) as usize,
            })
            .collect();
        let send_displs = displacements(&send_counts);
        let recv_displs = displacements(&recv_counts);
        let total: i32 = recv_counts.iter().sum();
        let mut recv_desc = vec![0u8; (total as usize).max(1)];
        {
            let sp = Partition::new(&send_desc[..], &send_counts[..], &send_displs[..]);
            let mut rp = PartitionMut::new(&mut recv_desc[..], &recv_counts[..], &recv_displs[..]);
            world.all_to_all_varcount_into(&sp, &mut rp);
        }
        // Each source's sections, at their places in its stream, in receiving order.
        let mut incoming = Vec::new();
        for source in staggered(self.rank, n, false) {
            let start = recv_displs[source] as usize;
            let end = start + recv_counts[source] as usize;
            let mut at = 0;
            for d in recv_desc[start..end].chunks_exact(DESCRIPTOR) {
                let desc = Descriptor::decode(d);
                incoming.push(Incoming { source, desc, at });
                at += desc.len;
            }
        }
        drop(recv_desc);
        let fills = plan.fills(&incoming);
        stats.times.descriptors = started.elapsed().as_secs_f64();
        stats.times.chunk_bytes = plan.chunk as u64;
        // Sections that a fill's end cuts: the first piece of the next fill, when it is not a
        // section's start.
        let mut cut_sections: Vec<usize> = fills
            .iter()
            .filter_map(|f| pieces(f, &incoming).next().filter(|p| p.offset > 0).map(|p| p.index))
            .collect();
        cut_sections.dedup();
        stats.times.pieced = cut_sections.len() as u64;

        // 2. Section bytes. The exchange thread receives fill after fill into the next free
        // buffer (polled receives that yield the CPU, see `wait_yielding`) and hands each full
        // buffer over, while a thread of its own posts the sends a window at a time, one stream
        // per destination (straight from the mapped runs, packed where a message spans
        // sections); this thread writes the sections and pieces through `deliver` meanwhile and
        // gives the buffer back. Two buffers: one filling while the other is written.
        let data_started = Instant::now();
        let streams = staggered(self.rank, n, true)
            .map(|d| (d, dest_cut[d], per_dest[d].iter().map(|s| s.bytes).collect()))
            .collect();
        let pack_cap = size_setting(PACK_ENV).unwrap_or(PACK_CAP);
        let window = size_setting(WINDOW_ENV).unwrap_or(WINDOW);
        let sender = Sender::new(streams, window, pack_cap);
        let (full_tx, full_rx) = mpsc::channel::<(usize, Aligned)>();
        let (free_tx, free_rx) = mpsc::channel::<Aligned>();
        let largest = fills.iter().map(|f| f.len).max().unwrap_or(0);
        let mut outcome = Ok(());
        let mut writing = Duration::ZERO;
        let mover = std::thread::scope(|scope| {
            // Owned by this closure: should it unwind, the exchange thread sees the channel
            // close instead of waiting for a buffer forever.
            let free_tx = free_tx;
            let fills = &fills;
            let comm = &self.comm;
            let started = std::thread::Builder::new()
                .name("spillway-exchange".into())
                .spawn_scoped(scope, move || move_bytes(comm, sender, fills, &free_rx, &full_tx));
            let mover = match started {
                Ok(mover) => mover,
                Err(source) => return Err(Error::Spawn { thread: "spillway-exchange".into(), source }),
            };
            // The buffers are sized (and their pages touched) here, the second one while the
            // first one is filling.
            for _ in 0..RECEIVE_BUFFERS.min(fills.len()) {
                let mut buffer = Aligned::with_capacity(largest);
                buffer.resize(largest, 0);
                let _ = free_tx.send(buffer);
            }
            for (i, buffer) in full_rx {
                let fill = &fills[i];
                for piece in pieces(fill, &incoming) {
                    if outcome.is_err() {
                        break;
                    }
                    let s = &incoming[piece.index];
                    let started = Instant::now();
                    outcome = deliver(InSection {
                        source: s.source,
                        run: s.desc.run,
                        partition: s.desc.partition,
                        records: s.desc.records,
                        blocks: s.desc.blocks,
                        offset: piece.offset as u64,
                        section_len: s.desc.len as u64,
                        bytes: &buffer[piece.range],
                    });
                    writing += started.elapsed();
                }
                // After a failure the bytes still arrive (every rank's sends must complete),
                // they are just not written.
                let _ = free_tx.send(buffer);
            }
            mover.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        let data = data_started.elapsed();
        stats.sent = mover.sent;
        stats.received = mover.received;
        stats.times.messages = mover.messages;
        stats.times.packed = mover.packed;
        stats.times.data = data.as_secs_f64();
        stats.times.write = writing.as_secs_f64();
        stats.times.transfer = mover.receiving.as_secs_f64();
        stats.times.drain = mover.draining.as_secs_f64();
        outcome.map(|()| stats)
    }

    fn barrier(&self) -> Result<()> {
        wait_for_all(self.comm.get());
        Ok(())
    }

    fn all_gather(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let world = self.comm.get();
        // Never empty: MPI refuses a receive buffer of no bytes (a null pointer). Each rank's
        // bytes go with one leading byte, dropped again below.
        let bytes: Vec<u8> = std::iter::once(0).chain(bytes.iter().copied()).collect();
        let len = to_count(bytes.len(), "all-gather")?;
        let mut lens = vec![0i32; self.size];
        world.all_gather_into(&len, &mut lens[..]);
        let displs = displacements(&lens);
        let mut all = vec![0u8; lens.iter().sum::<i32>() as usize];
        {
            let mut p = PartitionMut::new(&mut all[..], &lens[..], &displs[..]);
            world.all_gather_varcount_into(&bytes[..], &mut p);
        }
        Ok(lens.iter().zip(&displs).map(|(&l, &d)| all[d as usize + 1..(d + l) as usize].to_vec()).collect())
    }

    fn gather(&self, bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        let world = self.comm.get();
        let root = world.process_at_rank(0);
        // Never empty (a rank that records no report sends nothing): as in `all_gather`, one
        // leading byte, dropped again below.
        let bytes: Vec<u8> = std::iter::once(0).chain(bytes.iter().copied()).collect();
        let bytes = &bytes[..];
        let len = to_count(bytes.len(), "gather")?;
        if self.rank != 0 {
            root.gather_into(&len);
            root.gather_varcount_into(bytes);
            return Ok(None);
        }
        let mut lens = vec![0i32; self.size];
        root.gather_into_root(&len, &mut lens[..]);
        let displs = displacements(&lens);
        let mut all = vec![0u8; lens.iter().sum::<i32>() as usize];
        {
            let mut p = PartitionMut::new(&mut all[..], &lens[..], &displs[..]);
            root.gather_varcount_into_root(bytes, &mut p);
        }
        Ok(Some(
            lens.iter().zip(&displs).map(|(&l, &d)| all[d as usize + 1..(d + l) as usize].to_vec()).collect(),
        ))
    }
}
