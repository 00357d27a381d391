//! Arbitrary bytes, exactly as given, parsed as a resumable job's journal. Mutations rarely
//! keep the xxh3 checksums right, so this target mostly covers the magic, the record headers
//! and the checksums; `journal_framed` covers the records behind them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    spillway_shuffle_fuzz::journal::exercise(data);
});
