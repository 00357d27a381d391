//! Memory maps of files that may shrink while they are mapped.
//!
//! Reading a page of a shared file mapping that lies wholly past the end of the file raises
//! SIGBUS, whose default action kills the process (`Bus error`, exit status 135) before
//! anything can be cleaned up. An input of a job is a file that another process may truncate
//! while the job runs, so its mapping is *watched* ([`watch`]): a process-wide SIGBUS handler,
//! installed on first use, recognises a fault inside a watched mapping, maps anonymous zero
//! pages over the rest of it (from the faulting page to its end, one `mmap(MAP_FIXED)`), flags
//! the mapping and returns. The faulting read then sees zeros, and so does every later read of
//! the vanished range; the owner learns from [`Watch::vanished`] that the file changed and
//! fails the job through its ordinary error path.
//!
//! A fault anywhere else (an address outside every watched mapping, a SIGBUS sent by another
//! process, a hardware memory error) goes to the disposition that was in place before the
//! handler was installed (Rust's own handler, which reports a stack overflow, or MPI's), or to
//! the default action: genuine bugs still crash.
//!
//! The registry that the handler reads is async-signal-safe: no lock and no allocation in the
//! handler. It is a list of chunks of slots of atomics, each slot a seqlock over one mapping's
//! `(start, len)` and its flag. Chunks are allocated by [`watch`] (never in the handler) and
//! never freed; a slot is reused once its mapping is unwatched. A slot is only read while its
//! mapping is borrowed (a fault comes from a read of the mapping), so the mapping cannot be
//! unwatched or unmapped while the handler works on it; the seqlock keeps the handler from
//! taking a half-written slot for a match when the fault is elsewhere.

use std::ptr;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering, fence};

use libc::{c_int, c_void, siginfo_t};

/// Slots per chunk of the registry.
const SLOTS_PER_CHUNK: usize = 64;

/// One watched mapping, or nothing (`len == 0`).
struct Slot {
    /// Even: stable; odd: being written. Bumped by 2 per claim and per release.
    seq: AtomicUsize,
    start: AtomicUsize,
    /// Bytes of the file when it was mapped; 0 while the slot is free.
    len: AtomicUsize,
    /// Set by the handler when it replaced vanished pages with zeros.
    vanished: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            seq: AtomicUsize::new(0),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            vanished: AtomicBool::new(false),
        }
    }

    /// Takes the slot for the mapping `start..start + len` if it is free.
    fn claim(&self, start: usize, len: usize) -> bool {
        // Acquire: a slot seen released (even `seq`) is seen with the `len` of that release.
        let seq = self.seq.load(Ordering::Acquire);
        if seq % 2 == 1 || self.len.load(Ordering::Relaxed) != 0 {
            return false;
        }
        if self.seq.compare_exchange(seq, seq + 1, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return false;
        }
        fence(Ordering::Release);
        self.start.store(start, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
        self.vanished.store(false, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
        true
    }

    /// Frees the slot (only its owner calls this).
    fn release(&self) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.len.store(0, Ordering::Relaxed);
        self.start.store(0, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }

    /// The mapping the slot holds, read consistently, or `None` (free or being written).
    fn read(&self) -> Option<(usize, usize)> {
        let before = self.seq.load(Ordering::Acquire);
        if before % 2 == 1 {
            return None;
        }
        let start = self.start.load(Ordering::Relaxed);
        let len = self.len.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == before && len != 0).then_some((start, len))
    }
}

struct Chunk {
    slots: [Slot; SLOTS_PER_CHUNK],
    /// The next chunk (a leaked box), or null.
    next: AtomicPtr<Chunk>,
}

impl Chunk {
    const fn new() -> Self {
        Chunk { slots: [const { Slot::new() }; SLOTS_PER_CHUNK], next: AtomicPtr::new(ptr::null_mut()) }
    }
}

static FIRST: Chunk = Chunk::new();

