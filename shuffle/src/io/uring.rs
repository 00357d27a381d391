//! The io_uring backend (placeholder seam: reports "unavailable" until implemented).

use std::path::Path;

use super::FileSink;
use crate::Result;

/// True when this process may use io_uring.
pub(super) fn available() -> bool {
    false
}

/// A sink writing through io_uring.
#[derive(Debug)]
pub(super) struct UringSink;

impl UringSink {
    /// `Ok(None)` when io_uring is refused, so that the caller falls back to std.
    pub(super) fn create(_path: &Path) -> Result<Option<UringSink>> {
        Ok(None)
    }
}

impl FileSink for UringSink {
    fn write_all(&mut self, _data: &[u8]) -> Result<()> {
        unreachable!("UringSink is never constructed")
    }
    fn position(&self) -> u64 {
        0
    }
    fn finish(self: Box<Self>, _sync: bool) -> Result<u64> {
        Ok(0)
    }
}
