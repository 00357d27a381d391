//! [`RunWriter`]: streams records in (partition, key) order into a run file.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use rkyv::rancor;
use rkyv::ser::allocator::Arena;

use super::format::{
    DEFAULT_BLOCK_TARGET, ENTRY_LEN, FRAME_HEADER_LEN, FileHeader, FrameHeader, MAX_BLOCK_LEN, MAX_KEY_LEN,
    SectionEntry, Trailer, frame_checksum, pad16,
};
use crate::io::{FileSink, IoBackend};
use crate::merge::{cmp_keys, key_prefix};
use crate::value::{Aligned, ArchivedValue, Block, Value};
use crate::{Error, Result};

/// What a finished run holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// Where the run is.
    pub path: PathBuf,
    /// File length in bytes.
    pub bytes: u64,
    /// Records of each non-empty partition, partitions ascending: (partition, records). Only
    /// the non-empty ones, as in the run's index: a rank holds many received runs of R / P
    /// partitions each.
    pub records: Vec<(u32, u64)>,
}

impl RunInfo {
    /// Records in the whole run.
    pub fn total_records(&self) -> u64 {
        self.records.iter().map(|&(_, n)| n).sum()
    }
}

/// Writes one run file: push records in (partition, key) order, then [`RunWriter::finish`].
///
/// The file is written under a temporary name (`<path>.partial`) and renamed to `path` by
/// `finish`, so a run that exists under its final name is complete. Dropping an unfinished
/// writer removes the temporary file.
///
/// Equal keys may be pushed more than once (they stay in push order); keys must not go down
/// within a partition, and partitions must not go down.
pub struct RunWriter<V: Value> {
    path: PathBuf,
    tmp: PathBuf,
    sink: Option<Box<dyn FileSink>>,
    partitions: u32,
    /// Partition of the records in `block` (and the one after the last closed section).
    current: u32,
    entries: Vec<SectionEntry>,
    block: Block<V>,
    block_target: usize,
    /// Last key of the previous block of the current partition (for the order check).
    last_key: Vec<u8>,
    has_last: bool,
    /// [`key_prefix`] of the previous key pushed into the current partition, 0 when there is
    /// none: a key with a greater prefix is in order without looking at bytes.
    last_prefix: u64,
    arena: Arena,
    buf: Option<Aligned>,
    total_records: u64,
    _value: PhantomData<fn(V)>,
}

impl<V: Value> std::fmt::Debug for RunWriter<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunWriter")
            .field("path", &self.path)
            .field("partitions", &self.partitions)
            .field("current", &self.current)
            .field("total_records", &self.total_records)
            .finish_non_exhaustive()
    }
}

impl<V: Value> RunWriter<V> {
    /// Starts a run with `partitions` partitions at `path`, written by `io`.
    ///
    /// # Errors
    ///
    /// `partitions` is zero, or the temporary file cannot be created.
    pub fn create(path: &Path, partitions: u32, io: IoBackend) -> Result<Self> {
        if partitions == 0 {
            return Err(Error::Config("a run needs at least one partition".into()));
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".partial");
        let tmp = PathBuf::from(tmp);
        let mut sink = io.create(&tmp)?;
        let header = FileHeader::for_value(size_of::<ArchivedValue<V>>(), align_of::<ArchivedValue<V>>());
        sink.write_all(&header.encode())?;
        Ok(RunWriter {
            path: path.to_owned(),
            tmp,
            sink: Some(sink),
            partitions,
            current: 0,
            entries: Vec::with_capacity(partitions as usize),
            block: Block { ends: Vec::new(), keys: Vec::new(), values: Vec::new() },
            block_target: DEFAULT_BLOCK_TARGET,
            last_key: Vec::new(),
            has_last: false,
            last_prefix: 0,
            arena: Arena::new(),
            buf: Some(Aligned::new()),
            total_records: 0,
            _value: PhantomData,
        })
    }

    /// Sets the size at which blocks are cut (default 256 KiB; at most 1 GiB). Small blocks
    /// are for tests that want many blocks.
    pub fn with_block_target(mut self, bytes: usize) -> Self {
        self.block_target = bytes.clamp(1, MAX_BLOCK_LEN / 2);
        self
    }

