//! Lines of the input, each framed as one record with a correct length and xxh3 (whatever
//! follows the last line break appended raw), parsed as a journal: mutations reach the JSON
//! records, the record-order check and torn tails.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    spillway_shuffle_fuzz::journal::exercise(&spillway_shuffle_fuzz::journal::frame(data));
});
