//! The journal of a resumable job: an append-only file of checksummed records in the job's
//! directory, `fsync`ed at each commit point, from which a job started again with `--resume`
//! ([`EngineBuilder::resume`](crate::EngineBuilder::resume)) learns what is done.
//!
//! # Format (version 1)
//!
//! The file starts with the 8 bytes `SPWJRNL1`. Then records, each
//!
//! ```text
//! u32 LE   payload length L (at most 64 MiB)
//! u64 LE   xxh3-64 of the payload
//! L bytes  the payload: one JSON object, a [`Record`]
//! ```
//!
//! Records are only ever appended, each with one `write` followed by `fsync`. A crash can
//! leave the last record torn; [`parse`] returns the records before the first one that is
//! torn or fails its checksum, with where and why it stopped, and the job goes on from that
//! prefix (which describes an earlier, consistent state: see the engine's resume). The first
//! record is always [`Record::Begin`].

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};

/// The file's first 8 bytes.
pub const MAGIC: &[u8; 8] = b"SPWJRNL1";
/// The longest payload a record may have.
pub const MAX_RECORD: u32 = 64 << 20;
/// Bytes of a record's header (length and checksum).
const HEADER: usize = 12;

/// One record of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Record {
    /// What the job is: written once, first.
    Begin(Begin),
    /// A worker's commit point: these splits are mapped, and every record they emitted is in
    /// these runs (files of the job directory), which are `fsync`ed.
    Committed {
        /// Split indices of the job's split plan.
        splits: Vec<u32>,
        /// The runs, by file name in the job directory.
        runs: Vec<RunRef>,
    },
    /// A merge step: `output` holds every record of `inputs`, which are deleted after this
    /// record is written.
    Merged {
        /// The merged runs, by file name.
        inputs: Vec<String>,
        /// The run they were merged into.
        output: RunRef,
    },
    /// A partition's part file is complete (`fsync`ed in the output's staging directory) and
    /// kept in the job directory under `name` (a hard link): a resumed job links it into its
    /// own staging directory instead of reducing the partition again.
    Reduced {
        /// The partition.
        partition: u32,
        /// File name in the job directory.
        name: String,
        /// Its length in bytes.
        bytes: u64,
        /// xxh3-64 of its bytes.
        hash: u64,
        /// Keys it holds (for the metrics).
        keys: u64,
    },
    /// The output is about to be renamed into place: the file or staging directory with this
    /// identity (device, inode), and the metrics the job reports. Found at the target when
    /// the job resumes, it means the job is done.
    Committing {
        /// Device and inode of what is renamed into place.
        output: (u64, u64),
        /// The job's metrics.
        metrics: serde_json::Value,
    },
}

/// What a resumable job is, compared when it resumes: a difference is refused, naming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Begin {
    /// The journal's format version (1).
    pub version: u32,
    /// `(setting, digest)` for every setting that changes the output (the job and its
    /// parameters, the partition count, the split plan, the output, the inputs).
    pub settings: Vec<(String, u64)>,
    /// The partitioner's fingerprint.
    pub fingerprint: u64,
    /// Every input's identity.
    pub inputs: Vec<InputId>,
    /// Splits in the job's plan.
    pub splits: u64,
}

/// An input file as the journal knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputId {
    /// The path as given.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime: (i64, i64),
    /// Device and inode numbers.
    pub file: (u64, u64),
}

/// A run of the job directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRef {
    /// File name in the job directory.
    pub name: String,
    /// Its length in bytes.
    pub bytes: u64,
}

/// What [`parse`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The records before the first that is torn or damaged.
    pub records: Vec<Record>,
    /// Bytes of the file they span (magic included): appending goes on from here.
    pub valid_len: u64,
    /// Why parsing stopped before the end of the file, with the byte offset: a torn last
    /// record (a crash while appending) or damage.
    pub stopped: Option<String>,
}

/// Reads a journal's bytes. Never panics; a file that does not start with [`MAGIC`] has no
/// records (`stopped` says why). What it allocates grows with the bytes it reads, never with a
/// length the input announces: records become trees, a few times the size of their JSON for a
/// journal the engine wrote, at most some 60 times for crafted JSON (the fuzz targets in
/// `shuffle/fuzz/` bound it).
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut parsed = Parsed { records: Vec::new(), valid_len: 0, stopped: None };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        parsed.stopped = Some("not a Spillway journal (bad magic) at byte 0".into());
        return parsed;
    }
    let mut at = MAGIC.len();
    parsed.valid_len = at as u64;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let Some((header, rest)) = rest.split_first_chunk::<HEADER>() else {
            parsed.stopped = Some(format!("torn record header at byte {at}"));
            break;
        };
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let sum = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
        if len > MAX_RECORD {
            parsed.stopped = Some(format!("record length {len} out of range at byte {at}"));
            break;
        }
        let Some(payload) = rest.get(..len as usize) else {
            parsed.stopped = Some(format!("torn record at byte {at} ({len} bytes announced)"));
            break;
        };
        if xxh3_64(payload) != sum {
            parsed.stopped = Some(format!("record checksum mismatch at byte {at}"));
            break;
        }
        let record: Record = match serde_json::from_slice(payload) {
            Ok(record) => record,
            Err(e) => {
                parsed.stopped = Some(format!("unreadable record at byte {at}: {e}"));
                break;
            }
        };
        if matches!(record, Record::Begin(_)) != parsed.records.is_empty() {
            parsed.stopped = Some(format!("record out of place at byte {at}"));
            break;
        }
        parsed.records.push(record);
        at += HEADER + len as usize;
        parsed.valid_len = at as u64;
    }
    parsed
}

