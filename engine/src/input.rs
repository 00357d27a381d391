//! Inputs: files and directories, memory-mapped, cut into splits at record boundaries.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use spillway_shuffle::{ByteSource, ReadMode};

use crate::error::{Error, Result};

/// How an input file is cut into splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitMode {
    /// At line ends: a split ends just after a `\n` (or at the end of the file). A line longer
    /// than the split size stays whole in one split.
    Lines,
    /// As `Lines`, and each split also knows the number of its first line
    /// ([`Split::first_line`]): the engine counts newlines while planning splits.
    NumberedLines,
    /// Fixed-size records of this many bytes; a file whose length is not a multiple is an error.
    Records(usize),
    /// Each file is one split.
    WholeFile,
}

/// One input file, mapped (or read) into memory.
#[derive(Debug)]
pub struct InputFile {
    /// The path as given, or joined onto a given directory.
    pub path: PathBuf,
    /// Position of the file among all inputs (0-based), in the order given; files found in a
    /// directory follow in byte order of their names.
    pub index: u32,
    bytes: ByteSource,
    /// What the path named when the file was opened (for a buffer: its length, and the
    /// xxh3 digest of its bytes in place of the inode).
    opened: FileState,
    /// A buffer given by [`Inputs::from_memory`], not a file: never re-checked.
    in_memory: bool,
}

/// What a path names, as far as telling a change goes: which file, its size and its
/// modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl FileState {
    fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(FileState {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        })
    }

    /// The error for a file that was `self` and now is `now` (`None`: no longer there).
    fn changed(&self, path: &Path, now: Option<FileState>) -> Error {
        Error::InputChanged { path: path.to_owned(), before: self.len, after: now.map(|s| s.len) }
    }
}

impl InputFile {
    /// Opens `path` as input number `index`, mapped or read as `mode` says.
    pub(crate) fn open(path: PathBuf, index: u32, mode: ReadMode) -> Result<Self> {
        let unreadable = |what: String| Error::Input { path: path.clone(), what };
        let opened = FileState::of(&path).map_err(|e| unreadable(e.to_string()))?;
        let bytes = ByteSource::open_watched(&path, mode).map_err(|e| {
            unreadable(match &e {
                spillway_shuffle::Error::Io { source, .. } => source.to_string(),
                other => other.to_string(),
            })
        })?;
        // The same file, unchanged, before and after it was mapped or read: with pread the
        // copy is then consistent.
        let now = FileState::of(&path).ok();
        if now != Some(opened) || bytes.len() as u64 != opened.len {
            return Err(opened.changed(&path, now));
        }
        Ok(InputFile { path, index, bytes, opened, in_memory: false })
    }

    /// Fails if the file changed since it was opened (see [`Inputs::check_unchanged`]).
    pub(crate) fn check_unchanged(&self, read: ReadMode) -> Result<()> {
        if self.in_memory {
            return Ok(());
        }
        if self.bytes.vanished() {
            return Err(self.opened.changed(&self.path, FileState::of(&self.path).ok()));
        }
        if read == ReadMode::Pread {
            return Ok(());
        }
        let now = FileState::of(&self.path).ok();
        if now != Some(self.opened) {
            return Err(self.opened.changed(&self.path, now));
        }
        Ok(())
    }

    /// Releases the pages of `range` (see [`Inputs::release`]).
    pub(crate) fn release(&self, range: std::ops::Range<usize>) {
        self.bytes.release(range);
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// What the path named when it was opened, as a resumable job's journal records it.
    pub(crate) fn identity(&self) -> crate::journal::InputId {
        let FileState { dev, ino, len, mtime } = self.opened;
        crate::journal::InputId { path: self.path.clone(), bytes: len, mtime, file: (dev, ino) }
    }
}

/// A piece of one input file that one map call processes.
#[derive(Debug, Clone, Copy)]
pub struct Split<'a> {
    /// The file it comes from.
    pub file: &'a InputFile,
    /// Byte offset of `data` in the file.
    pub offset: u64,
    /// The split's bytes, borrowed from the mapping.
    pub data: &'a [u8],
    /// With [`SplitMode::NumberedLines`], the 0-based number of the split's first line in its
    /// file (the count of newlines before `offset`); 0 otherwise.
    pub first_line: u64,
}

