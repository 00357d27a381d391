//! Throughput of the word tokenizer (`text::for_each_word`) on one thread, in both modes, on
//! three kinds of text, each repeated to 32 MB (larger than the caches):
//!
//! - `english`: the bundled Gutenberg books (`testdata/gutenberg`), pure ASCII;
//! - `accented`: the same books with the first vowel of every 8th word accented (about the
//!   density of non-ASCII bytes in French or German prose);
//! - `foreign`: Cyrillic, Greek and CJK prose, mostly non-ASCII (Unicode mode only).
//!
//! Run with `cargo bench -p spillway-engine --bench text`; throughput is input bytes. The
//! ratio of `english/unicode` to `english/ascii` is the cost of Unicode mode on ASCII text.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spillway_engine::text::{WordMode, for_each_word};

/// Bytes of each text.
const TARGET: usize = 32 << 20;

fn gutenberg() -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/gutenberg");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("testdata/gutenberg")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    paths.iter().flat_map(|p| std::fs::read(p).expect("read corpus")).collect()
}

fn repeat(piece: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TARGET + piece.len());
    while out.len() < TARGET {
        out.extend_from_slice(piece);
    }
    out
}

/// `corpus` with the first vowel of every 8th word accented.
fn accented(corpus: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(corpus.len() * 11 / 10);
    let mut word_no = 0usize;
    let mut in_word = false;
    let mut done = false;
    for &b in corpus {
        let letter = b.is_ascii_alphabetic();
        if letter && !in_word {
            word_no += 1;
            done = !word_no.is_multiple_of(8);
        }
        in_word = letter;
        if !done && matches!(b, b'a' | b'e' | b'o' | b'u') {
            let accented = match b {
                b'a' => "à",
                b'e' => "é",
                b'o' => "ö",
                _ => "ü",
            };
            out.extend_from_slice(accented.as_bytes());
            done = true;
        } else {
            out.push(b);
        }
    }
    out
}

const FOREIGN: &str = "Война и мир — роман-эпопея Льва Николаевича Толстого, описывающий русское \
     общество в эпоху войн против Наполеона. Ἐν ἀρχῇ ἦν ὁ λόγος, καὶ ὁ λόγος ἦν \
     πρὸς τὸν θεόν. 吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。\n";

fn tokenizer(c: &mut Criterion) {
    let corpus = gutenberg();
    let texts = [
        ("english", repeat(&corpus), &[WordMode::Ascii, WordMode::Unicode][..]),
        ("accented", repeat(&accented(&corpus)), &[WordMode::Ascii, WordMode::Unicode][..]),
        ("foreign", repeat(FOREIGN.as_bytes()), &[WordMode::Unicode][..]),
    ];
    let mut group = c.benchmark_group("for_each_word");
    for (name, text, modes) in &texts {
        group.throughput(Throughput::Bytes(text.len() as u64));
        for &mode in *modes {
            let id = format!("{name}/{}", if mode == WordMode::Ascii { "ascii" } else { "unicode" });
            group.bench_function(id, |b| {
                b.iter(|| {
                    let mut count = 0u64;
                    for_each_word(black_box(text), mode, |w| count += w.len() as u64 & 1);
                    count
                });
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = text;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    targets = tokenizer
}
criterion_main!(text);
