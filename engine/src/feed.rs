//! Inputs that arrive while the job runs: [`InputFeed`].
//!
//! A producer (the CLI's `--inputs-from` reader, or a library caller) pushes the paths of
//! finished files one at a time; each is opened and cut into splits at once, and the splits
//! join the end of the job's split list, where the map phase's workers (and, under MPI, rank
//! 0's split server) find them. Workers that reach the end of what is known wait on a
//! condition variable until more arrives or the producer says there is no more
//! ([`InputFeed::end`]). Files are numbered in the order they were pushed and each is cut on
//! its own, so the splits are those of a job given the same files up front, in the same order.
//!
//! Under MPI only rank 0 has a producer: the other ranks' feeds stay empty until rank 0's
//! split server hands them a split, with its file's path and range, and they open the file
//! then ([`SplitList::adopt`]).
//!
//! The files and splits live in [`Slots`], an append-only table whose entries never move, so
//! a worker keeps borrowing a split's bytes while more files arrive.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use spillway_shuffle::ReadMode;

use crate::cluster::{Known, SplitList};
use crate::error::{Error, Result};
use crate::input::{InputFile, Split, SplitMode, SplitRange, collect, plan_file};
use crate::metrics::Progress;
use crate::pool::lock;

/// Entries of the first chunk of a [`Slots`]; chunk `c` holds `FIRST << c`.
const FIRST: usize = 64;
/// Chunks: room for `FIRST * (2^CHUNKS - 1)` entries.
const CHUNKS: usize = 40;

/// An append-only table: entry `i` is set once and never moves (chunks that double in size,
/// each allocated when first needed), so `&T` stays valid while other entries are added.
pub(crate) struct Slots<T> {
    chunks: [OnceLock<Box<[OnceLock<T>]>>; CHUNKS],
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots { chunks: std::array::from_fn(|_| OnceLock::new()) }
    }
}

impl<T> Slots<T> {
    /// (chunk, offset) of entry `i`.
    fn locate(i: usize) -> (usize, usize) {
        let j = i / FIRST + 1;
        let chunk = (usize::BITS - 1 - j.leading_zeros()) as usize;
        (chunk, i - FIRST * ((1 << chunk) - 1))
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        let (chunk, at) = Self::locate(i);
        self.chunks.get(chunk)?.get()?.get(at)?.get()
    }

    /// Sets entry `i`; `false` if it was set already.
    pub(crate) fn set(&self, i: usize, value: T) -> bool {
        let (chunk, at) = Self::locate(i);
        let Some(slot) = self.chunks.get(chunk) else { return false };
        let entries = slot.get_or_init(|| (0..FIRST << chunk).map(|_| OnceLock::new()).collect());
        entries[at].set(value).is_ok()
    }
}

/// The paths of a feed's files by index, for a job that names its input files in its output
/// ([`InvertedIndex::fed`](crate::jobs::InvertedIndex::fed),
/// [`Grep::fed`](crate::jobs::Grep::fed)): shared with the feed ([`InputFeed::names`]), which
/// fills it as files arrive. Complete on every rank once the map phase has ended (under MPI
/// rank 0's list reaches the others then), which is before any reduce.
#[derive(Clone, Default)]
pub struct FileNames(Arc<Slots<PathBuf>>);

impl FileNames {
    /// The path of file `index`, as pushed (a directory joined with the path inside it).
    pub fn get(&self, index: u32) -> Option<&Path> {
        self.0.get(index as usize).map(PathBuf::as_path)
    }
}

impl std::fmt::Debug for FileNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileNames")
    }
}

/// What the feed knows, under its lock.
#[derive(Debug, Default)]
struct State {
    files: usize,
    splits: usize,
    bytes: u64,
    complete: bool,
    error: Option<Error>,
    progress: Option<Arc<Progress>>,
}

