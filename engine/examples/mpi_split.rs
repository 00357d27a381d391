//! An MPI program embedding the engine (feature `mpi`): it initializes MPI itself, runs a word
//! count on the world, then one on each half of a split world at the same time, and goes on
//! using MPI afterwards (an all-reduce checking the halves' totals against the world's).
//!
//! ```sh
//! cargo build -p spillway-engine --features mpi --example mpi_split
//! mpirun -n 4 target/debug/examples/mpi_split OUT_DIR testdata/gutenberg
//! ```
//!
//! It writes `OUT_DIR/world.tsv`, `OUT_DIR/half-0.tsv` and (with 2 ranks or more)
//! `OUT_DIR/half-1.tsv`: the same bytes, `spillway wordcount`'s. Each engine runs on its own
//! duplicate of the communicator it is given, so its messages never mix with this program's,
//! and it neither initializes nor finalizes MPI.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mpi::collective::SystemOperation;
use mpi::topology::Color;
use mpi::traits::*;
use spillway_engine::cluster::MpiCluster;
use spillway_engine::{Engine, Inputs, Metrics, OutputSpec, jobs::WordCount, text::WordMode};

/// Runs the word count on the ranks of `comm` into `out`; every rank gets the metrics (rank 0's
/// hold the job's totals).
fn word_count(
    comm: &impl Communicator,
    inputs: &[PathBuf],
    out: &Path,
) -> Result<Metrics, Box<dyn std::error::Error>> {
    let cluster = Arc::new(MpiCluster::new(comm)?);
    let engine =
        Engine::builder().threads(2).partitions(8).memory_budget(64 << 20).cluster(cluster).build()?;
    let metrics = engine.run(
        &WordCount { mode: WordMode::Unicode },
        &Inputs::new(inputs)?,
        &OutputSpec::File(out.into()),
    )?;
    // Dropping the engine frees its communicator (before MPI_Finalize, which `universe` does).
    Ok(metrics)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [out, inputs @ ..] = &args[..] else {
        return Err("usage: mpi_split OUT_DIR INPUT...".into());
    };
    let (universe, level) =
        mpi::initialize_with_threading(mpi::Threading::Multiple).ok_or("MPI was already initialized")?;
    if level < mpi::Threading::Multiple {
        return Err(format!("MPI provides thread level {level:?}; the engine needs Multiple").into());
    }
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    if rank == 0 {
        std::fs::create_dir_all(out)?;
    }
    world.barrier();

    let whole = word_count(&world, inputs, &out.join("world.tsv"))?;

    // Two halves, each running its own job at the same time as the other.
    let color = rank * 2 / size;
    let half = world.split_by_color(Color::with_value(color)).ok_or("every rank has a color")?;
    let metrics = word_count(&half, inputs, &out.join(format!("half-{color}.tsv")))?;

    // MPI is still the program's: each half's rank 0 contributes its job's total records,
    // which must add up to the world's total once per half.
    let mine = if half.rank() == 0 { metrics.map_records } else { 0 };
    let mut sum = 0u64;
    world.all_reduce_into(&mine, &mut sum, SystemOperation::sum());
    if rank == 0 {
        let halves = size.min(2) as u64;
        if sum != halves * whole.map_records {
            return Err(format!("the halves counted {sum} words, the world {}", whole.map_records).into());
        }
        println!("{size} ranks: world and {halves} halves each counted {} words", whole.map_records);
    }
    Ok(())
}
