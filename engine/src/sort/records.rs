//! Records: the mapped inputs as one sequence of fixed-size records, and evenly spaced
//! samples of them (for range boundaries).

use std::ops::Range;

use crate::error::{Error, Result};
use crate::input::{Inputs, SplitRange};

/// Input bytes that sampling maps before it releases them (see `Records::sample`).
const SAMPLE_WINDOW: usize = 16 << 20;

#[derive(Debug, Clone, Copy)]
pub(super) struct Segment<'a> {
    pub(super) data: &'a [u8],
    /// Index of the segment's first record in the sequence.
    first: usize,
    /// Input file index and byte offset of `data` in it (for releasing pages).
    file: usize,
    offset: usize,
}

/// A sequence of records over slices of the mapped inputs.
#[derive(Debug, Clone)]
pub(super) struct Records<'a> {
    pub(super) segments: Vec<Segment<'a>>,
    pub(super) size: usize,
    len: usize,
    /// The inputs the segments borrow from.
    pub(super) inputs: &'a Inputs,
}

impl<'a> Records<'a> {
    pub(super) fn new(inputs: &'a Inputs, size: usize) -> Result<Self> {
        let mut segments = Vec::new();
        let mut len = 0;
        for (i, file) in inputs.files().iter().enumerate() {
            let data = file.bytes();
            if data.len() % size != 0 {
                let n = data.len();
                return Err(Error::Input {
                    path: file.path.clone(),
                    what: format!(
                        "length {n} is not a whole number of {size}-byte records \
                         (partial record of {} bytes at byte {})",
                        n % size,
                        n - n % size
                    ),
                });
            }
            if !data.is_empty() {
                segments.push(Segment { data, first: len, file: i, offset: 0 });
                len += data.len() / size;
            }
        }
        Ok(Records { segments, size, len, inputs })
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn bytes(&self) -> u64 {
        (self.len * self.size) as u64
    }

    /// The records `range`, numbered from 0.
    pub(super) fn slice(&self, range: Range<usize>) -> Records<'a> {
        let mut segments = Vec::new();
        for s in &self.segments {
            let end = s.first + s.data.len() / self.size;
            let (a, b) = (range.start.max(s.first), range.end.min(end));
            if a < b {
                let (from, to) = ((a - s.first) * self.size, (b - s.first) * self.size);
                segments.push(Segment {
                    data: &s.data[from..to],
                    first: a - range.start,
                    file: s.file,
                    offset: s.offset + from,
                });
            }
        }
        Records { segments, size: self.size, len: range.len(), inputs: self.inputs }
    }

    #[inline]
    pub(super) fn get(&self, i: usize) -> &'a [u8] {
        let s = if self.segments.len() == 1 {
            &self.segments[0]
        } else {
            &self.segments[self.segments.partition_point(|s| s.first <= i) - 1]
        };
        let at = (i - s.first) * self.size;
        &s.data[at..at + self.size]
    }

    /// Calls `f(index, record)` for the records `range`, in order.
    #[inline]
    pub(super) fn for_each(&self, range: Range<usize>, mut f: impl FnMut(usize, &'a [u8])) {
        for s in &self.segments {
            let end = s.first + s.data.len() / self.size;
            let (a, b) = (range.start.max(s.first), range.end.min(end));
            if a < b {
                let bytes = &s.data[(a - s.first) * self.size..(b - s.first) * self.size];
                for (j, record) in bytes.chunks_exact(self.size).enumerate() {
                    f(a + j, record);
                }
            }
        }
    }

    /// `count` evenly spaced records (all of them if there are fewer).
    ///
    /// With `release`, the pages that sampling maps are let go of every [`SAMPLE_WINDOW`]
    /// bytes: each touch of the mapping maps the kernel's fault-around (64 KiB) of cached
    /// pages, so a sample of a few thousand records otherwise leaves most of a large input
    /// mapped (figures in `bench/README.md`).
    pub(super) fn sample(&self, count: usize, release: Option<&Inputs>) -> Vec<Vec<u8>> {
        let n = self.len;
        let count = count.min(n);
        let window = (SAMPLE_WINDOW / self.size).max(1);
        let mut mapped_from = 0;
        let mut sample = Vec::with_capacity(count);
        for j in 0..count {
            let i = j * n / count;
            sample.push(self.get(i).to_vec());
            if let Some(inputs) = release
                && (i + 1 - mapped_from >= window || j + 1 == count)
            {
                self.slice(mapped_from..i + 1).release(inputs);
                mapped_from = i + 1;
            }
        }
        sample
    }

    /// Lets the kernel drop these records' pages from the process (they stay cached).
    pub(super) fn release(&self, inputs: &Inputs) {
        for s in &self.segments {
            inputs.release(SplitRange {
                file: s.file,
                start: s.offset,
                end: s.offset + s.data.len(),
                first_line: 0,
            });
        }
    }
}