/// A job's inputs that arrive while it runs (see the module docs). Give it to
/// [`Engine::run_fed`](crate::Engine::run_fed); push paths from another thread.
///
/// ```
/// use spillway_engine::{Engine, InputFeed, OutputSpec, SplitMode, jobs::WordCount, text::WordMode};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let feed = InputFeed::new("example", SplitMode::Lines, 1 << 20, Default::default());
/// let out = dir.path().join("counts.tsv");
/// let engine = Engine::builder().threads(2).partitions(4).build()?;
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         for (i, text) in ["b a b\n", "a c\n"].iter().enumerate() {
///             let path = dir.path().join(format!("in{i}.txt"));
///             std::fs::write(&path, text).unwrap();
///             feed.push(&path).unwrap(); // a finished file
///         }
///         feed.end();
///     });
///     engine.run_fed(&WordCount { mode: WordMode::Unicode }, &feed, &OutputSpec::File(out.clone()))
/// })?;
/// assert_eq!(std::fs::read_to_string(out)?, "a\t2\nb\t2\nc\t1\n");
/// # Ok(()) }
/// ```
pub struct InputFeed {
    label: String,
    mode: SplitMode,
    split_size: usize,
    read: ReadMode,
    files: Slots<InputFile>,
    /// The files' paths, also of those another rank opened (see [`FileNames`]).
    names: FileNames,
    splits: Slots<SplitRange>,
    state: Mutex<State>,
    grown: Condvar,
    /// One push (or adoption of a file) at a time.
    pushing: Mutex<()>,
}

impl std::fmt::Debug for InputFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputFeed").field("label", &self.label).field("state", &*lock(&self.state)).finish()
    }
}

impl InputFeed {
    /// An empty feed whose files are cut as `mode` says (the job's
    /// [`Job::split_mode`](crate::Job::split_mode)) into splits of about `split_size` bytes,
    /// and read as `read` says. `label` names the list for the ranks' agreement (every rank
    /// must give the same).
    pub fn new(label: impl Into<String>, mode: SplitMode, split_size: usize, read: ReadMode) -> Self {
        InputFeed {
            label: label.into(),
            mode,
            split_size: split_size.max(1),
            read,
            files: Slots::default(),
            names: FileNames::default(),
            splits: Slots::default(),
            state: Mutex::new(State::default()),
            grown: Condvar::new(),
            pushing: Mutex::new(()),
        }
    }

    /// Adds the finished file `path` (a directory adds the files below it, as
    /// [`Inputs::new`](crate::Inputs::new) does): opened and cut into splits now.
    ///
    /// # Errors
    ///
    /// [`Error::Input`] naming the path when it is missing or unreadable (the feed is
    /// unchanged); [`Error::Input`] too after [`InputFeed::end`].
    pub fn push(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let _one = lock(&self.pushing);
        if lock(&self.state).complete {
            return Err(Error::Input {
                path: path.to_owned(),
                what: "added after the end of the inputs".into(),
            });
        }
        let mut found = Vec::new();
        collect(path, true, &mut found)?;
        for path in found {
            let (index, first) = {
                let state = lock(&self.state);
                (state.files, state.splits)
            };
            let index32 = u32::try_from(index).map_err(|_| Error::Input {
                path: path.clone(),
                what: "more than 4 billion input files".into(),
            })?;
            let file = InputFile::open(path.clone(), index32, self.read)?;
            let mut planned = Vec::new();
            plan_file(index, &file, self.mode, self.split_size, &mut planned)?;
            let bytes = file.bytes().len() as u64;
            self.files.set(index, file);
            self.names.0.set(index, path);
            for (k, range) in planned.iter().enumerate() {
                self.splits.set(first + k, *range);
            }
            let mut state = lock(&self.state);
            state.files += 1;
            state.splits += planned.len();
            state.bytes += bytes;
            if let Some(p) = &state.progress {
                p.splits_total.store(state.splits as u64, Ordering::Relaxed);
                p.bytes_total.store(state.bytes, Ordering::Relaxed);
            }
            drop(state);
            self.grown.notify_all();
        }
        Ok(())
    }

    /// No more files will come: the map phase ends once the splits known are mapped.
    pub fn end(&self) {
        lock(&self.state).complete = true;
        self.grown.notify_all();
    }