impl Split<'_> {
    /// "path bytes START..END", for messages.
    pub fn describe(&self) -> String {
        describe(&self.file.path, self.offset, self.offset + self.data.len() as u64)
    }
}

pub(crate) fn describe(path: &Path, start: u64, end: u64) -> String {
    format!("{} bytes {start}..{end}", path.display())
}

/// Where a split lies: file index and byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SplitRange {
    pub file: usize,
    pub start: usize,
    pub end: usize,
    pub first_line: u64,
}

/// The input files of a job, all opened before any work starts.
#[derive(Debug)]
pub struct Inputs {
    files: Vec<InputFile>,
    read: ReadMode,
}

impl Inputs {
    /// Opens every path, memory-mapped. Directories contribute the regular files below them
    /// (recursively, in byte order of names), skipping names that start with `.` or `_` (such
    /// as `_SUCCESS`).
    ///
    /// A file truncated while it is mapped does not kill the process with SIGBUS: the
    /// vanished bytes read as zeros and [`Inputs::check_unchanged`] reports the change (the
    /// engine calls it after reading the inputs, before committing any output).
    ///
    /// # Errors
    ///
    /// A path is missing or unreadable ([`Error::Input`], naming it), or no path was given;
    /// a file changed while it was being opened ([`Error::InputChanged`]).
    pub fn new(paths: impl IntoIterator<Item = impl AsRef<Path>>) -> Result<Self> {
        Self::with_mode(paths, ReadMode::Mmap)
    }

    /// As [`Inputs::new`], reading files as `mode` says.
    ///
    /// # Errors
    ///
    /// As [`Inputs::new`].
    pub fn with_mode(paths: impl IntoIterator<Item = impl AsRef<Path>>, mode: ReadMode) -> Result<Self> {
        let mut found = Vec::new();
        let mut any = false;
        for path in paths {
            any = true;
            collect(path.as_ref(), true, &mut found)?;
        }
        if !any {
            return Err(Error::Input { path: PathBuf::new(), what: "no input paths given".into() });
        }
        let mut files = Vec::with_capacity(found.len());
        for (index, path) in found.into_iter().enumerate() {
            let index = u32::try_from(index).map_err(|_| Error::Input {
                path: path.clone(),
                what: "more than 4 billion input files".into(),
            })?;
            files.push(InputFile::open(path, index, mode)?);
        }
        Ok(Inputs { files, read: mode })
    }

    /// Inputs from byte buffers instead of files, each with the name that stands for its path
    /// (in messages, in the inverted index, in a resumable job's journal). The bytes are
    /// copied. A resumed job tells a buffer changed since the first session by its length
    /// and the digest of its bytes.
    ///
    /// ```
    /// use spillway_engine::{Engine, Inputs, OutputSpec, jobs::WordCount, text::WordMode};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let inputs = Inputs::from_memory([("a", &b"b a b\n"[..]), ("b", b"a c\n")])?;
    /// let dir = tempfile::tempdir()?;
    /// let out = dir.path().join("counts.tsv");
    /// let engine = Engine::builder().threads(2).partitions(4).build()?;
    /// engine.run(&WordCount { mode: WordMode::Unicode }, &inputs, &OutputSpec::File(out.clone()))?;
    /// assert_eq!(std::fs::read_to_string(out)?, "a\t2\nb\t2\nc\t1\n");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Input`] when no buffer was given.
    pub fn from_memory(
        buffers: impl IntoIterator<Item = (impl Into<PathBuf>, impl AsRef<[u8]>)>,
    ) -> Result<Self> {
        let mut files = Vec::new();
        for (index, (name, data)) in buffers.into_iter().enumerate() {
            let data = data.as_ref();
            let path = name.into();
            let index = u32::try_from(index).map_err(|_| Error::Input {
                path: path.clone(),
                what: "more than 4 billion inputs".into(),
            })?;
            let mut owned = spillway_shuffle::Aligned::with_capacity(data.len());
            owned.extend_from_slice(data);
            let opened = FileState {
                dev: 0,
                ino: xxhash_rust::xxh3::xxh3_64(data),
                len: data.len() as u64,
                mtime: (0, 0),
            };
            files.push(InputFile { path, index, bytes: ByteSource::Owned(owned), opened, in_memory: true });
        }
        if files.is_empty() {
            return Err(Error::Input { path: PathBuf::new(), what: "no input buffers given".into() });
        }
        Ok(Inputs { files, read: ReadMode::Pread })
    }

