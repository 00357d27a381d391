//! `--inputs-from LIST`: input paths that arrive while the job runs, one per line, read by a
//! thread of rank 0 into the engine's [`InputFeed`].
//!
//! - A line names a finished file (or a directory of finished files); it is opened and cut
//!   into splits at once. Relative paths are taken from the current directory, as the
//!   positional inputs are. Blank lines and lines starting with `#` are skipped, except
//!   `#end`, which ends the input.
//! - `-` (standard input) or a FIFO: the input ends at end of file (a last line without a
//!   newline counts).
//! - A regular file: still being appended, so its end of file is not the end. The reader
//!   polls it every 50 ms for new complete lines (a line counts once its newline is written)
//!   until a line `#end`, or `spillway ctl STATUS --end-of-input` (with `--status STATUS`).
//! - A listed path that is missing or unreadable fails the job, naming the path and the line.

use std::io::{BufRead, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use spillway_engine::{Error, InputFeed};

use super::common::InputError;

/// How often a regular list file is read again for new lines.
const POLL: Duration = Duration::from_millis(50);

/// The line that ends the input.
pub const END_LINE: &str = "#end";

/// Where the list comes from.
enum List {
    /// Standard input or a FIFO: ends at end of file.
    Stream(Box<dyn Read + Send>),
    /// A regular file that is still being appended.
    File(std::fs::File),
}

/// Opens the list `path` (`-`: standard input) and starts a thread that pushes every path it
/// names into `feed` and ends the feed at its end (or fails it).
///
/// # Errors
///
/// The list cannot be opened (an [`InputError`] naming it).
pub fn follow(path: &Path, feed: Arc<InputFeed>) -> Result<(), InputError> {
    let shown = if path == Path::new("-") { "standard input".to_owned() } else { path.display().to_string() };
    let list = if path == Path::new("-") {
        List::Stream(Box::new(std::io::stdin()))
    } else {
        let refuse = |e: std::io::Error| InputError(format!("--inputs-from {}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(refuse)?;
        match file.metadata().map_err(refuse)?.file_type() {
            t if t.is_fifo() || t.is_char_device() || t.is_socket() => List::Stream(Box::new(file)),
            t if t.is_file() => List::File(file),
            _ => return Err(InputError(format!("--inputs-from {}: not a file", path.display()))),
        }
    };
    std::thread::Builder::new()
        .name("spillway-inputs-from".into())
        .spawn(move || {
            let mut reader = Reader { feed: &feed, shown, line: 0 };
            if let Err(e) = reader.read(list) {
                feed.fail(e);
            } else {
                feed.end();
            }
        })
        .map_err(|e| InputError(format!("cannot start the --inputs-from reader: {e}")))?;
    Ok(())
}

struct Reader<'a> {
    feed: &'a InputFeed,
    /// The list's name, for messages.
    shown: String,
    line: u64,
}

impl Reader<'_> {
    /// Reads the whole list; `Ok` at its end (or once the feed was ended from outside).
    fn read(&mut self, list: List) -> Result<(), Error> {
        let io =
            |shown: &str, e: std::io::Error| Error::Input { path: PathBuf::from(shown), what: e.to_string() };
        match list {
            List::Stream(stream) => {
                let mut lines = std::io::BufReader::new(stream);
                let mut text = Vec::new();
                loop {
                    text.clear();
                    if lines.read_until(b'\n', &mut text).map_err(|e| io(&self.shown, e))? == 0 {
                        return Ok(());
                    }
                    if self.take(&text)? || self.feed.ended() {
                        return Ok(());
                    }
                }
            }
            List::File(mut file) => {
                let mut pending = Vec::new();
                let mut chunk = vec![0u8; 64 << 10];
                loop {
                    let n = file.read(&mut chunk).map_err(|e| io(&self.shown, e))?;
                    if n == 0 {
                        if self.feed.ended() {
                            return Ok(()); // `ctl --end-of-input`, or the job is over
                        }
                        std::thread::sleep(POLL);
                        continue;
                    }
                    pending.extend_from_slice(&chunk[..n]);
                    // Only complete lines: the rest may still be being written.
                    while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=nl).collect();
                        if self.take(&line)? {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// One line: `true` if it ends the input.
    fn take(&mut self, line: &[u8]) -> Result<bool, Error> {
        use std::os::unix::ffi::OsStrExt;
        self.line += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text == END_LINE.as_bytes() {
            return Ok(true);
        }
        if text.iter().all(u8::is_ascii_whitespace) || text.first() == Some(&b'#') {
            return Ok(false);
        }
        let path = Path::new(std::ffi::OsStr::from_bytes(text));
        self.feed.push(path).map_err(|e| match e {
            Error::Input { path, what } => Error::Input {
                path,
                what: format!("{what} (line {} of --inputs-from {})", self.line, self.shown),
            },
            other => other,
        })?;
        Ok(false)
    }
}
