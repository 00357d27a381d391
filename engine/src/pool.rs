//! The worker pool every phase runs on: N named threads in a scope, the first error wins and
//! stops the others at their next work item, and a thread that cannot be started is an
//! [`Error::Spawn`] (the job fails cleanly) rather than a panic. Also the one poison-tolerant
//! [`lock`]: a panic in job code is caught and reported per work item, so a lock it poisoned
//! still guards consistent data.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{Scope, ScopedJoinHandle};

use crate::error::{Error, Result};
use crate::metrics::Progress;

/// Locks `mutex`, ignoring poison (see the module docs).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes the value out of `mutex`, ignoring poison (see the module docs).
pub(crate) fn into_inner<T>(mutex: Mutex<T>) -> T {
    mutex.into_inner().unwrap_or_else(PoisonError::into_inner)
}

/// The first failure of a group of workers; later ones are dropped.
#[derive(Debug, Default)]
pub(crate) struct FirstError(Mutex<Option<Error>>);

impl FirstError {
    /// Records `e` unless an error was recorded already.
    pub(crate) fn set(&self, e: Error) {
        lock(&self.0).get_or_insert(e);
    }

    /// Records the error of `result`, if any; returns its value.
    pub(crate) fn keep<T>(&self, result: Result<T>) -> Option<T> {
        result.map_err(|e| self.set(e)).ok()
    }

    /// Whether an error was recorded (workers stop at their next item).
    pub(crate) fn failed(&self) -> bool {
        lock(&self.0).is_some()
    }

    /// The recorded error, if any.
    pub(crate) fn into_result(self) -> Result<()> {
        match into_inner(self.0) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Starts a thread named `name` in `scope`; one that cannot be started records
/// [`Error::Spawn`] in `failure` (and returns `None`), so that the workers already running
/// stop at their next item and the job fails with that error.
pub(crate) fn spawn<'scope, 'env, T: Send + 'scope>(
    scope: &'scope Scope<'scope, 'env>,
    name: String,
    failure: &FirstError,
    f: impl FnOnce() -> T + Send + 'scope,
) -> Option<ScopedJoinHandle<'scope, T>> {
    match std::thread::Builder::new().name(name.clone()).spawn_scoped(scope, f) {
        Ok(handle) => Some(handle),
        Err(source) => {
            failure.set(Error::Spawn { thread: name, source });
            None
        }
    }
}

/// Work started by [`spawn_or_run`]: on its own thread, or already done.
pub(crate) enum Started<'scope, T> {
    /// Running on its own thread.
    Thread(ScopedJoinHandle<'scope, T>),
    /// Done on the calling thread (no thread could be started).
    Done(T),
}

impl<T> Started<'_, T> {
    /// Waits for the work's result (a panic in it goes on unwinding here).
    pub(crate) fn join(self) -> T {
        match self {
            Started::Thread(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Started::Done(result) => result,
        }
    }
}

/// Runs `f` on a new thread named `name` in `scope`, or right here when no thread can be
/// started: for work that every range of the data needs done (the job then runs on fewer
/// threads rather than failing).
pub(crate) fn spawn_or_run<'scope, 'env, T: Send + 'scope>(
    scope: &'scope Scope<'scope, 'env>,
    name: String,
    f: impl FnOnce() -> T + Send + 'scope,
) -> Started<'scope, T> {
    let cell = std::sync::Arc::new(Mutex::new(Some(f)));
    let theirs = std::sync::Arc::clone(&cell);
    let started = std::thread::Builder::new()
        .name(name)
        .spawn_scoped(scope, move || lock(&theirs).take().map(|f| f()).expect("work taken once"));
    match started {
        Ok(handle) => Started::Thread(handle),
        // The closure given to the failed spawn is dropped: the work is still in the cell.
        Err(_) => Started::Done(lock(&cell).take().expect("work not started")()),
    }
}

/// How many worker threads a phase runs on: a fixed number, or as many as the job's
/// [`Progress::threads_wanted`] asks for now (`spillway ctl --threads`), between 1 and
/// `max`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Crew<'a> {
    /// The count when nothing else is wanted (the engine's threads).
    base: usize,
    /// The most threads it can grow to.
    max: usize,
    /// Where a change is asked for; `None`: fixed at `base`.
    progress: Option<&'a Progress>,
}

impl<'a> Crew<'a> {
    /// Always `threads` threads.
    pub(crate) fn fixed(threads: usize) -> Self {
        Crew { base: threads.max(1), max: threads.max(1), progress: None }
    }

    /// `base` threads unless `progress` asks for another count (at most `max`).
    pub(crate) fn following(base: usize, max: usize, progress: &'a Progress) -> Self {
        Crew { base: base.max(1), max: max.max(base).max(1), progress: Some(progress) }
    }

    /// The number of threads wanted now.
    pub(crate) fn wanted(&self) -> usize {
        match self.progress {
            None => self.base,
            Some(progress) => match progress.threads_wanted.load(Ordering::Relaxed) {
                0 => self.base,
                n => n.min(self.max),
            },
        }
    }

