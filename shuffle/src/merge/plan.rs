//! Merge planning: which runs to fold, in which order, so that no step reads more than F.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// One intermediate merge: fold `inputs` into a new run numbered `output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeStep {
    /// Run ids read by this step (at most F of them).
    pub inputs: Vec<usize>,
    /// Id of the run this step writes.
    pub output: usize,
}

/// A plan for merging N runs under fan-in F.
///
/// Run ids `0..N` are the initial runs; step `i` writes run `N + i`. Steps are listed in an
/// order in which they can run (each step's inputs exist before it starts). `final_inputs`
/// (at most F runs) are merged last, straight into reduce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergePlan {
    /// The intermediate merges, in execution order.
    pub steps: Vec<MergeStep>,
    /// The runs of the final merge.
    pub final_inputs: Vec<usize>,
}

impl MergePlan {
    /// The largest fan-in of any step, the final merge included.
    pub fn max_fan_in(&self) -> usize {
        self.steps.iter().map(|s| s.inputs.len()).chain([self.final_inputs.len()]).max().unwrap_or(0)
    }

    /// Total bytes written by intermediate steps, given the initial run sizes (each step's
    /// output is taken to be the sum of its inputs, the worst case without a combiner).
    pub fn bytes_rewritten(&self, sizes: &[u64]) -> u64 {
        let mut all = sizes.to_vec();
        let mut written = 0;
        for step in &self.steps {
            let size: u64 = step.inputs.iter().map(|&i| all[i]).sum();
            written += size;
            all.push(size);
        }
        written
    }
}

/// Plans the merge of runs with the given `sizes` (bytes) under fan-in `fan_in` (F ≥ 2).
///
/// This is the F-ary Huffman merge: always fold the smallest runs, and make the *first* step
/// the short one (`1 + (N - 1) mod (F - 1)` runs, unless that leaves nothing to gain) so that
/// every later step and the final merge read a full F. It minimizes the bytes rewritten among
/// plans whose steps read at most F runs.
///
/// # Panics
///
/// When `fan_in < 2`.
pub fn plan_merges(sizes: &[u64], fan_in: usize) -> MergePlan {
    assert!(fan_in >= 2, "a merge needs a fan-in of at least 2");
    let n = sizes.len();
    if n <= fan_in {
        return MergePlan { steps: Vec::new(), final_inputs: (0..n).collect() };
    }
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> =
        sizes.iter().enumerate().map(|(id, &size)| Reverse((size, id))).collect();
    let mut steps = Vec::new();
    let mut next_id = n;
    let remainder = (n - 1) % (fan_in - 1);
    let mut take = if remainder == 0 { fan_in } else { remainder + 1 };
    while heap.len() > fan_in {
        let mut inputs = Vec::with_capacity(take);
        let mut size = 0u64;
        for _ in 0..take {
            let Reverse((s, id)) = heap.pop().expect("heap holds more than F runs");
            size = size.saturating_add(s);
            inputs.push(id);
        }
        inputs.sort_unstable();
        steps.push(MergeStep { inputs, output: next_id });
        heap.push(Reverse((size, next_id)));
        next_id += 1;
        take = fan_in;
    }
    let mut final_inputs: Vec<usize> = heap.into_iter().map(|Reverse((_, id))| id).collect();
    final_inputs.sort_unstable();
    MergePlan { steps, final_inputs }
}
