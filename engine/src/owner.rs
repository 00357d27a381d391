//! Which process made a temporary path, written into its name, so that a later job can tell
//! whether the maker is dead and the path an orphan it may remove.
//!
//! The tag is `<host>-<pidns>-<pid>-<start>`: the host name (bytes other than ASCII letters,
//! digits, `.`, `_` and `-` replaced by `_`), the inode of the process's PID namespace (two
//! containers on one host may share a host name and a directory but not their PIDs), the
//! process ID, and the process's start time (field 22 of `/proc/<pid>/stat`, clock ticks
//! since boot), which tells a reused PID from the original. The maker is dead *here* when
//! the tag names this host and PID namespace and `/proc/<pid>/stat` is missing or gives
//! another start time. A tag of another host or namespace is never judged dead: this
//! process cannot see that host's processes. Where `/proc` cannot tell any of this (not
//! mounted, or mounted from another PID namespace), [`OwnerTag::current`] is `None` and no
//! name carries a tag.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::cleanup::{Notice, notify};
use std::sync::OnceLock;

/// Who made a path: host, PID namespace, PID and start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnerTag {
    host: String,
    pidns: u64,
    pid: u32,
    start: u64,
}

impl OwnerTag {
    /// This process's tag, or `None` when `/proc` does not tell the host name, the PID
    /// namespace or the start time.
    pub(crate) fn current() -> Option<&'static OwnerTag> {
        static CURRENT: OnceLock<Option<OwnerTag>> = OnceLock::new();
        CURRENT
            .get_or_init(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
                let host = sanitize(host.trim_end_matches('\n'));
                let pidns = pid_namespace(Path::new("/proc/self/ns/pid"))?;
                let pid = std::process::id();
                let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
                // A `/proc` of another PID namespace (mounted from the host, say) numbers
                // processes otherwise: it cannot tell which of ours are alive.
                if stat.split(' ').next() != Some(pid.to_string().as_str()) {
                    return None;
                }
                let start = start_time(&stat)?;
                Some(OwnerTag { host, pidns, pid, start })
            })
            .as_ref()
    }

    /// Parses a tag as [`OwnerTag`]'s `Display` writes it; `None` if `text` is not one.
    pub(crate) fn parse(text: &str) -> Option<OwnerTag> {
        let mut fields = text.rsplitn(4, '-');
        let start = number(fields.next()?)?;
        let pid = number(fields.next()?)?;
        let pidns = number(fields.next()?)?;
        let host = fields.next()?;
        let host_ok = !host.is_empty() && host.len() <= 64 && sanitize(host) == host;
        host_ok.then(|| OwnerTag { host: host.to_owned(), pidns, pid, start })
    }

    /// True when the process that made this tag ran on this host, in this PID namespace, and
    /// no longer runs (its PID is unused, or used by a process that started at another time).
    /// False when that cannot be known: another host or namespace, or `/proc` unreadable.
    pub(crate) fn is_dead_here(&self) -> bool {
        let Some(me) = OwnerTag::current() else { return false };
        if self.host != me.host || self.pidns != me.pidns {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => start_time(&stat).is_some_and(|start| start != self.start),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }
}

/// Names of directories moved aside to be removed whole (see `cleanup`).
const REMOVING: &str = ".spillway-removing-";

/// The name a directory takes while this process removes it: [`REMOVING`], this process's
/// tag (or, where `/proc` gives none, its PID) and `id`. Should the process die before the
/// removal ends, the next sweep beside it finds the rest by the tag ([`remove_dead`]).
pub(crate) fn removing_name(id: u64) -> String {
    match OwnerTag::current() {
        Some(tag) => format!("{REMOVING}{tag}-{id}"),
        None => format!("{REMOVING}{}-{id}", std::process::id()),
    }
}

/// The owner of a name [`removing_name`] made, if it carries a tag.
fn removing_owner(name: &str) -> Option<OwnerTag> {
    let (tag, id) = name.strip_prefix(REMOVING)?.rsplit_once('-')?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| OwnerTag::parse(tag))?
}