    /// The most threads this crew can have.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// The job's progress counters, when the crew follows them.
    pub(crate) fn progress(&self) -> Option<&'a Progress> {
        self.progress
    }

    /// Blocks until something changed or `done` holds (see [`Progress::wait_for_change`]);
    /// a fixed crew returns at once.
    pub(crate) fn wait(&self, done: impl Fn() -> bool) {
        if let Some(progress) = self.progress {
            progress.wait_for_change(done);
        }
    }

    /// Wakes the threads in [`Crew::wait`].
    pub(crate) fn notify(&self) {
        if let Some(progress) = self.progress {
            progress.notify();
        }
    }

    /// Counts a worker as active (`+1`) or not (`-1`) in [`Progress::threads_active`].
    fn active(&self, delta: isize) {
        if let Some(progress) = self.progress {
            match delta {
                1 => progress.threads_active.fetch_add(1, Ordering::Relaxed),
                _ => progress.threads_active.fetch_sub(1, Ordering::Relaxed),
            };
        }
    }
}

impl From<usize> for Crew<'_> {
    fn from(threads: usize) -> Self {
        Crew::fixed(threads)
    }
}

/// Runs `work` on every item of `items`, taken in order, on up to `threads` threads named
/// `name-i`, each thread with its own state made by `init` (buffers reused from item to
/// item); stops at the first error and returns it, otherwise every result (in no particular
/// order).
pub(crate) fn for_each_with<T: Send, R: Send, S>(
    name: &str,
    threads: usize,
    items: Vec<T>,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    for_each_in(name, Crew::fixed(threads), items, init, work)
}

/// As [`for_each_with`] on the threads of `crew`: worker `i` takes an item only while `i`
/// is below the crew's wanted count, and waits (without spinning) otherwise; more workers
/// start when more are wanted, up to one per item.
pub(crate) fn for_each_in<T: Send, R: Send, S>(
    name: &str,
    crew: Crew<'_>,
    items: Vec<T>,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let total = items.len();
    let queue = Mutex::new(items.into_iter());
    let done = Mutex::new(Vec::new());
    let failure = FirstError::default();
    let empty = || lock(&queue).len() == 0;
    let over = || empty() || failure.failed() || crew.progress().is_some_and(Progress::cancelled);
    std::thread::scope(|scope| {
        let mut started = 0;
        loop {
            while started < crew.wanted().min(total) {
                let i = started;
                let (queue, done, failure, init, work, over) = (&queue, &done, &failure, &init, &work, &over);
                let worker = move || {
                    crew.active(1);
                    let mut state = None;
                    while !failure.failed() {
                        if i >= crew.wanted() {
                            // Not wanted now: wait until it is, or the work is over.
                            crew.active(-1);
                            crew.wait(|| i < crew.wanted() || over());
                            crew.active(1);
                            if over() {
                                break;
                            }
                            continue;
                        }
                        let item = {
                            let mut queue = lock(queue);
                            let item = queue.next();
                            if queue.len() == 0 {
                                drop(queue);
                                crew.notify(); // the waiting workers and the starter see the end
                            }
                            item
                        };
                        let Some(item) = item else { break };
                        let state = state.get_or_insert_with(init);
                        if let Some(result) = failure.keep(work(state, item)) {
                            lock(done).push(result);
                        } else {
                            crew.notify();
                        }
                    }
                    crew.active(-1);
                };
                if spawn(scope, format!("{name}-{i}"), failure, worker).is_none() {
                    return;
                }
                started += 1;
            }
            if crew.progress().is_none() || started >= total || over() {
                break;
            }
            crew.wait(|| crew.wanted().min(total) > started || over());
        }
    });
    failure.into_result()?;
    Ok(into_inner(done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn for_each<T: Send, R: Send>(
        threads: usize,
        items: Vec<T>,
        work: impl Fn(T) -> Result<R> + Sync,
    ) -> Result<Vec<R>> {
        for_each_with("t", threads, items, || (), |(), item| work(item))
    }

    #[test]
    fn every_item_runs_once_and_the_first_error_wins() {
        let mut got = for_each(3, (0..100).collect(), |i: u32| Ok(i * 2)).unwrap();
        got.sort_unstable();
        assert_eq!(got, (0..100).map(|i| i * 2).collect::<Vec<_>>());

        let err =
            for_each(2, (0..100).collect(), |i: u32| if i == 50 { Err(Error::Cancelled) } else { Ok(i) })
                .unwrap_err();
        assert!(matches!(err, Error::Cancelled));
        assert!(for_each(4, Vec::<u32>::new(), Ok).unwrap().is_empty());
    }

    /// The wanted count changes while items run (up beyond the base, then down to one, then
    /// up): every item still runs exactly once, and no worker counts as active after.
    #[test]
    fn a_crew_that_grows_and_shrinks_runs_every_item_once() {
        let progress = Progress::default();
        progress.threads_max.store(6, Ordering::Relaxed);
        let crew = Crew::following(2, 6, &progress);
        let mut got = for_each_in(
            "t",
            crew,
            (0..300u32).collect(),
            || (),
            |(), i| {
                match i {
                    20 => progress.set_threads_wanted(6),
                    120 => progress.set_threads_wanted(1),
                    260 => progress.set_threads_wanted(3),
                    _ => {}
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
                Ok(i)
            },
        )
        .unwrap();
        got.sort_unstable();
        assert_eq!(got, (0..300).collect::<Vec<_>>());
        assert_eq!(progress.threads_active.load(Ordering::Relaxed), 0);
    }
}