    /// Fails if an input changed since it was opened: with [`ReadMode::Mmap`], a file whose
    /// mapped pages vanished (it was truncated: those bytes read as zeros), or a path that now
    /// names a file of another size or modification time, another file, or nothing. The job
    /// read such an input while it changed, so its results cannot be trusted. The engine
    /// calls this after the map phase (the last reads of the inputs) and before committing
    /// any output.
    ///
    /// With [`ReadMode::Pread`] each file was read whole when it was opened (which fails
    /// should the file change during that read), so the job worked on a consistent copy and
    /// later changes are not an error: that mode is for inputs that may change.
    ///
    /// A change that restores both size and modification time (to the resolution the
    /// filesystem keeps) goes unnoticed.
    ///
    /// # Errors
    ///
    /// [`Error::InputChanged`] for the first changed file, with its size before and after.
    pub fn check_unchanged(&self) -> Result<()> {
        self.files.iter().try_for_each(|file| file.check_unchanged(self.read))
    }

    /// The files, in input order.
    pub fn files(&self) -> &[InputFile] {
        &self.files
    }

    /// Total input bytes.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes().len() as u64).sum()
    }

    pub(crate) fn split(&self, range: SplitRange) -> Split<'_> {
        let file = &self.files[range.file];
        Split {
            file,
            offset: range.start as u64,
            data: &file.bytes()[range.start..range.end],
            first_line: range.first_line,
        }
    }

    /// Lets the kernel drop the pages of a finished split from this process's memory.
    pub(crate) fn release(&self, range: SplitRange) {
        self.files[range.file].bytes.release(range.start..range.end);
    }

    /// Cuts every file into splits of about `split_size` bytes.
    pub(crate) fn plan_splits(&self, mode: SplitMode, split_size: usize) -> Result<Vec<SplitRange>> {
        let mut splits = Vec::new();
        for (i, file) in self.files.iter().enumerate() {
            plan_file(i, file, mode, split_size, &mut splits)?;
        }
        Ok(splits)
    }
}