    /// The producer failed (a listed file cannot be read): the job fails with `error`.
    pub fn fail(&self, error: Error) {
        let mut state = lock(&self.state);
        state.complete = true;
        state.error.get_or_insert(error);
        drop(state);
        self.grown.notify_all();
    }

    /// This feed, filling `names` (for a job built before the feed, which holds a clone of
    /// them) instead of a table of its own. Call it before any file is pushed.
    #[must_use]
    pub fn with_names(mut self, names: FileNames) -> Self {
        self.names = names;
        self
    }

    /// The paths of the files, filled as they arrive: for a job that names its input files
    /// (see [`FileNames`]).
    pub fn names(&self) -> FileNames {
        self.names.clone()
    }

    /// The paths of all files known here, in index order, each ended by a NUL byte (which no
    /// path holds): rank 0's, sent to the other ranks after the map phase.
    pub(crate) fn name_list(&self) -> Vec<u8> {
        let known = lock(&self.state).files;
        let mut out = Vec::new();
        for i in 0..known {
            if let Some(path) = self.names.0.get(i) {
                out.extend_from_slice(path.as_os_str().as_encoded_bytes());
            }
            out.push(0);
        }
        out
    }

    /// Learns the paths of [`InputFeed::name_list`] (those known already stay).
    pub(crate) fn learn_names(&self, list: &[u8]) {
        let Some(list) = list.strip_suffix(&[0]) else { return };
        for (i, name) in list.split(|&b| b == 0).enumerate() {
            self.names.0.set(i, PathBuf::from(std::ffi::OsStr::from_bytes(name)));
        }
    }

    /// Whether [`InputFeed::end`] or [`InputFeed::fail`] was called.
    pub fn ended(&self) -> bool {
        lock(&self.state).complete
    }

    /// Files and bytes added so far.
    pub fn totals(&self) -> (u64, u64) {
        let state = lock(&self.state);
        (state.files as u64, state.bytes)
    }

    /// The name every rank agrees on.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn split_mode(&self) -> SplitMode {
        self.mode
    }

    pub(crate) fn split_size(&self) -> usize {
        self.split_size
    }

    /// Keeps `progress`'s totals up to date from now on.
    pub(crate) fn attach(&self, progress: Arc<Progress>) {
        let mut state = lock(&self.state);
        progress.splits_total.store(state.splits as u64, Ordering::Relaxed);
        progress.bytes_total.store(state.bytes, Ordering::Relaxed);
        state.progress = Some(progress);
    }

    /// The producer's error, if it failed.
    pub(crate) fn take_error(&self) -> Option<Error> {
        lock(&self.state).error.take()
    }

    pub(crate) fn range(&self, i: usize) -> SplitRange {
        *self.splits.get(i).expect("a split handed out is known")
    }

    pub(crate) fn split(&self, range: SplitRange) -> Split<'_> {
        let file = self.files.get(range.file).expect("a known split's file is open");
        Split {
            file,
            offset: range.start as u64,
            data: &file.bytes()[range.start..range.end],
            first_line: range.first_line,
        }
    }

    pub(crate) fn release(&self, range: SplitRange) {
        if let Some(file) = self.files.get(range.file) {
            file.release(range.start..range.end);
        }
    }

    /// As [`Inputs::check_unchanged`](crate::Inputs::check_unchanged), for the files opened
    /// here (on another rank than 0: those of the splits it mapped).
    pub(crate) fn check_unchanged(&self) -> Result<()> {
        let known = lock(&self.state).files;
        (0..known).filter_map(|i| self.files.get(i)).try_for_each(|f| f.check_unchanged(self.read))
    }
}

/// A split's description for another rank: file index, start, end, first line, path.
fn describe(range: &SplitRange, path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for n in [range.file as u64, range.start as u64, range.end as u64, range.first_line] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(path.as_os_str().as_encoded_bytes());
    out
}

impl SplitList for InputFeed {
    fn known(&self) -> Known {
        let state = lock(&self.state);
        Known { count: state.splits, complete: state.complete }
    }

    fn wait_beyond(&self, seen: usize, timeout: Duration) -> Known {
        let state = lock(&self.state);
        let (state, _) = self
            .grown
            .wait_timeout_while(state, timeout, |s| s.splits <= seen && !s.complete)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Known { count: state.splits, complete: state.complete }
    }

