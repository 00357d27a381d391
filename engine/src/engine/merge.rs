//! The planned intermediate merges, in waves of independent steps.

use spillway_shuffle::{RunInfo, plan_merges};

use super::Engine;
use crate::error::Result;
use crate::job::Job;
use crate::merge_plan;
use crate::spill::Spiller;

impl Engine {
    /// Runs the planned intermediate merges (in waves of independent steps, in parallel: each
    /// step is one thread's merge); returns the at most F runs of the final merge.
    pub(super) fn merge_phase<J: Job>(&self, job: &J, spiller: &Spiller<'_>) -> Result<Vec<RunInfo>> {
        let runs = spiller.take_all();
        let sizes: Vec<u64> = runs.iter().map(|r| r.bytes).collect();
        let plan = plan_merges(&sizes, self.max_open_runs);
        merge_plan::execute(&plan, runs, self.threads, |_, inputs| spiller.merge(job, inputs))
    }
}