/// Cuts `file` (input number `i`) into splits of about `split_size` bytes, appended to
/// `splits`. Each file is cut on its own, so a list of files planned one at a time (streamed
/// inputs) gives the splits of the whole list planned at once.
pub(crate) fn plan_file(
    i: usize,
    file: &InputFile,
    mode: SplitMode,
    split_size: usize,
    splits: &mut Vec<SplitRange>,
) -> Result<()> {
    let split_size = split_size.max(1);
    let data = file.bytes();
    let len = data.len();
    match mode {
        SplitMode::WholeFile => {
            if len > 0 {
                splits.push(SplitRange { file: i, start: 0, end: len, first_line: 0 });
            }
        }
        SplitMode::Records(size) => {
            let size = size.max(1);
            if !len.is_multiple_of(size) {
                return Err(Error::Input {
                    path: file.path.clone(),
                    what: format!(
                        "length {len} is not a whole number of {size}-byte records \
                         (partial record of {} bytes at byte {})",
                        len % size,
                        len - len % size
                    ),
                });
            }
            let step = (split_size / size).max(1) * size;
            let mut start = 0;
            while start < len {
                let end = (start + step).min(len);
                splits.push(SplitRange { file: i, start, end, first_line: 0 });
                start = end;
            }
        }
        SplitMode::Lines | SplitMode::NumberedLines => {
            let numbered = mode == SplitMode::NumberedLines;
            let mut line = 0u64;
            let mut start = 0;
            while start < len {
                let mut end = start.saturating_add(split_size).min(len);
                if end < len {
                    // Extend to just past the next newline at or after `end - 1`.
                    end = match data[end - 1..].iter().position(|&b| b == b'\n') {
                        Some(nl) => end + nl,
                        None => len,
                    };
                }
                splits.push(SplitRange { file: i, start, end, first_line: line });
                if numbered {
                    line += count_newlines(&data[start..end]);
                }
                start = end;
            }
        }
    }
    Ok(())
}

/// Counts `\n` bytes (written so that it vectorizes).
fn count_newlines(data: &[u8]) -> u64 {
    data.chunks(255 * 16).map(|chunk| chunk.iter().map(|&b| u64::from(b == b'\n')).sum::<u64>()).sum()
}