/// The encoding of one record, header included.
pub fn encode(record: &Record) -> Vec<u8> {
    let payload = serde_json::to_vec(record).expect("journal records serialize");
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Appends records to a journal file, each written with one `write` and `fsync`ed.
#[derive(Debug)]
pub(crate) struct JournalWriter {
    file: std::sync::Mutex<File>,
    path: PathBuf,
}

impl JournalWriter {
    /// Opens the journal at `path` for appending after its first `valid_len` bytes (anything
    /// after them, a torn record, is cut off); a new journal gets the magic.
    pub(crate) fn open(path: &Path, valid_len: u64) -> Result<Self> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        let io = |op: &'static str| move |e| Error::io(op, path, e);
        if valid_len < MAGIC.len() as u64 {
            file.set_len(0).map_err(io("truncate"))?;
            file.write_all(MAGIC).map_err(io("write"))?;
        } else {
            file.set_len(valid_len).map_err(io("truncate"))?;
        }
        use std::io::Seek;
        file.seek(std::io::SeekFrom::End(0)).map_err(io("seek"))?;
        file.sync_all().map_err(io("fsync"))?;
        Ok(JournalWriter { file: std::sync::Mutex::new(file), path: path.to_owned() })
    }

    /// Appends `record` and `fsync`s it: a commit point.
    pub(crate) fn append(&self, record: &Record) -> Result<()> {
        let bytes = encode(record);
        let mut file = crate::pool::lock(&self.file);
        file.write_all(&bytes).map_err(|e| Error::io("write", &self.path, e))?;
        file.sync_data().map_err(|e| Error::io("fsync", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(records: &[Record]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for r in records {
            bytes.extend(encode(r));
        }
        bytes
    }

    fn sample() -> Vec<Record> {
        vec![
            Record::Begin(Begin {
                version: 1,
                settings: vec![("the job".into(), 7)],
                fingerprint: 9,
                inputs: vec![InputId { path: "a".into(), bytes: 3, mtime: (-5, 3), file: (1, 2) }],
                splits: 4,
            }),
            Record::Committed {
                splits: vec![0, 2],
                runs: vec![RunRef { name: "spill-000001.run".into(), bytes: 99 }],
            },
            Record::Merged {
                inputs: vec!["a.run".into(), "b.run".into()],
                output: RunRef { name: "c.run".into(), bytes: 5 },
            },
        ]
    }

    #[test]
    fn records_read_back_and_every_cut_gives_a_prefix() {
        let records = sample();
        let bytes = journal(&records);
        let parsed = parse(&bytes);
        assert_eq!(
            (parsed.records.as_slice(), parsed.valid_len, parsed.stopped.as_deref()),
            (records.as_slice(), bytes.len() as u64, None)
        );
        // A cut anywhere (a crash while appending) gives the records wholly before it.
        for cut in 0..bytes.len() {
            let parsed = parse(&bytes[..cut]);
            let whole = (0..=records.len()).rev().find(|&n| journal(&records[..n]).len() <= cut).unwrap_or(0);
            let expected = if cut < MAGIC.len() { 0 } else { whole };
            assert_eq!(parsed.records.len(), expected, "cut at {cut}");
            assert!(parsed.valid_len <= cut as u64);
            assert_eq!(
                parsed.stopped.is_some(),
                cut != parsed.valid_len as usize || cut < MAGIC.len(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_stops_at_or_before_its_record() {
        let records = sample();
        let bytes = journal(&records);
        for at in 0..bytes.len() {
            for bit in [0x01, 0x80] {
                let mut bad = bytes.clone();
                bad[at] ^= bit;
                let parsed = parse(&bad);
                assert!(parsed.stopped.is_some(), "flip at {at} found");
                assert!(parsed.records.len() < records.len() || at < MAGIC.len());
                assert_eq!(parsed.records, records[..parsed.records.len()], "a prefix, flip at {at}");
            }
        }
    }

    #[test]
    fn the_writer_cuts_a_torn_tail_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let records = sample();
        let w = JournalWriter::open(&path, 0).unwrap();
        w.append(&records[0]).unwrap();
        w.append(&records[1]).unwrap();
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&encode(&records[2])[..10]); // torn
        std::fs::write(&path, &bytes).unwrap();
        let parsed = parse(&bytes);
        assert_eq!(parsed.records.len(), 2);
        assert!(parsed.stopped.as_deref().unwrap().starts_with("torn record"));
        let w = JournalWriter::open(&path, parsed.valid_len).unwrap();
        w.append(&records[2]).unwrap();
        assert_eq!(parse(&std::fs::read(&path).unwrap()).records, records);
    }
}
