//! Arbitrary bytes with every locatable frame and footer checksum repaired, then opened as a run
//! (`u64`, `Vec<u8>` and `String` values): mutations reach the rkyv validation, the block and
//! key-order checks and, when the run is accepted, iteration and merging.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    spillway_shuffle_fuzz::fix_checksums(&mut bytes);
    spillway_shuffle_fuzz::exercise(&bytes);
});