    fn size(&self, i: usize) -> u64 {
        let r = self.range(i);
        (r.end - r.start) as u64
    }

    fn describe(&self, i: usize) -> Vec<u8> {
        let range = self.range(i);
        let file = self.files.get(range.file).expect("a known split's file is open");
        describe(&range, &file.path)
    }

    fn adopt(&self, i: usize, description: &[u8]) -> Result<()> {
        let bad = || Error::Cluster(format!("malformed split description of {} bytes", description.len()));
        let word = |k: usize| -> Result<usize> {
            let w = description.get(8 * k..8 * k + 8).ok_or_else(bad)?;
            usize::try_from(u64::from_le_bytes(w.try_into().expect("8 bytes"))).map_err(|_| bad())
        };
        let range =
            SplitRange { file: word(0)?, start: word(1)?, end: word(2)?, first_line: word(3)? as u64 };
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(description.get(32..).ok_or_else(bad)?));
        {
            let _one = lock(&self.pushing);
            if self.files.get(range.file).is_none() {
                let index = u32::try_from(range.file).map_err(|_| bad())?;
                let file = InputFile::open(path.clone(), index, self.read)?;
                if file.bytes().len() < range.end {
                    return Err(Error::Input {
                        path,
                        what: format!("{} bytes here, rank 0 read {} or more", file.bytes().len(), range.end),
                    });
                }
                let bytes = file.bytes().len() as u64;
                self.files.set(range.file, file);
                self.names.0.set(range.file, path);
                let mut state = lock(&self.state);
                state.files = state.files.max(range.file + 1);
                state.bytes += bytes;
            }
        }
        self.splits.set(i, range);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_learns_rank_0s_names() {
        let dir = tempfile::tempdir().unwrap();
        let names = FileNames::default();
        let feed = InputFeed::new("list", SplitMode::Lines, 4, ReadMode::default()).with_names(names.clone());
        let odd = dir.path().join("a, b\nc.txt");
        std::fs::write(&odd, "x y\n").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/e.txt"), "").unwrap(); // no splits, still named
        std::fs::write(dir.path().join("d/f.txt"), "z\n").unwrap();
        feed.push(&odd).unwrap();
        feed.push(dir.path().join("d")).unwrap();
        let expected = [odd.clone(), dir.path().join("d/e.txt"), dir.path().join("d/f.txt")];
        for (i, path) in expected.iter().enumerate() {
            assert_eq!(names.get(i as u32), Some(path.as_path()));
        }
        assert_eq!(names.get(3), None);
        // Another rank, which adopted a split of file 2 only.
        let other = InputFeed::new("list", SplitMode::Lines, 4, ReadMode::default());
        let last = feed.known().count - 1;
        other.adopt(last, &feed.describe(last)).unwrap();
        assert_eq!(other.names().get(0), None);
        other.learn_names(&feed.name_list());
        for (i, path) in expected.iter().enumerate() {
            assert_eq!(other.names().get(i as u32), Some(path.as_path()));
        }
    }

    #[test]
    fn slots_keep_their_entries_where_they_are() {
        let slots = Slots::<usize>::default();
        for i in [0, 1, 63, 64, 65, 191, 192, 10_000, 1 << 20] {
            assert!(slots.get(i).is_none());
            assert!(slots.set(i, i * 3));
            assert!(!slots.set(i, 0));
        }
        let first = slots.get(0).unwrap() as *const usize;
        for i in 2..5000 {
            slots.set(i, i * 3);
        }
        assert_eq!(slots.get(0).unwrap() as *const usize, first);
        for i in (0..5000).chain([10_000, 1 << 20]) {
            assert_eq!(slots.get(i), Some(&(i * 3)), "{i}");
        }
        let mut seen = std::collections::HashSet::new();
        for i in 0..100_000 {
            let (c, at) = Slots::<u8>::locate(i);
            assert!(at < FIRST << c && seen.insert((c, at)), "{i}");
        }
    }
}
