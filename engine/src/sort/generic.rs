//! The generic path: sorting records as a MapReduce job run by the engine
//! ([`RecordSortJob`]), with a range partitioner sampled from the input
//! ([`sample_partitioner`]).

use std::io::Write;

use spillway_shuffle::RangePartitioner;

use super::SAMPLE_PER_PARTITION;
use super::records::Records;
use crate::error::{ConfigError, JobError, Result};
use crate::input::{Inputs, Split, SplitMode};
use crate::job::{Emitter, Job, NoCombiner, Values};

/// Sorting records as a generic MapReduce job: map emits every whole record as a key (value
/// `()`), reduce writes each key once per value. Run it with a range partitioner from
/// [`sample_partitioner`] so that part files concatenate in order:
///
/// ```
/// use spillway_engine::sort::{RecordSortJob, sample_partitioner};
/// use spillway_engine::{Engine, Inputs, OutputSpec};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("in"), b"c2b1a3b1")?; // four 2-byte records
/// let inputs = Inputs::new([dir.path().join("in")])?;
/// let partitioner = sample_partitioner(&inputs, 2, 3)?;
/// let out = dir.path().join("sorted");
/// let engine = Engine::builder().threads(2).build()?;
/// engine.run_with(&RecordSortJob { record_size: 2 }, &inputs, &partitioner, &OutputSpec::File(out.clone()))?;
/// assert_eq!(std::fs::read(out)?, b"a3b1b1c2");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RecordSortJob {
    /// Record length in bytes.
    pub record_size: usize,
}

impl Job for RecordSortJob {
    type Value = ();
    type Combiner = NoCombiner;

    fn combiner(&self) -> Option<&NoCombiner> {
        None
    }

    fn split_mode(&self) -> SplitMode {
        SplitMode::Records(self.record_size)
    }

    fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, ()>) -> Result<(), JobError> {
        for record in split.data.chunks_exact(self.record_size.max(1)) {
            emit.emit(record, ());
        }
        Ok(())
    }

    fn reduce(&self, key: &[u8], values: Values<'_, '_, ()>, out: &mut dyn Write) -> Result<(), JobError> {
        for _ in values {
            out.write_all(key)?;
        }
        Ok(())
    }
}

/// A range partitioner over `partitions` partitions whose boundaries are whole records,
/// picked at the quantiles of [`SAMPLE_PER_PARTITION`] evenly spaced records per partition.
/// Whole records (not just keys) as boundaries keep partitions balanced when many records
/// share a key.
///
/// # Errors
///
/// An input is not a whole number of records ([`Error::Input`], naming it), or `partitions`
/// or `record_size` is zero.
///
/// [`Error::Input`]: crate::Error::Input
pub fn sample_partitioner(inputs: &Inputs, record_size: usize, partitions: u32) -> Result<RangePartitioner> {
    if record_size == 0 {
        return Err(ConfigError("record size must be at least 1 byte".into()).into());
    }
    let records = Records::new(inputs, record_size)?;
    let mut sample = records.sample(SAMPLE_PER_PARTITION * partitions as usize, Some(inputs));
    Ok(RangePartitioner::from_sample(&mut sample, partitions)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutputSpec;
    use crate::output::part_name;
    use crate::sort::tests::random_records;
    use crate::sort::{RecordShape, sort_records};

    #[test]
    fn generic_job_gives_the_same_parts() {
        let data = random_records(9, 4000, 100, 2);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in");
        std::fs::write(&p, &data).unwrap();
        let inputs = Inputs::new([&p]).unwrap();
        let partitioner = sample_partitioner(&inputs, 100, 4).unwrap();
        // One engine for both paths (out of core for both).
        let builder = crate::Engine::builder().threads(2).partitions(4).memory_budget(256 << 10);
        let engine = builder.clone().build().unwrap();
        let job = RecordSortJob { record_size: 100 };
        engine.run_with(&job, &inputs, &partitioner, &OutputSpec::Dir(dir.path().join("g"))).unwrap();
        sort_records(&engine, &inputs, &OutputSpec::Dir(dir.path().join("s")), RecordShape::default())
            .unwrap();
        for part in 0..4 {
            let g = std::fs::read(dir.path().join("g").join(part_name(part))).unwrap();
            let s = std::fs::read(dir.path().join("s").join(part_name(part))).unwrap();
            assert!(g == s, "part {part}");
            assert!(!g.is_empty());
        }
        // Without sync, both paths replace an existing file with the same bytes, leaving no
        // temporary file.
        let engine = builder.sync(false).build().unwrap();
        let (g, s) = (dir.path().join("g.out"), dir.path().join("s.out"));
        std::fs::write(&g, b"old").unwrap();
        std::fs::write(&s, b"old").unwrap();
        engine.run_with(&job, &inputs, &partitioner, &OutputSpec::File(g.clone())).unwrap();
        sort_records(&engine, &inputs, &OutputSpec::File(s.clone()), RecordShape::default()).unwrap();
        let (g, s) = (std::fs::read(g).unwrap(), std::fs::read(s).unwrap());
        assert!(g == s && g.len() == data.len());
        assert_eq!(crate::testutil::names(dir.path()), ["g", "g.out", "in", "s", "s.out"]);
    }
}
