//! The planned intermediate merges, in waves of independent steps.

use spillway_shuffle::{RunInfo, plan_merges};

use super::Engine;
use crate::error::Result;
use crate::job::Job;
use crate::pool::{self};
use crate::spill::Spiller;

impl Engine {
    /// Runs the planned intermediate merges (in waves of independent steps, in parallel);
    /// returns the at most F runs of the final merge.
    pub(super) fn merge_phase<J: Job>(&self, job: &J, spiller: &Spiller<'_>) -> Result<Vec<RunInfo>> {
        let runs = spiller.take_all();
        let sizes: Vec<u64> = runs.iter().map(|r| r.bytes).collect();
        let plan = plan_merges(&sizes, self.max_open_runs);
        let mut slots: Vec<Option<RunInfo>> = runs.into_iter().map(Some).collect();
        slots.resize(sizes.len() + plan.steps.len(), None);
        let mut pending: Vec<_> = plan.steps.iter().collect();
        while !pending.is_empty() {
            let (ready, later): (Vec<_>, Vec<_>) =
                pending.into_iter().partition(|step| step.inputs.iter().all(|&i| slots[i].is_some()));
            pending = later;
            let work: Vec<(usize, Vec<RunInfo>)> = ready
                .iter()
                .map(|step| {
                    (step.output, step.inputs.iter().map(|&i| slots[i].take().expect("ready")).collect())
                })
                .collect();
            let done = pool::for_each("spillway-merge", self.threads, work, |(output, inputs)| {
                spiller.merge(job, inputs).map(|run| (output, run))
            })?;
            for (output, run) in done {
                slots[output] = Some(run);
            }
        }
        Ok(plan.final_inputs.iter().map(|&i| slots[i].take().expect("final input exists")).collect())
    }
}
