//! Word count collected in memory: the output comes back to the caller as `(key, output
//! bytes)` pairs in key order ([`Sink::collect`]), and the ten most frequent words are
//! printed.
//!
//! ```sh
//! cargo run --release -p spillway-engine --example collect -- testdata/gutenberg
//! ```

use spillway_engine::{Engine, Inputs, OutputSpec, Sink, jobs::WordCount, text::WordMode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(input) = std::env::args().nth(1) else {
        return Err("usage: collect INPUT".into());
    };
    let engine = Engine::builder().memory_budget(256 << 20).build()?;
    let (sink, collected) = Sink::collect();
    engine.run(&WordCount { mode: WordMode::Unicode }, &Inputs::new([input])?, &OutputSpec::Sink(sink))?;
    // Each key's output is the line `word<TAB>count\n` that an output file would hold.
    let mut counts: Vec<(u64, Vec<u8>)> = collected
        .take()
        .into_iter()
        .map(|(word, line)| {
            let count =
                line[word.len() + 1..line.len() - 1].iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'));
            (count, word)
        })
        .collect();
    counts.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    for (count, word) in counts.iter().take(10) {
        println!("{count}\t{}", String::from_utf8_lossy(word));
    }
    Ok(())
}