pub(crate) fn collect(path: &Path, given: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::Input { path: path.to_owned(), what: e.to_string() })?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect::<std::io::Result<_>>())
            .map_err(|e| Error::Input { path: path.to_owned(), what: e.to_string() })?;
        entries.sort_by(|a, b| a.as_os_str().as_encoded_bytes().cmp(b.as_os_str().as_encoded_bytes()));
        for entry in entries {
            let name = entry.file_name().map(|n| n.as_encoded_bytes().first().copied());
            if matches!(name, Some(Some(b'.' | b'_'))) {
                continue;
            }
            collect(&entry, false, out)?;
        }
        Ok(())
    } else if meta.is_file() {
        out.push(path.to_owned());
        Ok(())
    } else if given {
        Err(Error::Input { path: path.to_owned(), what: "not a regular file or directory".into() })
    } else {
        Ok(()) // sockets, fifos and devices found inside a directory are skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs_with(content: &[u8]) -> (tempfile::TempDir, Inputs) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        std::fs::write(&path, content).unwrap();
        let inputs = Inputs::new([&path]).unwrap();
        (dir, inputs)
    }

    #[test]
    fn line_splits_end_at_newlines_and_cover_the_file() {
        let text = b"alpha beta\ngamma\n\nvery long line without break that is longer than a split\nz";
        let (_d, inputs) = inputs_with(text);
        for size in 1..40 {
            let splits = inputs.plan_splits(SplitMode::Lines, size).unwrap();
            let mut at = 0;
            for s in &splits {
                assert_eq!(s.start, at);
                assert!(s.end > s.start);
                assert!(s.end == text.len() || text[s.end - 1] == b'\n', "size {size}: {s:?}");
                at = s.end;
            }
            assert_eq!(at, text.len());
        }
    }

    #[test]
    fn numbered_splits_know_their_first_line() {
        let text = b"a\nbb\n\nccc\ndddd\ne";
        let (_d, inputs) = inputs_with(text);
        for size in 1..12 {
            for range in inputs.plan_splits(SplitMode::NumberedLines, size).unwrap() {
                let before = text[..range.start].iter().filter(|&&b| b == b'\n').count() as u64;
                assert_eq!(range.first_line, before, "size {size}: {range:?}");
            }
        }
    }

    #[test]
    fn record_splits_refuse_partial_records() {
        let (_d, inputs) = inputs_with(&[0u8; 250]);
        let err = inputs.plan_splits(SplitMode::Records(100), 1000).unwrap_err().to_string();
        assert!(err.contains("f.txt") && err.contains("partial record of 50 bytes at byte 200"), "{err}");
        let (_d, inputs) = inputs_with(&[0u8; 1000]);
        let splits = inputs.plan_splits(SplitMode::Records(100), 250).unwrap();
        assert_eq!(splits.len(), 5);
        assert!(splits.iter().all(|s| (s.end - s.start) % 100 == 0));
    }

    #[test]
    fn empty_files_have_no_splits_and_missing_paths_are_named() {
        let (_d, inputs) = inputs_with(b"");
        assert!(inputs.plan_splits(SplitMode::Lines, 10).unwrap().is_empty());
        let err = Inputs::new(["/no/such/input.txt"]).unwrap_err().to_string();
        assert!(err.contains("/no/such/input.txt") && err.contains("No such file"), "{err}");
    }

    fn changed(inputs: &Inputs) -> String {
        let err = inputs.check_unchanged().unwrap_err();
        assert!(err.is_input_error() && matches!(err, Error::InputChanged { .. }), "{err:?}");
        err.to_string()
    }

    #[test]
    fn check_unchanged_finds_any_change_to_a_mapped_input() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        let content = vec![b'x'; 3 * 4096];
        let open = || {
            std::fs::write(&path, &content).unwrap();
            Inputs::new([&path]).unwrap()
        };
        let file = || std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let shown = path.display();

        let inputs = open();
        inputs.check_unchanged().unwrap();

        // Rewritten in place with the same size: told by the modification time (set apart
        // explicitly: a coarse clock could give the rewrite the same one).
        file().write_all_at(b"y", 5).unwrap();
        file()
            .set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000))
            .unwrap();
        assert_eq!(
            changed(&inputs),
            format!("input {shown} changed while the job ran (12288 bytes before, 12288 bytes after)")
        );
        drop(inputs);

        // Truncated, read past the new end (zeros, not SIGBUS), then grown back to its size
        // and modification time: the vanished pages still tell.
        let inputs = open();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        file().set_len(100).unwrap();
        assert_eq!(inputs.files()[0].bytes()[2 * 4096], 0);
        file().set_len(content.len() as u64).unwrap();
        file().set_modified(mtime).unwrap();
        assert!(inputs.files()[0].bytes()[..100].iter().all(|&b| b == b'x'));
        assert_eq!(
            changed(&inputs),
            format!("input {shown} changed while the job ran (12288 bytes before, 12288 bytes after)")
        );
        drop(inputs);

        // Replaced by another file (of another size), or removed.
        let inputs = open();
        let other = dir.path().join("other");
        std::fs::write(&other, b"new").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(
            changed(&inputs),
            format!("input {shown} changed while the job ran (12288 bytes before, 3 bytes after)")
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            changed(&inputs),
            format!("input {shown} changed while the job ran (12288 bytes before, gone after)")
        );
    }

    #[test]
    fn pread_inputs_are_copies_that_later_changes_do_not_affect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        std::fs::write(&path, vec![b'x'; 10_000]).unwrap();
        let inputs = Inputs::with_mode([&path], ReadMode::Pread).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(10).unwrap();
        inputs.check_unchanged().unwrap();
        assert!(
            inputs.files()[0].bytes().len() == 10_000 && inputs.files()[0].bytes().iter().all(|&b| b == b'x')
        );
    }

    #[test]
    fn directories_expand_in_order_skipping_hidden_and_underscore() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.txt", "a.txt", "_SUCCESS", ".hidden"] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/c.txt"), "y\n").unwrap();
        let inputs = Inputs::new([dir.path()]).unwrap();
        let names: Vec<_> =
            inputs.files().iter().map(|f| f.path.strip_prefix(dir.path()).unwrap().to_owned()).collect();
        assert_eq!(names, [PathBuf::from("a.txt"), "b.txt".into(), "sub/c.txt".into()]);
    }
}