/// Every chunk of the registry, in order (lock-free; safe in the handler).
fn chunks() -> impl Iterator<Item = &'static Chunk> {
    std::iter::successors(Some(&FIRST), |chunk| {
        let next = chunk.next.load(Ordering::Acquire);
        // SAFETY: `next` is null or a chunk leaked by `watch` (`Box::into_raw`, published with
        // release ordering after it was initialized); chunks are never freed.
        (!next.is_null()).then(|| unsafe { &*next })
    })
}

/// The watched mapping that contains `addr` (anywhere in its last page too): its slot, start
/// and length.
fn find(addr: usize, page: usize) -> Option<(&'static Slot, usize, usize)> {
    for chunk in chunks() {
        for slot in &chunk.slots {
            if let Some((start, len)) = slot.read()
                && addr >= start
                && addr - start < len.div_ceil(page) * page
            {
                return Some((slot, start, len));
            }
        }
    }
    None
}

/// A watched mapping's registration: unwatches it when dropped. Drop it before unmapping.
pub(crate) struct Watch {
    slot: &'static Slot,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("vanished", &self.vanished()).finish()
    }
}

impl Watch {
    /// True once a read of the mapping found pages past the end of the file (which then read
    /// as zeros).
    pub(crate) fn vanished(&self) -> bool {
        self.slot.vanished.load(Ordering::Acquire)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.slot.release();
    }
}

/// Watches the mapping of `len` bytes at `start` (page-aligned, as `mmap` returns it), and
/// installs the SIGBUS handler if this is the first.
pub(crate) fn watch(start: *const u8, len: usize) -> Watch {
    install();
    let start = start as usize;
    let mut chunk: &'static Chunk = &FIRST;
    loop {
        if let Some(slot) = chunk.slots.iter().find(|slot| slot.claim(start, len)) {
            return Watch { slot };
        }
        let next = chunk.next.load(Ordering::Acquire);
        chunk = if next.is_null() {
            let new = Box::into_raw(Box::new(Chunk::new()));
            match chunk.next.compare_exchange(ptr::null_mut(), new, Ordering::AcqRel, Ordering::Acquire) {
                // SAFETY: `new` came from `Box::into_raw` and is now published; it is leaked.
                Ok(_) => unsafe { &*new },
                Err(other) => {
                    // SAFETY: `new` was not published; this is its only pointer.
                    drop(unsafe { Box::from_raw(new) });
                    // SAFETY: as in `chunks`.
                    unsafe { &*other }
                }
            }
        } else {
            // SAFETY: as in `chunks`.
            unsafe { &*next }
        };
    }
}

/// The page size, read once when the handler is installed (`sysconf` is not async-signal-safe).
static PAGE: AtomicUsize = AtomicUsize::new(4096);
/// The disposition SIGBUS had before ours (a leaked box), or null.
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());

/// Installs the handler, once per process.
fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(page) = usize::try_from(page)
            && page.is_power_of_two()
        {
            PAGE.store(page, Ordering::Relaxed);
        }
        // SAFETY: `sigaction` is a plain C struct for which all zeroes is valid; the calls get
        // valid pointers; the handler has the SA_SIGINFO signature and only does
        // async-signal-safe work (atomics, mmap, sigaction, raise).
        unsafe {
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, ptr::null(), &mut previous) == 0 {
                PREVIOUS.store(Box::into_raw(Box::new(previous)), Ordering::Release);
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as extern "C" fn(c_int, *mut siginfo_t, *mut c_void) as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            // Without the handler, a truncated input kills the process as it did before.
            libc::sigaction(libc::SIGBUS, &action, ptr::null_mut());
        }
    });
}