    /// The final path of the run.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfOrder`] when `partition` or `key` goes down, [`Error::Config`] for a
    /// partition out of range or a key over 256 MiB, or a write error.
    pub fn push(&mut self, partition: u32, key: &[u8], value: &V) -> Result<()> {
        self.advance_to(partition)?;
        if key.len() > MAX_KEY_LEN {
            return Err(Error::Config(format!("key of {} bytes exceeds the 256 MiB limit", key.len())));
        }
        // Order check: prefixes first (most pushes are decided by them), bytes when equal.
        let prefix = key_prefix(key);
        if prefix <= self.last_prefix {
            self.check_order(partition, key)?;
        }
        self.last_prefix = prefix;
        self.block.keys.extend_from_slice(key);
        self.block.ends.push(self.block.keys.len() as u32);
        self.block.values.push(value.clone());
        let approx = self.block.keys.len() + self.block.ends.len() * (4 + size_of::<ArchivedValue<V>>());
        if approx >= self.block_target || self.block.ends.len() == u32::MAX as usize {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Appends the raw bytes of a whole section (frames as found in another run, e.g.
    /// received from another rank) as partition `partition`, without decoding them.
    /// `records` and `blocks` are what the section holds. The section's contents are checked
    /// when the finished run is opened, like any run.
    ///
    /// # Errors
    ///
    /// Out of order (a partition already written or in progress), or a write error.
    pub fn append_section(&mut self, partition: u32, raw: &[u8], records: u64, blocks: u32) -> Result<()> {
        self.advance_to(partition)?;
        if !self.block.ends.is_empty() || self.has_last {
            return Err(self.out_of_order(format!("raw section for partition {partition} after records")));
        }
        if !raw.len().is_multiple_of(16) {
            return Err(Error::Config(format!("raw section of {} bytes is not 16-byte aligned", raw.len())));
        }
        let sink = self.sink.as_mut().expect("sink present until finish");
        sink.write_all(raw)?;
        let entry = self.entry_mut();
        entry.len += raw.len() as u64;
        entry.records += records;
        entry.blocks += blocks;
        self.total_records += records;
        self.has_last = true; // a later push into this partition cannot be order-checked
        self.last_key.clear();
        self.last_prefix = 0;
        Ok(())
    }

    /// Writes the last block and the footer, renames the file into place, and returns what
    /// the run holds. With `sync`, the file is `fsync`ed before the rename.
    ///
    /// # Errors
    ///
    /// A write, sync or rename error.
    pub fn finish(mut self, sync: bool) -> Result<RunInfo> {
        self.flush_block()?;
        while self.entries.len() < self.partitions as usize {
            self.open_section();
        }
        // The footer indexes the sections that hold something (format version 2): a run
        // received from another rank holds R / P of the R partitions.
        let mut footer = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for entry in self.entries.iter().filter(|e| e.len > 0) {
            footer.extend_from_slice(&entry.encode());
        }
        let trailer = Trailer::encode(self.partitions, self.total_records, &footer);
        let mut sink = self.sink.take().expect("sink present until finish");
        let written = (|| {
            sink.write_all(&footer)?;
            sink.write_all(&trailer)?;
            let bytes = sink.finish(sync)?;
            std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io("rename", &self.tmp, e))?;
            Ok(bytes)
        })();
        let bytes = match written {
            Ok(bytes) => bytes,
            Err(e) => {
                // The sink is gone, so `Drop` no longer knows the file is unfinished (a full
                // disk fails here more often than anywhere else).
                let _ = std::fs::remove_file(&self.tmp);
                return Err(e);
            }
        };
        Ok(RunInfo {
            path: self.path.clone(),
            bytes,
            records: self
                .entries
                .iter()
                .filter(|e| e.records > 0)
                .map(|e| (e.partition, e.records))
                .collect(),
        })
    }

    /// The full order check of `key` against the previous key of the partition (if any).
    #[inline(never)]
    fn check_order(&self, partition: u32, key: &[u8]) -> Result<()> {
        let prev = match self.block.ends.last() {
            Some(&end) => {
                let start = self.block.ends.len().checked_sub(2).map_or(0, |i| self.block.ends[i] as usize);
                Some(&self.block.keys[start..end as usize])
            }
            None if self.has_last => Some(&self.last_key[..]),
            None => None,
        };
        match prev {
            Some(prev) if cmp_keys(prev, key).is_gt() => Err(self.out_of_order(format!(
                "key {:?} after {:?} in partition {partition}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(prev)
            ))),
            _ => Ok(()),
        }
    }

    fn out_of_order(&self, what: String) -> Error {
        Error::OutOfOrder { path: self.path.clone(), what }
    }

    fn entry_mut(&mut self) -> &mut SectionEntry {
        self.entries.last_mut().expect("a section is open")
    }

    fn open_section(&mut self) {
        let offset = self.sink.as_ref().expect("sink present until finish").position();
        let partition = self.entries.len() as u32;
        self.entries.push(SectionEntry { offset, partition, ..SectionEntry::default() });
    }

    /// Closes sections up to `partition` (which becomes current).
    fn advance_to(&mut self, partition: u32) -> Result<()> {
        if partition >= self.partitions {
            return Err(Error::Config(format!(
                "partition {partition} out of range (the run has {})",
                self.partitions
            )));
        }
        if self.entries.is_empty() {
            self.open_section();
        }
        if partition < self.current {
            return Err(self.out_of_order(format!("partition {partition} after partition {}", self.current)));
        }
        if partition > self.current {
            self.flush_block()?;
            while (self.entries.len() as u32) <= partition {
                self.open_section();
            }
            self.current = partition;
            self.has_last = false;
            self.last_key.clear();
            self.last_prefix = 0;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<()> {
        let records = self.block.ends.len();
        if records == 0 {
            return Ok(());
        }
        let mut buf = self.buf.take().expect("buffer present");
        buf.clear();
        let buf = rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
            &self.block,
            buf,
            self.arena.acquire(),
        )
        .map_err(|e| Error::Serialize { path: self.path.clone(), message: e.to_string() })?;
        if buf.len() > MAX_BLOCK_LEN {
            return Err(Error::Config(format!("a block of {} bytes exceeds the 1 GiB limit", buf.len())));
        }
        let records32 = records as u32;
        let header = FrameHeader {
            payload_len: buf.len() as u32,
            records: records32,
            checksum: frame_checksum(&buf, records32),
        };
        let padding = pad16(buf.len()) - buf.len();
        let sink = self.sink.as_mut().expect("sink present until finish");
        sink.write_all(&header.encode())?;
        sink.write_all(&buf)?;
        sink.write_all(&[0u8; 16][..padding])?;
        let frame_len = (FRAME_HEADER_LEN + buf.len() + padding) as u64;
        self.buf = Some(buf);

        // Remember the block's last key for the order check of the next push.
        let start = records.checked_sub(2).map_or(0, |i| self.block.ends[i] as usize);
        self.last_key.clear();
        self.last_key.extend_from_slice(&self.block.keys[start..]);
        self.has_last = true;
        self.block.ends.clear();
        self.block.keys.clear();
        self.block.values.clear();

        let entry = self.entry_mut();
        entry.len += frame_len;
        entry.records += records as u64;
        entry.blocks += 1;
        self.total_records += records as u64;
        Ok(())
    }
}

impl<V: Value> Drop for RunWriter<V> {
    fn drop(&mut self) {
        if self.sink.take().is_some() {
            // Unfinished: nothing under the final name, and no debris under the temporary one.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Keys whose order the 8-byte prefix does not decide: short keys (zero padding), keys
    /// that are prefixes of each other, shared 8-byte heads, `0x00` and `0xFF` bytes.
    fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
        let stem = prop::sample::select(vec![
            Vec::new(),
            b"ab".to_vec(),
            b"abcdefgh".to_vec(),
            vec![0; 8],
            vec![0xFF; 8],
        ]);
        let tail = prop::collection::vec(prop::sample::select(vec![0x00u8, 0x01, b'c', 0xFF]), 0..3);
        (stem, tail).prop_map(|(mut stem, tail)| {
            stem.extend(tail);
            stem
        })
    }

    proptest! {
        /// A push is accepted exactly when its key is not below the previous key of its
        /// partition (across block boundaries too), and a refused push changes nothing.
        #[test]
        fn order_check_matches_byte_order(
            pushes in prop::collection::vec((0u32..2, key_strategy()), 1..60),
            block in prop::sample::select(vec![1usize, 40, 1 << 20]),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("order.run");
            let mut writer = RunWriter::<u64>::create(&path, 4, IoBackend::Std).unwrap().with_block_target(block);
            let mut partition = 0u32;
            let mut prev: Option<Vec<u8>> = None;
            let mut accepted = vec![Vec::new(); 4];
            for (step, key) in pushes {
                let p = (partition + step).min(3);
                if p != partition {
                    prev = None;
                }
                let ok = prev.as_ref().is_none_or(|prev| *prev <= key);
                let result = writer.push(p, &key, &0);
                prop_assert_eq!(result.is_ok(), ok, "{:?} after {:?}", key, prev);
                if ok {
                    partition = p;
                    accepted[p as usize].push(key.clone());
                    prev = Some(key);
                }
            }
            writer.finish(false).unwrap();
            let run = crate::RunReader::<u64>::open(&path, crate::ReadMode::Mmap).unwrap();
            for (p, keys) in accepted.iter().enumerate() {
                let got: Vec<Vec<u8>> = run.iter(p as u32).map(|(k, _)| k.to_vec()).collect();
                prop_assert_eq!(&got, keys);
            }
        }
    }
}
