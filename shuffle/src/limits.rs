//! The open-file threshold F (`max_open_runs`) and its default.

/// File descriptors kept back for everything that is not a run being merged: inputs being
/// mapped, output files, the journal, MPI's own sockets, stdio.
pub const FD_RESERVE: u64 = 64;

/// The largest default F; beyond this a merge gains nothing and loses cache locality.
pub const MAX_DEFAULT_FAN_IN: usize = 1024;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the (new) soft limit. When
/// the limit cannot be read, assumes the common default of 1024.
pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => soft,
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft),
    }
}

/// The default `max_open_runs` when `concurrent_merges` merges may run at once: the soft
/// `RLIMIT_NOFILE` (after raising it to the hard limit) less [`FD_RESERVE`], shared between
/// the concurrent merges, clamped to `2..=1024`.
pub fn default_max_open_runs(concurrent_merges: usize) -> usize {
    let soft = raise_nofile_limit();
    let available = soft.saturating_sub(FD_RESERVE) / concurrent_merges.max(1) as u64;
    usize::try_from(available).unwrap_or(usize::MAX).clamp(2, MAX_DEFAULT_FAN_IN)
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_fan_in_is_bounded() {
        let f = super::default_max_open_runs(2);
        assert!((2..=super::MAX_DEFAULT_FAN_IN).contains(&f));
        assert!(super::default_max_open_runs(1_000_000) == 2);
    }
}
