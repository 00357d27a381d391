//! The planned intermediate merges, in waves of independent steps.

use std::sync::atomic::Ordering;

use spillway_shuffle::{RunInfo, plan_merges};

use super::Engine;
use crate::error::Result;
use crate::job::Job;
use crate::merge_plan;
use crate::spill::Spiller;

impl Engine {
    /// Runs the planned intermediate merges (in waves of independent steps, in parallel: each
    /// step is one thread's merge, on as many threads as are wanted at the step's start);
    /// returns the at most F runs of the final merge.
    pub(super) fn merge_phase<J: Job>(&self, job: &J, spiller: &Spiller<'_>) -> Result<Vec<RunInfo>> {
        let runs = spiller.take_all();
        let sizes: Vec<u64> = runs.iter().map(|r| r.bytes).collect();
        let plan = plan_merges(&sizes, self.max_open_runs);
        self.progress.merges_planned.fetch_add(plan.steps.len() as u64, Ordering::Relaxed);
        self.progress.runs_waiting.store(runs.len() as u64, Ordering::Relaxed);
        let merged = merge_plan::execute(&plan, runs, self.crew(), |_, inputs| {
            let n = inputs.len() as u64;
            let merged = spiller.merge(job, inputs)?;
            self.progress.runs_waiting.fetch_sub(n.saturating_sub(1), Ordering::Relaxed);
            Ok(merged)
        });
        self.progress.threads_active.store(0, Ordering::Relaxed);
        merged
    }
}
