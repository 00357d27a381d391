//! Capacity of rank 0's split server: under `mpirun -n P`, ranks 1..P only ask for splits
//! (no mapping) from rank 0, whose server thread answers them (rank 0 maps nothing either).
//! Prints one line on rank 0: ranks, threads per rank, the batch cap, splits, requests,
//! seconds, requests/s, splits/s, and the CPU seconds of rank 0 and of the other ranks
//! together (user + system: how much the waiting costs).
//!
//! ```sh
//! cargo build --release -p spillway-bench --features mpi --bin split-server-bench
//! for p in 2 4 8 16; do for b in 1 0; do
//!   mpirun --oversubscribe -n $p -x SPILLWAY_SPLIT_BATCH=$b \
//!     target/release/split-server-bench --splits 200000 --threads 8
//! done; done
//! ```
//!
//! `SPILLWAY_SPLIT_BATCH=1` turns batching off (one split per request); unset or `0`, a
//! request gets up to its rank's threads (guided self-scheduling).

use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Parser;
use mpi::collective::SystemOperation;
use mpi::traits::*;
use spillway_engine::Progress;
use spillway_engine::cluster::{BATCH_ENV, Cluster, FixedSplits, MpiCluster, SERVED};

/// Rank 0's split server under load from every other rank.
#[derive(Debug, Parser)]
struct Args {
    /// Splits handed out in all.
    #[arg(long, default_value_t = 200_000)]
    splits: usize,
    /// Threads asking on each rank other than 0.
    #[arg(long, default_value_t = 8)]
    threads: usize,
}

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let Some((universe, level)) = mpi::initialize_with_threading(mpi::Threading::Multiple) else {
        bail!("MPI was already initialized");
    };
    if level < mpi::Threading::Multiple {
        bail!("the MPI library gives thread level {level:?}; the split server needs Multiple");
    }
    let world = universe.world();
    let cluster = MpiCluster::world()?;
    if cluster.size() < 2 {
        bail!("run under mpirun with at least 2 ranks");
    }
    let sizes = vec![1u64; args.splits];
    let list = FixedSplits(&sizes);
    let progress = Progress::default();
    let source = cluster.split_source(&list, args.threads, &progress);
    world.barrier();
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let mut mine = 0u64;
    if cluster.rank() == 0 {
        source.serve();
    } else {
        mine = std::thread::scope(|s| {
            let workers: Vec<_> = (0..args.threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut n = 0u64;
                        while source.next().is_some() {
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("a worker")).sum()
        });
        source.finish()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let used = cpu_seconds() - cpu;
    let root = world.process_at_rank(0);
    let (mut mapped, mut others_cpu) = (0u64, 0f64);
    let theirs = if cluster.rank() == 0 { 0.0 } else { used };
    if cluster.rank() == 0 {
        root.reduce_into_root(&mine, &mut mapped, SystemOperation::sum());
        root.reduce_into_root(&theirs, &mut others_cpu, SystemOperation::sum());
        let (requests, splits) =
            (SERVED.requests.load(Ordering::Relaxed), SERVED.splits.load(Ordering::Relaxed));
        assert_eq!(mapped as usize, args.splits, "every split handed out exactly once");
        assert_eq!(splits, args.splits);
        let cap = std::env::var(BATCH_ENV).unwrap_or_else(|_| "-".into());
        println!(
            "ranks {} threads {} batch-cap {cap} splits {splits} requests {requests} seconds {seconds:.3} \
             requests/s {:.0} splits/s {:.0} cpu-rank0 {used:.2} cpu-others {others_cpu:.2}",
            cluster.size(),
            args.threads,
            requests as f64 / seconds,
            splits as f64 / seconds,
        );
    } else {
        root.reduce_into(&mine, SystemOperation::sum());
        root.reduce_into(&theirs, SystemOperation::sum());
    }
    Ok(())
}
