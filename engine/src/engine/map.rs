//! The map phase: worker threads pull splits, map them into their buffers, spill, and run
//! background merges as soon as F runs wait.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};

use spillway_shuffle::Partitioner;

use super::Engine;
use crate::buffer::{AppendBuffer, CombineBuffer, SpillBuffer};
use crate::cluster::SplitSource;
use crate::error::{Error, Result};
use crate::input::{Inputs, SplitRange};
use crate::job::{Emitter, Job};
use crate::pool::{self, FirstError};
use crate::spill::Spiller;

impl Engine {
    /// Maps every split on the worker threads; background merges run on the same threads as
    /// soon as F runs wait. Returns the number of pairs emitted.
    pub(super) fn map_phase<J: Job>(
        &self,
        job: &J,
        inputs: &Inputs,
        splits: &[SplitRange],
        partitioner: &dyn Partitioner,
        spiller: &Spiller<'_>,
    ) -> Result<(u64, u64)> {
        let sizes: Vec<u64> = splits.iter().map(|r| (r.end - r.start) as u64).collect();
        let source = self.cluster.split_source(&sizes, &self.progress);
        let source: &dyn SplitSource = &*source;
        let records = AtomicU64::new(0);
        let mapped = AtomicU64::new(0);
        let failure = FirstError::default();
        let share = usize::try_from(self.memory_budget / self.threads as u64).unwrap_or(usize::MAX);
        let progress = &*self.progress;
        std::thread::scope(|scope| {
            if pool::spawn(scope, "spillway-splits".into(), &failure, || source.serve()).is_none() {
                return;
            }
            for t in 0..self.threads {
                let (records, mapped, failure) = (&records, &mapped, &failure);
                let worker = move || {
                    let mut buffer: Box<dyn SpillBuffer<J::Value>> = if J::COMBINER {
                        Box::new(CombineBuffer::new(job, spiller, partitioner, share))
                    } else {
                        Box::new(AppendBuffer::new(spiller, partitioner, share))
                    };
                    let mut emitted = 0;
                    loop {
                        if failure.failed() || progress.cancelled() {
                            break;
                        }
                        if let Some(batch) = spiller.take_background_batch() {
                            match spiller.merge(job, batch) {
                                Ok(run) => spiller.add(run),
                                Err(e) => failure.set(e),
                            }
                            continue;
                        }
                        let Some(i) = source.next() else { break };
                        let range = splits[i];
                        mapped.fetch_add(1, Ordering::Relaxed);
                        let split = inputs.split(range);
                        let mut emitter = Emitter { buffer: &mut *buffer, records: 0 };
                        let outcome = catch_unwind(AssertUnwindSafe(|| job.map(&split, &mut emitter)));
                        emitted += emitter.records;
                        let message = match outcome {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some(e.to_string()),
                            Err(panic) => Some(panic_message(&*panic)),
                        };
                        if let Some(message) = message {
                            failure.set(Error::Job { split: split.describe(), message });
                            break;
                        }
                        if let Some(e) = buffer.take_error() {
                            failure.set(e);
                            break;
                        }
                        inputs.release(range);
                        progress.bytes_mapped.fetch_add(split.data.len() as u64, Ordering::Relaxed);
                        progress.splits_done.fetch_add(1, Ordering::Relaxed);
                    }
                    if !failure.failed()
                        && let Err(e) = buffer.spill()
                    {
                        failure.set(e);
                    }
                    records.fetch_add(emitted, Ordering::Relaxed);
                };
                if pool::spawn(scope, format!("spillway-map-{t}"), failure, worker).is_none() {
                    break;
                }
            }
        });
        if progress.cancelled() {
            failure.set(Error::Cancelled);
        }
        failure.into_result()?;
        source.finish()?;
        Ok((records.into_inner(), mapped.into_inner()))
    }
}

pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".into()
    }
}
