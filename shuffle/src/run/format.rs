//! Byte layout of run format version 2 (and version 1, still read): constants, and
//! encoding/decoding of the fixed-size pieces (file header, frame header, footer entries,
//! trailer). See `run/FORMAT.md`.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Magic bytes at the start of every run file.
pub const FILE_MAGIC: [u8; 8] = *b"SPILLWAY";
/// Magic bytes at the very end of every run file of version 2 (its last byte is the version).
pub const END_MAGIC: [u8; 8] = *b"SPWYRUN\x02";
/// Magic bytes at the very end of a run file of version 1.
pub const END_MAGIC_V1: [u8; 8] = *b"SPWYRUN\x01";
/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build reads.
pub const OLDEST_VERSION: u32 = 1;
/// Size of the file header.
pub const FILE_HEADER_LEN: usize = 16;
/// Size of a frame header (in front of every block).
pub const FRAME_HEADER_LEN: usize = 16;
/// Size of one footer entry (one per non-empty section; version 1: one per partition).
pub const ENTRY_LEN: usize = 32;
/// Size of the trailer (the last bytes of the file).
pub const TRAILER_LEN: usize = 32;
/// Blocks are cut when their serialized size would pass this many bytes.
pub const DEFAULT_BLOCK_TARGET: usize = 256 << 10;
/// Hard upper bound on one block's payload (rkyv's 32-bit relative pointers allow 2 GiB).
pub const MAX_BLOCK_LEN: usize = 1 << 30;
/// Hard upper bound on one key.
pub const MAX_KEY_LEN: usize = 256 << 20;

/// Rounds `n` up to the block alignment (16).
pub const fn pad16(n: usize) -> usize {
    (n + 15) & !15
}

/// The file header: magic, version, and the archived value's size and alignment (a cheap
/// check that a run is read with the value type it was written with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// Format version.
    pub version: u32,
    /// `size_of::<Archived<V>>()`, saturated to `u16::MAX`.
    pub value_size: u16,
    /// `align_of::<Archived<V>>()`.
    pub value_align: u16,
}

impl FileHeader {
    /// The header for values of archived size `size` and alignment `align`.
    pub fn for_value(size: usize, align: usize) -> Self {
        FileHeader {
            version: FORMAT_VERSION,
            value_size: u16::try_from(size).unwrap_or(u16::MAX),
            value_align: u16::try_from(align).unwrap_or(u16::MAX),
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; FILE_HEADER_LEN] {
        let mut out = [0u8; FILE_HEADER_LEN];
        out[..8].copy_from_slice(&FILE_MAGIC);
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[12..14].copy_from_slice(&self.value_size.to_le_bytes());
        out[14..16].copy_from_slice(&self.value_align.to_le_bytes());
        out
    }

    /// Decodes a header; `None` when the magic is wrong.
    pub fn decode(bytes: &[u8; FILE_HEADER_LEN]) -> Option<Self> {
        if bytes[..8] != FILE_MAGIC {
            return None;
        }
        Some(FileHeader {
            version: u32_at(bytes, 8),
            value_size: u16::from_le_bytes([bytes[12], bytes[13]]),
            value_align: u16::from_le_bytes([bytes[14], bytes[15]]),
        })
    }
}

/// The header in front of every block: payload length, record count, checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Exact length of the rkyv payload (zero padding to 16 bytes follows it).
    pub payload_len: u32,
    /// Records in the block.
    pub records: u32,
    /// [`frame_checksum`] of the payload and the two fields above.
    pub checksum: u64,
}

impl FrameHeader {
    /// Encodes the frame header.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut out = [0u8; FRAME_HEADER_LEN];
        out[..4].copy_from_slice(&self.payload_len.to_le_bytes());
        out[4..8].copy_from_slice(&self.records.to_le_bytes());
        out[8..16].copy_from_slice(&self.checksum.to_le_bytes());
        out
    }

    /// Decodes a frame header.
    pub fn decode(bytes: &[u8]) -> Self {
        FrameHeader { payload_len: u32_at(bytes, 0), records: u32_at(bytes, 4), checksum: u64_at(bytes, 8) }
    }

    /// Bytes the whole frame occupies: header, payload, padding.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + pad16(self.payload_len as usize)
    }
}

/// The checksum of one block: xxh3-64 of the payload, seeded with the length and record
/// count, so that a flipped bit in the frame header is caught too.
pub fn frame_checksum(payload: &[u8], records: u32) -> u64 {
    xxh3_64_with_seed(payload, ((payload.len() as u64) << 32) | u64::from(records))
}

/// Where one partition's section lies, and what it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SectionEntry {
    /// Offset of the section's first frame from the start of the file.
    pub offset: u64,
    /// Length of the section in bytes (frames with their padding).
    pub len: u64,
    /// Records in the section.
    pub records: u64,
    /// Blocks (frames) in the section.
    pub blocks: u32,
    /// The partition (version 1 entries hold 0 here: their place in the footer says it).
    pub partition: u32,
}

