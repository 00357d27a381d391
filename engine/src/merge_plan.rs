//! Running a [`MergePlan`]: the one executor of [`plan_merges`] steps, for the engine's merge
//! phase (spill runs, [`Spiller::merge`](crate::spill::Spiller::merge)) and the record sort's
//! intermediate merges (plain record runs). Each caller says how one step merges its inputs.
//!
//! [`plan_merges`]: spillway_shuffle::plan_merges

use spillway_shuffle::{MergePlan, MergeStep};

use crate::error::Result;
use crate::pool::{self, Crew};

/// Runs the intermediate steps of `plan` over `runs` (the plan's runs `0..N`, in order) and
/// returns the runs of its final merge, in `plan.final_inputs` order.
///
/// Steps run in waves: every step whose inputs exist, on up to `concurrency` threads of
/// [`pool`] (named `spillway-merge-i`; a [`Crew`] that follows `spillway ctl --threads`
/// changes it at each step); then the steps that their outputs made ready. A step reads its
/// inputs only (at most F of them, as planned), so up to `concurrency` steps are open at
/// once: a caller whose step is itself parallel passes 1. `merge(output, inputs)`
/// merges one step's inputs (in `step.inputs` order) into the run numbered `output`; the
/// first error stops the steps not yet started and is returned.
///
/// # Panics
///
/// When `runs` does not hold the plan's initial runs, or the plan lists a step before the
/// steps that make its inputs (as [`plan_merges`](spillway_shuffle::plan_merges) never does).
pub(crate) fn execute<'a, R: Send>(
    plan: &MergePlan,
    runs: Vec<R>,
    concurrency: impl Into<Crew<'a>>,
    merge: impl Fn(usize, Vec<R>) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let crew = concurrency.into();
    let initial = runs.len();
    let mut slots: Vec<Option<R>> = runs.into_iter().map(Some).collect();
    slots.resize_with(initial + plan.steps.len(), || None);
    let mut pending: Vec<&MergeStep> = plan.steps.iter().collect();
    while !pending.is_empty() {
        let (ready, later): (Vec<&MergeStep>, Vec<&MergeStep>) =
            pending.into_iter().partition(|step| step.inputs.iter().all(|&i| slots[i].is_some()));
        assert!(!ready.is_empty(), "no step of the merge plan can run: {later:?}");
        pending = later;
        let work: Vec<(usize, Vec<R>)> = ready
            .iter()
            .map(|step| (step.output, step.inputs.iter().map(|&i| slots[i].take().expect("ready")).collect()))
            .collect();
        let done = pool::for_each_in(
            "spillway-merge",
            crew,
            work,
            || (),
            |(), (output, inputs)| merge(output, inputs).map(|run| (output, run)),
        )?;
        for (output, run) in done {
            slots[output] = Some(run);
        }
    }
    Ok(plan.final_inputs.iter().map(|&i| slots[i].take().expect("a final input of the plan")).collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use spillway_shuffle::plan_merges;

    use super::*;
    use crate::error::Error;

    /// Runs are lists of initial run ids: every step concatenates its inputs, so the final
    /// runs say which initial runs each holds. Every step reads at most F runs, waits for its
    /// inputs, and at most `concurrency` steps run at once.
    #[test]
    fn steps_run_in_waves_within_f_and_the_concurrency() {
        for (n, fan_in, concurrency) in [(0, 2, 2), (3, 4, 2), (9, 2, 2), (20, 3, 1), (37, 5, 3)] {
            let sizes: Vec<u64> = (0..n).map(|i| 1 + (i as u64 * 7) % 11).collect();
            let plan = plan_merges(&sizes, fan_in);
            let running = AtomicUsize::new(0);
            let most = AtomicUsize::new(0);
            let order = Mutex::new(Vec::new());
            let runs: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
            let finals = execute(&plan, runs, concurrency, |output, inputs| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                assert!(inputs.len() <= fan_in);
                std::thread::sleep(std::time::Duration::from_millis(1));
                order.lock().unwrap().push(output);
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(inputs.concat())
            })
            .unwrap();
            assert!(finals.len() <= fan_in);
            let mut all: Vec<usize> = finals.concat();
            all.sort_unstable();
            assert_eq!(all, (0..n).collect::<Vec<_>>());
            assert!(most.load(Ordering::SeqCst) <= concurrency);
            let mut order = order.into_inner().unwrap();
            assert_eq!(order.len(), plan.steps.len());
            order.sort_unstable();
            assert_eq!(order, plan.steps.iter().map(|s| s.output).collect::<Vec<_>>());
        }
    }

    /// A crew that follows the job's progress: the wanted count changes between steps (up
    /// beyond the base and down to one), every step still runs once, and no worker counts as
    /// active after.
    #[test]
    fn the_threads_change_between_steps() {
        use crate::metrics::Progress;
        let progress = Progress::default();
        let crew = Crew::following(2, 5, &progress);
        let plan = plan_merges(&[1; 64], 2);
        let steps = AtomicUsize::new(0);
        let finals =
            execute(&plan, (0..64).map(|i| vec![i]).collect(), crew, |_, inputs: Vec<Vec<usize>>| {
                match steps.fetch_add(1, Ordering::SeqCst) {
                    3 => progress.set_threads_wanted(5),
                    20 => progress.set_threads_wanted(1),
                    40 => progress.set_threads_wanted(3),
                    _ => {}
                }
                Ok(inputs.concat())
            })
            .unwrap();
        let mut all: Vec<usize> = finals.concat();
        all.sort_unstable();
        assert_eq!(all, (0..64).collect::<Vec<_>>());
        assert_eq!(steps.load(Ordering::SeqCst), plan.steps.len());
        assert_eq!(progress.threads_active.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_first_error_stops_the_plan() {
        let plan = plan_merges(&[1; 9], 2);
        let steps = AtomicUsize::new(0);
        let err = execute(&plan, (0..9).collect(), 1, |output, _| {
            steps.fetch_add(1, Ordering::SeqCst);
            if output == 10 { Err(Error::Cancelled) } else { Ok(output) }
        })
        .unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        assert!(steps.load(Ordering::SeqCst) < plan.steps.len());
    }
}
