//! The MPI cluster (feature `mpi`): rsmpi over the system's MPI library.
//!
//! - Start-up: `all_gather` of the configuration digest and partitioner fingerprint.
//! - Splits: rank 0 runs a server thread answering split requests (one in flight per worker
//!   thread of every rank), and its own workers take splits from the same atomic cursor, so a
//!   split is handed out exactly once and a slow rank simply asks less often.
//! - Exchange: section descriptors go all-to-all-v; section bytes go with non-blocking sends
//!   straight from the mapped runs, in chunks below 2 GiB (MPI counts are 32-bit), and are
//!   received one section at a time into one reused aligned buffer.
//! - Metrics: variable-length gather to rank 0.
//!
//! Requires `MPI_THREAD_MULTIPLE` (OpenMPI provides it): worker threads and the split server
//! each use the world communicator.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mpi::datatype::{Partition, PartitionMut};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use spillway_shuffle::Aligned;

use super::{Cluster, ExchangeStats, InSection, OutSection, SplitSource};
use crate::error::{Error, Result};
use crate::metrics::Progress;

const TAG_REQUEST: i32 = 101;
const TAG_REPLY: i32 = 102;
const TAG_FINISHED: i32 = 103;
const TAG_DATA: i32 = 104;
/// Largest message: well below MPI's 2 GiB count limit.
const CHUNK: usize = 1 << 30;
const NO_MORE: u64 = u64::MAX;
const DESCRIPTOR: usize = 32;

/// Ranks of one MPI job.
#[derive(Debug)]
pub struct MpiCluster {
    rank: usize,
    size: usize,
}

impl MpiCluster {
    /// The cluster of `MPI_COMM_WORLD`. MPI must be initialized with `MPI_THREAD_MULTIPLE`
    /// (by the caller, who owns the `Universe`).
    pub fn world() -> Self {
        let world = SimpleCommunicator::world();
        MpiCluster { rank: world.rank() as usize, size: world.size() as usize }
    }
}

/// Rank 0's source: its workers and the split server share one cursor.
struct RootSource<'a> {
    next: AtomicUsize,
    sizes: &'a [u64],
    progress: &'a Progress,
    others: usize,
}