/// Removes every directory in `parent` that a dead job left: its name gives an owner
/// (`owner_of`, or the name is one a dead job's removal moved aside: [`removing_name`]) that
/// [`OwnerTag::is_dead_here`], it is a directory (not a link) owned by this
/// user. Each is first moved into `claim_into` (a directory of this job's own), so that of
/// several jobs sweeping at once exactly one removes it (and reports it, as `notice(path,
/// bytes)`), and that should this job die too, it goes with this job's directory. Best effort:
/// what cannot be moved or removed stays, unreported.
pub(crate) fn remove_dead(
    parent: &Path,
    claim_into: &Path,
    owner_of: impl Fn(&str) -> Option<OwnerTag>,
    notice: impl Fn(PathBuf, u64) -> Notice,
) {
    if OwnerTag::current().is_none() {
        return;
    }
    let (Ok(mine), Ok(entries)) = (std::fs::metadata(claim_into), std::fs::read_dir(parent)) else {
        return;
    };
    let dead: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let owner = name.to_str().and_then(|name| owner_of(name).or_else(|| removing_owner(name)));
            owner.is_some_and(|owner| {
                std::fs::symlink_metadata(entry.path())
                    .is_ok_and(|meta| meta.is_dir() && meta.uid() == mine.uid())
                    && owner.is_dead_here()
            })
        })
        .map(|entry| entry.path())
        .collect();
    for (n, path) in dead.into_iter().enumerate() {
        let claimed = claim_into.join(format!(".dead-{n}"));
        if std::fs::rename(&path, &claimed).is_err() {
            continue; // another job took it, or it cannot be moved
        }
        let bytes = tree_bytes(&claimed);
        if std::fs::remove_dir_all(&claimed).is_ok() {
            notify(&notice(path, bytes));
        }
    }
}

/// The bytes of the files below `dir` (links not followed).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_bytes(&entry.path()),
            _ => entry.metadata().map_or(0, |meta| meta.len()),
        })
        .sum()
}

impl fmt::Display for OwnerTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}-{}", self.host, self.pidns, self.pid, self.start)
    }
}

/// A decimal number of ASCII digits only (no sign, no `+`).
fn number<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The host name as it goes into names: ASCII letters, digits, `.`, `_` and `-` kept, every
/// other byte `_`, at most 64 bytes (the kernel's limit), never empty.
fn sanitize(host: &str) -> String {
    let clean: String = host
        .bytes()
        .take(64)
        .map(|b| if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') { b as char } else { '_' })
        .collect();
    if clean.is_empty() { "_".into() } else { clean }
}

/// The inode number in the `pid:[N]` link of a PID namespace.
fn pid_namespace(link: &Path) -> Option<u64> {
    let target = std::fs::read_link(link).ok()?;
    number(target.to_str()?.strip_prefix("pid:[")?.strip_suffix(']')?)
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its closing `)`.
fn start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    number(rest.split_ascii_whitespace().nth(22 - 3)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tag of this host and namespace with another PID and start time (for tests).
    pub(crate) fn tag_here(pid: u32, start: u64) -> OwnerTag {
        OwnerTag { pid, start, ..OwnerTag::current().expect("/proc tells this process's tag").clone() }
    }

    /// A tag of another host (for tests).
    pub(crate) fn tag_elsewhere(host: &str, pid: u32, start: u64) -> OwnerTag {
        OwnerTag { host: host.into(), ..tag_here(pid, start) }
    }

    /// This process's start time.
    pub(crate) fn my_start() -> u64 {
        OwnerTag::current().unwrap().start
    }

    #[test]
    fn tags_format_and_parse_back() {
        let me = OwnerTag::current().expect("/proc tells this process's tag");
        assert_eq!(me.pid, std::process::id());
        assert_eq!(OwnerTag::parse(&me.to_string()).as_ref(), Some(me));
        let tag = OwnerTag { host: "node-17.cluster".into(), pidns: 4026531836, pid: 42, start: 123456 };
        assert_eq!(tag.to_string(), "node-17.cluster-4026531836-42-123456");
        assert_eq!(OwnerTag::parse("node-17.cluster-4026531836-42-123456"), Some(tag));
        for bad in
            ["", "42-123456", "-1-42-123456", "h-1-42-", "h-1-+42-5", "h-1-x-5", "h/x-1-42-5", "r0-1234"]
        {
            assert_eq!(OwnerTag::parse(bad), None, "{bad:?}");
        }
        assert_eq!(sanitize("a b/c\u{e9}"), "a_b_c__");
        assert_eq!(sanitize(""), "_");
    }

    #[test]
    fn start_time_is_field_22_after_the_command_name() {
        let mut stat = String::from("4242 (a (weird) name) S");
        for field in 4..=52 {
            stat.push_str(&format!(" {field}"));
        }
        assert_eq!(start_time(&stat), Some(22));
        assert_eq!(start_time("4242 (x) S 1 2"), None);
    }

    #[test]
    fn only_a_process_gone_from_this_host_is_dead() {
        let start = my_start();
        // This process: alive.
        assert!(!tag_here(std::process::id(), start).is_dead_here());
        // Its PID with another start time: the PID was reused, the maker is dead.
        assert!(tag_here(std::process::id(), start + 1).is_dead_here());
        // A PID above the kernel's limit (2^22) never exists.
        assert!(tag_here(999_999_999, start).is_dead_here());
        // Another host, or another PID namespace: unknown, so not dead.
        assert!(!tag_elsewhere("some-other-host", 999_999_999, start).is_dead_here());
        let other_ns = OwnerTag { pidns: tag_here(1, 1).pidns + 1, ..tag_here(999_999_999, start) };
        assert!(!other_ns.is_dead_here());
    }
}
