//! Arbitrary bytes, exactly as given, opened as a run (`u64`, `Vec<u8>` and `String` values).
//! Mutations rarely keep the xxh3 checksums right, so this target mostly covers the checks up
//! to and including them; `run_reader_checksummed` covers what lies behind them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    spillway_shuffle_fuzz::exercise(data);
});