impl SplitSource for RootSource<'_> {
    fn next(&self) -> Option<usize> {
        // Rank 0's own workers take from the cursor directly; the engine counts their progress.
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.sizes.len()).then_some(i)
    }

    /// Answers split requests until every other rank has said it is finished.
    fn serve(&self) {
        let world = SimpleCommunicator::world();
        let mut finished = 0;
        while finished < self.others {
            if let Some((msg, status)) = world.any_process().immediate_matched_probe_with_tag(TAG_REQUEST) {
                let mut ignored = 0u64;
                msg.matched_receive_into(&mut ignored);
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                let reply = if i < self.sizes.len() {
                    self.progress.bytes_mapped.fetch_add(self.sizes[i], Ordering::Relaxed);
                    self.progress.splits_done.fetch_add(1, Ordering::Relaxed);
                    i as u64
                } else {
                    NO_MORE
                };
                world.process_at_rank(status.source_rank()).send_with_tag(&reply, TAG_REPLY);
            } else if let Some((msg, _)) = world.any_process().immediate_matched_probe_with_tag(TAG_FINISHED)
            {
                let mut ignored = 0u64;
                msg.matched_receive_into(&mut ignored);
                finished += 1;
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }

    fn finish(&self) -> Result<()> {
        Ok(())
    }
}

struct RemoteSource;

impl SplitSource for RemoteSource {
    fn next(&self) -> Option<usize> {
        let world = SimpleCommunicator::world();
        let root = world.process_at_rank(0);
        root.send_with_tag(&0u64, TAG_REQUEST);
        let mut reply = 0u64;
        root.receive_into_with_tag(&mut reply, TAG_REPLY);
        (reply != NO_MORE).then_some(reply as usize)
    }

    fn finish(&self) -> Result<()> {
        SimpleCommunicator::world().process_at_rank(0).send_with_tag(&0u64, TAG_FINISHED);
        Ok(())
    }
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

fn encode(s: &OutSection<'_>) -> [u8; DESCRIPTOR] {
    let mut d = [0u8; DESCRIPTOR];
    d[..4].copy_from_slice(&s.run.to_le_bytes());
    d[4..8].copy_from_slice(&s.partition.to_le_bytes());
    d[8..16].copy_from_slice(&s.records.to_le_bytes());
    d[16..20].copy_from_slice(&s.blocks.to_le_bytes());
    d[24..32].copy_from_slice(&(s.bytes.len() as u64).to_le_bytes());
    d
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

    fn agree(&self, config: u64, fingerprint: u64) -> Result<()> {
        let world = SimpleCommunicator::world();
        let mine = [config, fingerprint];
        let mut all = vec![0u64; 2 * self.size];
        world.all_gather_into(&mine[..], &mut all[..]);
        if let Some(r) = (0..self.size).find(|&r| all[2 * r + 1] != fingerprint) {
            return Err(Error::Cluster(format!(
                "rank {r} routes keys differently (partitioner fingerprint {:016x}, rank {} has {fingerprint:016x}): \
                 all ranks must run the same spillway build on CPUs with the same features",
                all[2 * r + 1],
                self.rank
            )));
        }
        if let Some(r) = (0..self.size).find(|&r| all[2 * r] != config) {
            return Err(Error::Cluster(format!(
                "rank {r} has a different job configuration than rank {} (options, inputs or their sizes differ)",
                self.rank
            )));
        }
        Ok(())
    }

    fn split_source<'a>(&'a self, sizes: &'a [u64], progress: &'a Progress) -> Box<dyn SplitSource + 'a> {
        if self.rank == 0 {
            Box::new(RootSource { next: AtomicUsize::new(0), sizes, progress, others: self.size - 1 })
        } else {
            Box::new(RemoteSource)
        }
    }

    fn exchange(
        &self,
        outgoing: &[OutSection<'_>],
        owner: &dyn Fn(u32) -> usize,
        deliver: &mut dyn FnMut(InSection<'_>) -> Result<()>,
    ) -> Result<ExchangeStats> {
        let world = SimpleCommunicator::world();
        let n = self.size;
        let mut stats = ExchangeStats::default();
        // 0. Every rank has finished its map phase: the time a fast rank waits here is not
        // transfer time. Polled with sleeps, so that a waiting rank leaves the CPU to the
        // ranks still mapping (a blocking barrier busy-polls).
        let started = Instant::now();
        wait_for_all(&world);
        stats.times.wait = started.elapsed().as_secs_f64();
        // 1. Descriptors, all-to-all-v.
        let started = Instant::now();
        let mut per_dest: Vec<Vec<&OutSection<'_>>> = vec![Vec::new(); n];
        for s in outgoing {
            per_dest[owner(s.partition)].push(s);
        }
        // Both buffers get a real allocation even when empty: two empty vectors share one
        // dangling pointer, and MPI refuses a send buffer equal to the receive buffer.
        let mut send_desc = Vec::with_capacity(DESCRIPTOR);
        let mut send_counts = vec![0i32; n];
        for (d, sections) in per_dest.iter().enumerate() {
            for s in sections {
                send_desc.extend_from_slice(&encode(s));
            }
            send_counts[d] = to_count(sections.len() * DESCRIPTOR, "descriptor list")?;
        }
        let mut recv_counts = vec![0i32; n];
        world.all_to_all_into(&send_counts[..], &mut recv_counts[..]);
        let send_displs = displacements(&send_counts);
        let recv_displs = displacements(&recv_counts);
        let total: i32 = recv_counts.iter().sum();
        let mut recv_desc = vec![0u8; (total as usize).max(1)];
        {
            let sp = Partition::new(&send_desc[..], &send_counts[..], &send_displs[..]);
            let mut rp = PartitionMut::new(&mut recv_desc[..], &recv_counts[..], &recv_displs[..]);
            world.all_to_all_varcount_into(&sp, &mut rp);
        }
        stats.times.descriptors = started.elapsed().as_secs_f64();

        // 2. Own sections need no messages.
        let started = Instant::now();
        for s in &per_dest[self.rank] {
            deliver(InSection::local(self.rank, s))?;
        }
        stats.times.local = started.elapsed().as_secs_f64();

        // 3. Section bytes: non-blocking sends from the mappings, blocking receives in order.
        let mut buffer = Aligned::new();
        let data_started = Instant::now();
        let mut writing = Duration::ZERO;
        let result = mpi::request::scope(|scope| -> Result<()> {
            let mut requests = Vec::new();
            for (d, sections) in per_dest.iter().enumerate() {
                if d == self.rank {
                    continue;
                }
                let dest = world.process_at_rank(d as i32);
                for s in sections {
                    for chunk in s.bytes.chunks(CHUNK) {
                        requests.push(dest.immediate_send_with_tag(scope, chunk, TAG_DATA));
                        stats.sent += chunk.len() as u64;
                        stats.times.messages += 1;
                    }
                }
            }
            let mut outcome = Ok(());
            for source in (0..n).filter(|&s| s != self.rank) {
                let from = world.process_at_rank(source as i32);
                let start = recv_displs[source] as usize;
                let end = start + recv_counts[source] as usize;
                for d in recv_desc[start..end].chunks_exact(DESCRIPTOR) {
                    let u32_at = |i: usize| u32::from_le_bytes(d[i..i + 4].try_into().expect("4 bytes"));
                    let u64_at = |i: usize| u64::from_le_bytes(d[i..i + 8].try_into().expect("8 bytes"));
                    let len = u64_at(24) as usize;
                    buffer.clear();
                    buffer.resize(len, 0);
                    for at in (0..len).step_by(CHUNK) {
                        let piece = &mut buffer[at..(at + CHUNK).min(len)];
                        from.receive_into_with_tag(piece, TAG_DATA);
                    }
                    stats.received += len as u64;
                    if outcome.is_ok() {
                        let started = Instant::now();
                        outcome = deliver(InSection {
                            source,
                            run: u32_at(0),
                            partition: u32_at(4),
                            records: u64_at(8),
                            blocks: u32_at(16),
                            bytes: &buffer,
                        });
                        writing += started.elapsed();
                    }
                }
            }
            for request in requests {
                request.wait();
            }
            outcome
        });
        let data = data_started.elapsed();
        stats.times.data = data.as_secs_f64();
        stats.times.write = writing.as_secs_f64();
        stats.times.transfer = (data - writing).as_secs_f64();
        stats.times.chunk_bytes = CHUNK as u64;
        result.map(|()| stats)
    }

    fn gather(&self, bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        let world = SimpleCommunicator::world();
        let root = world.process_at_rank(0);
        let len = to_count(bytes.len(), "metrics")?;
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
            lens.iter().zip(&displs).map(|(&l, &d)| all[d as usize..(d + l) as usize].to_vec()).collect(),
        ))
    }
}