impl SectionEntry {
    /// Encodes the entry.
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[..8].copy_from_slice(&self.offset.to_le_bytes());
        out[8..16].copy_from_slice(&self.len.to_le_bytes());
        out[16..24].copy_from_slice(&self.records.to_le_bytes());
        out[24..28].copy_from_slice(&self.blocks.to_le_bytes());
        out[28..32].copy_from_slice(&self.partition.to_le_bytes());
        out
    }

    /// Decodes an entry.
    pub fn decode(bytes: &[u8]) -> Self {
        SectionEntry {
            offset: u64_at(bytes, 0),
            len: u64_at(bytes, 8),
            records: u64_at(bytes, 16),
            blocks: u32_at(bytes, 24),
            partition: u32_at(bytes, 28),
        }
    }
}

/// The last [`TRAILER_LEN`] bytes of a run.
///
/// Version 2: `partitions u32 | entries u32 | total records u64 | footer checksum u64 |
/// "SPWYRUN\x02"`. Version 1: `partitions u32 | version u32 | ... | "SPWYRUN\x01"`, one entry
/// per partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Number of partitions.
    pub partitions: u32,
    /// Footer entries: the non-empty sections (version 1: every partition).
    pub entries: u32,
    /// Format version (from the end magic, and in version 1 repeated in the trailer, so a
    /// truncated file is told from a foreign one).
    pub version: u32,
    /// Records in the whole run.
    pub total_records: u64,
    /// xxh3-64 of the footer entries followed by the first 16 bytes of the trailer.
    pub footer_checksum: u64,
}

impl Trailer {
    /// Encodes a version 2 trailer for `entries` (already encoded), computing the footer
    /// checksum.
    pub fn encode(partitions: u32, total_records: u64, entries: &[u8]) -> [u8; TRAILER_LEN] {
        let mut out = [0u8; TRAILER_LEN];
        out[..4].copy_from_slice(&partitions.to_le_bytes());
        out[4..8].copy_from_slice(&((entries.len() / ENTRY_LEN) as u32).to_le_bytes());
        out[8..16].copy_from_slice(&total_records.to_le_bytes());
        let sum = footer_checksum(entries, &out[..16]);
        out[16..24].copy_from_slice(&sum.to_le_bytes());
        out[24..32].copy_from_slice(&END_MAGIC);
        out
    }

    /// Decodes a trailer of either version; `None` when the end magic is neither.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let partitions = u32_at(bytes, 0);
        let magic: [u8; 8] = bytes[24..32].try_into().expect("8 bytes");
        let (entries, version) = match magic {
            END_MAGIC => (u32_at(bytes, 4), 2),
            END_MAGIC_V1 => (partitions, u32_at(bytes, 4)),
            _ => return None,
        };
        Some(Trailer {
            partitions,
            entries,
            version,
            total_records: u64_at(bytes, 8),
            footer_checksum: u64_at(bytes, 16),
        })
    }
}

/// The checksum over the footer entries and the trailer's leading fields.
pub fn footer_checksum(entries: &[u8], trailer_head: &[u8]) -> u64 {
    let mut buf = Vec::with_capacity(entries.len() + trailer_head.len());
    buf.extend_from_slice(entries);
    buf.extend_from_slice(trailer_head);
    xxh3_64(&buf)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Recomputes every checksum of the run bytes `bytes` that can be located — each frame that
/// fits between the file header and the footer, walked back to back from byte 16 as the writer
/// lays them out, then the footer's — to the value the reader expects; leaves alone what it
/// cannot locate. For tests and fuzzing (`shuffle/fuzz`): damage then reaches the checks behind
/// the checksums.
pub fn repair_checksums(bytes: &mut [u8]) {
    let len = bytes.len();
    if len < FILE_HEADER_LEN + TRAILER_LEN {
        return;
    }
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let trailer_at = len - TRAILER_LEN;
    let entries = Trailer::decode(&bytes[trailer_at..]).map_or(u32_at(bytes, trailer_at), |t| t.entries);
    let footer_at = (entries as usize)
        .checked_mul(ENTRY_LEN)
        .filter(|&n| n <= trailer_at - FILE_HEADER_LEN)
        .map(|n| trailer_at - n);
    let frames_end = footer_at.unwrap_or(trailer_at);
    let mut at = FILE_HEADER_LEN;
    while frames_end - at >= FRAME_HEADER_LEN {
        let (payload_len, records) = (u32_at(bytes, at) as usize, u32_at(bytes, at + 4));
        let payload_at = at + FRAME_HEADER_LEN;
        if payload_len > frames_end - payload_at {
            break;
        }
        let sum = frame_checksum(&bytes[payload_at..payload_at + payload_len], records);
        bytes[at + 8..at + 16].copy_from_slice(&sum.to_le_bytes());
        at += FRAME_HEADER_LEN + pad16(payload_len);
        if at > frames_end {
            break;
        }
    }
    if let Some(footer_at) = footer_at {
        let sum = footer_checksum(&bytes[footer_at..trailer_at], &bytes[trailer_at..trailer_at + 16]);
        bytes[trailer_at + 16..trailer_at + 24].copy_from_slice(&sum.to_le_bytes());
    }
}
