//! Word count over a directory (or files), into one sorted file, with the built-in job.
//!
//! ```sh
//! cargo run --release -p spillway-engine --example wordcount -- testdata/gutenberg counts.tsv
//! ```

use spillway_engine::{Engine, Inputs, OutputSpec, jobs::WordCount, text::WordMode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        return Err("usage: wordcount INPUT OUTPUT_FILE".into());
    };
    let engine = Engine::builder().partitions(16).memory_budget(256 << 20).build()?;
    let inputs = Inputs::new([input])?;
    let metrics =
        engine.run(&WordCount { mode: WordMode::Unicode }, &inputs, &OutputSpec::File(output.into()))?;
    eprintln!("{} words, {} distinct, {} spills", metrics.map_records, metrics.output_keys, metrics.spills);
    Ok(())
}
