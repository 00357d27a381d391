//! What the journal targets do with their input: [`exercise`] hands the bytes to
//! [`spillway_engine::journal::parse`] and checks what it returns; [`frame`] turns lines of
//! text into a journal whose records all have a correct header, so that mutations reach the
//! JSON records and the record-order check instead of stopping at a checksum.

use spillway_engine::journal::{MAGIC, Parsed, Record, encode, parse};
use xxhash_rust::xxh3::xxh3_64;

use crate::measure;

/// How many bytes `parse` may hold at once per byte of input, plus [`ALLOC_SLACK`]. JSON
/// builds trees: `[0,0,0]` is 2 bytes per `serde_json::Value` of 32, serde's internally
/// tagged enums buffer the object first, and vectors grow by doubling, so a few dozen times
/// the input is what honest parsing costs. An allocation sized by a length the input
/// announces (rather than by bytes it holds) would go far beyond.
pub const ALLOC_FACTOR: usize = 256;

/// Bytes `parse` may allocate whatever its input (messages, serde's first buffers).
pub const ALLOC_SLACK: usize = 64 << 10;

/// Parses `data` as a journal and checks every promise of `parse`.
///
/// # Panics
///
/// On any finding: a panic inside `parse`; `valid_len` beyond the input, or a prefix up to it
/// that does not parse to the same records, cleanly; a first record that is not `Begin` (or
/// a `Begin` after it); records that do not re-encode to a journal parsing back to the same
/// records; a prefix of the input that gives records other than a prefix of the whole's; more
/// memory than [`ALLOC_FACTOR`] bytes per byte of input.
pub fn exercise(data: &[u8]) -> Parsed {
    let (parsed, usage) = measure(|| parse(data));
    let bound = ALLOC_FACTOR * data.len() + ALLOC_SLACK;
    assert!(usage.peak <= bound, "parsing {} bytes held {} bytes at once", data.len(), usage.peak);

    let len = data.len() as u64;
    assert!(parsed.valid_len <= len, "valid_len {} past the end of {len} bytes", parsed.valid_len);
    let whole = parsed.valid_len == len && len >= MAGIC.len() as u64;
    assert_eq!(
        parsed.stopped.is_none(),
        whole,
        "stopped {:?} at {} of {len}",
        parsed.stopped,
        parsed.valid_len
    );
    if let Some(stopped) = &parsed.stopped {
        assert!(stopped.contains(" at byte "), "a reason without an offset: {stopped}");
    }
    match parsed.records.split_first() {
        Some((Record::Begin(_), rest)) => {
            assert!(!rest.iter().any(|r| matches!(r, Record::Begin(_))), "a second Begin");
        }
        Some((first, _)) => panic!("the first record is not Begin: {first:?}"),
        None => assert!(parsed.valid_len <= MAGIC.len() as u64),
    }

    // Appending goes on from `valid_len`: the bytes before it are exactly the records.
    let kept = parse(&data[..parsed.valid_len as usize]);
    if parsed.valid_len > 0 {
        assert_eq!((&kept.records, kept.stopped.as_deref()), (&parsed.records, None), "up to valid_len");
    }

    // The records re-encode to a journal that reads back the same.
    let mut again = MAGIC.to_vec();
    for record in &parsed.records {
        again.extend(encode(record));
    }
    let reread = parse(&again);
    assert_eq!(
        (&reread.records, reread.valid_len, reread.stopped.as_deref()),
        (&parsed.records, again.len() as u64, None),
        "re-encoded records"
    );

    // A prefix (a journal read before the rest was appended) gives a prefix of the records.
    for cut in cuts(data.len(), parsed.valid_len as usize) {
        let part = parse(&data[..cut]);
        assert!(
            part.records.len() <= parsed.records.len()
                && part.records[..] == parsed.records[..part.records.len()],
            "the first {cut} bytes gave {} records, not a prefix of the {} of {len}",
            part.records.len(),
            parsed.records.len()
        );
        assert!(part.valid_len <= cut as u64);
    }
    parsed
}

/// Where [`exercise`] cuts the input: around the magic, `valid_len` and the middle.
fn cuts(len: usize, valid_len: usize) -> Vec<usize> {
    let mut cuts = vec![0, MAGIC.len() - 1, MAGIC.len(), MAGIC.len() + 11, len / 3, len / 2];
    cuts.extend([valid_len.saturating_sub(1), valid_len + 1, valid_len + 12, len.saturating_sub(1)]);
    cuts.retain(|&c| c <= len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// A journal made of `data`'s lines: the magic, then each line ending in `\n` (without it) as
/// one record's payload under a correct header (length and xxh3), then whatever follows the
/// last `\n` as raw bytes (a torn or damaged tail).
pub fn frame(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + data.len() + 12 * (data.len() / 2 + 1));
    out.extend_from_slice(MAGIC);
    let mut lines = data.split(|&b| b == b'\n');
    let tail = lines.next_back().unwrap_or_default();
    for payload in lines {
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&xxh3_64(payload).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out.extend_from_slice(tail);
    out
}

/// The input of the `journal_framed` target that [`frame`]s to the journal of `records`
/// (JSON has no raw line breaks, so each record is one line).
pub fn unframed(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        let framed = encode(record);
        out.extend_from_slice(&framed[12..]);
        out.push(b'\n');
    }
    out
}
