//! A job whose value is a struct: for every word, how often it occurs and the length of the
//! longest line it occurs in. The value type derives rkyv's traits through the engine's
//! re-export, so the job depends on `spillway-engine` alone.
//!
//! ```sh
//! cargo run --release -p spillway-engine --example struct_value -- testdata/gutenberg stats.tsv
//! ```

use std::io::Write;

use spillway_engine::text::{WordMode, for_each_word};
use spillway_engine::{
    ArchivedValue, Combiner, Emitter, Engine, Inputs, Job, JobError, OutputSpec, Split, Values, rkyv,
    to_owned,
};

/// The value: a count and a maximum, both folded by `combine`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug)]
#[rkyv(crate = spillway_engine::rkyv)]
struct WordStats {
    count: u64,
    longest_line: u32,
}

struct Stats;

impl Job for Stats {
    type Value = WordStats;
    type Combiner = Self;

    fn combiner(&self) -> Option<&Self> {
        Some(self)
    }

    fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, WordStats>) -> Result<(), JobError> {
        for line in split.data.split(|&b| b == b'\n') {
            let longest_line = u32::try_from(line.len()).unwrap_or(u32::MAX);
            for_each_word(line, WordMode::Unicode, |word| {
                emit.emit(word, WordStats { count: 1, longest_line })
            });
        }
        Ok(())
    }

    fn reduce(
        &self,
        key: &[u8],
        values: Values<'_, '_, WordStats>,
        out: &mut dyn Write,
    ) -> Result<(), JobError> {
        let mut total = WordStats { count: 0, longest_line: 0 };
        for value in values {
            let value: &ArchivedValue<WordStats> = value;
            self.combine(&mut total, to_owned::<WordStats>(value));
        }
        out.write_all(key)?;
        writeln!(out, "\t{}\t{}", total.count, total.longest_line)?;
        Ok(())
    }
}

impl Combiner<WordStats> for Stats {
    fn combine(&self, acc: &mut WordStats, value: WordStats) {
        acc.count += value.count;
        acc.longest_line = acc.longest_line.max(value.longest_line);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        return Err("usage: struct_value INPUT OUTPUT_FILE".into());
    };
    let engine = Engine::builder().partitions(16).memory_budget(256 << 20).build()?;
    let metrics = engine.run(&Stats, &Inputs::new([input])?, &OutputSpec::File(output.into()))?;
    eprintln!("{} words, {} distinct", metrics.map_records, metrics.output_keys);
    Ok(())
}