/// The SIGBUS handler.
extern "C" fn on_sigbus(signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo (SA_SIGINFO); `errno` is this thread's.
    unsafe {
        let errno = *libc::__errno_location();
        let page = PAGE.load(Ordering::Relaxed);
        // Only a fault on an address past the end of a file has a meaningful `si_addr` here
        // (for a signal sent by a process the same bytes hold its pid and uid).
        if (*info).si_code == libc::BUS_ADRERR
            && let Some((slot, start, len)) = find((*info).si_addr() as usize, page)
        {
            let from = (*info).si_addr() as usize & !(page - 1);
            let end = start + len.div_ceil(page) * page;
            // Zero pages, read-only like the mapping, over the faulting page and everything
            // after it (the file has shrunk at least to there). The mapping is borrowed by the
            // faulting read, so this range is still this mapping's.
            let zeros = libc::mmap(
                from as *mut c_void,
                end - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            if zeros != libc::MAP_FAILED {
                slot.vanished.store(true, Ordering::Release);
                *libc::__errno_location() = errno;
                return;
            }
        }
        chain(signal, info, context);
        *libc::__errno_location() = errno;
    }
}

/// Passes a signal that is not ours to the previous disposition.
///
/// # Safety
///
/// Called from the SIGBUS handler with the arguments it got.
unsafe fn chain(signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let previous = PREVIOUS.load(Ordering::Acquire);
    // SAFETY: null or a leaked box that is never written again.
    let (handler, flags) = match unsafe { previous.as_ref() } {
        Some(previous) => (previous.sa_sigaction, previous.sa_flags),
        None => (libc::SIG_DFL, 0),
    };
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: as in `install`. Back to the default action (a synchronous fault cannot be
        // ignored): the faulting access runs again on return and the process dies of SIGBUS,
        // with a core dump where enabled. A signal sent by a process would not recur, so it is
        // raised again (blocked in this handler, delivered on return).
        unsafe {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGBUS, &default, ptr::null_mut());
            if (*info).si_code <= 0 {
                libc::raise(libc::SIGBUS);
            }
        }
    } else if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this signature.
        let previous: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(handler) };
        previous(signal, info, context);
    } else {
        // SAFETY: a handler installed without SA_SIGINFO takes the signal number only.
        let previous: extern "C" fn(c_int) = unsafe { std::mem::transmute(handler) };
        previous(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_mappings_are_found_until_unwatched_and_slots_are_reused() {
        const PAGE: usize = 4096;
        // Fake mappings at addresses no real mapping uses (the registry does not map anything).
        let base = (usize::MAX / 2) & !(PAGE - 1);
        let a = watch(base as *const u8, 10_000);
        let b = watch((base + 100 * PAGE) as *const u8, PAGE);
        let slot_a = a.slot as *const Slot;
        let found =
            |addr: usize| find(addr, PAGE).map(|(slot, start, len)| (slot as *const Slot, start, len));
        assert_eq!(found(base), Some((slot_a, base, 10_000)));
        // Inside the last, partial page of `a`, but not past it.
        assert_eq!(found(base + 12_287), Some((slot_a, base, 10_000)));
        assert_eq!(found(base + 12_288), None);
        assert_eq!(found(base - 1), None);
        assert_eq!(found(base + 100 * PAGE + 5).map(|f| f.2), Some(PAGE));
        assert!(!a.vanished() && !b.vanished());
        a.slot.vanished.store(true, Ordering::Release);
        assert!(a.vanished() && !b.vanished());

        drop(a);
        assert_eq!(found(base), None);
        assert_eq!(found(base + 100 * PAGE).map(|f| f.1), Some(base + 100 * PAGE));
        // A new registration takes a free slot and starts unflagged.
        let c = watch((base + 200 * PAGE) as *const u8, 1);
        assert!(!c.vanished());
        assert_eq!(found(base + 200 * PAGE).map(|f| f.2), Some(1));
        drop((b, c));
        assert_eq!(found(base + 100 * PAGE), None);
        assert_eq!(found(base + 200 * PAGE), None);
    }

    #[test]
    fn the_registry_grows_past_one_chunk() {
        let base = (usize::MAX / 4) & !4095;
        let watches: Vec<Watch> =
            (0..3 * SLOTS_PER_CHUNK).map(|i| watch((base + i * 8192) as *const u8, 4096)).collect();
        assert!(chunks().count() >= 3);
        for (i, watch) in watches.iter().enumerate() {
            let (slot, start, _) = find(base + i * 8192 + 17, 4096).expect("watched");
            assert_eq!(start, base + i * 8192);
            assert!(ptr::eq(slot, watch.slot));
        }
        assert!(find(base + 4096, 4096).is_none());
        drop(watches);
        assert!(find(base, 4096).is_none());
    }
}
