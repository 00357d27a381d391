//! The worker pool every phase runs on: N named threads in a scope, the first error wins and
//! stops the others at their next work item, and a thread that cannot be started is an
//! [`Error::Spawn`] (the job fails cleanly) rather than a panic. Also the one poison-tolerant
//! [`lock`]: a panic in job code is caught and reported per work item, so a lock it poisoned
//! still guards consistent data.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{Scope, ScopedJoinHandle};

use crate::error::{Error, Result};

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

/// Runs `work` on every item of `items`, taken in order, on up to `threads` threads named
/// `name-i`; stops at the first error and returns it, otherwise every result (in no
/// particular order).
pub(crate) fn for_each<T: Send, R: Send>(
    name: &str,
    threads: usize,
    items: Vec<T>,
    work: impl Fn(T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    for_each_with(name, threads, items, || (), |(), item| work(item))
}

/// As [`for_each`], each thread with its own state made by `init` (buffers reused from item
/// to item).
pub(crate) fn for_each_with<T: Send, R: Send, S>(
    name: &str,
    threads: usize,
    items: Vec<T>,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let threads = threads.min(items.len());
    let queue = Mutex::new(items.into_iter());
    let done = Mutex::new(Vec::new());
    let failure = FirstError::default();
    std::thread::scope(|scope| {
        for i in 0..threads {
            let (queue, done, failure, init, work) = (&queue, &done, &failure, &init, &work);
            let worker = move || {
                let mut state = init();
                while !failure.failed() {
                    let Some(item) = lock(queue).next() else { break };
                    if let Some(result) = failure.keep(work(&mut state, item)) {
                        lock(done).push(result);
                    }
                }
            };
            if spawn(scope, format!("{name}-{i}"), failure, worker).is_none() {
                break;
            }
        }
    });
    failure.into_result()?;
    Ok(into_inner(done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_and_the_first_error_wins() {
        let mut got = for_each("t", 3, (0..100).collect(), |i: u32| Ok(i * 2)).unwrap();
        got.sort_unstable();
        assert_eq!(got, (0..100).map(|i| i * 2).collect::<Vec<_>>());

        let err = for_each(
            "t",
            2,
            (0..100).collect(),
            |i: u32| {
                if i == 50 { Err(Error::Cancelled) } else { Ok(i) }
            },
        )
        .unwrap_err();
        assert!(matches!(err, Error::Cancelled));
        assert!(for_each("t", 4, Vec::<u32>::new(), Ok).unwrap().is_empty());
    }
}
