//! Merging runs equals sorting their concatenation; plans stay within F.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::{Records, read_all, sum_by_key, write_run};
use proptest::prelude::*;
use spillway_shuffle::{Merge, MergeOptions, OpenRunGauge, ReadMode, RunReader, merge_runs, plan_merges};

fn runs_strategy() -> impl Strategy<Value = (u32, Vec<Records>)> {
    (1u32..4).prop_flat_map(|r| {
        let record = (0..r, prop::collection::vec(b'a'..b'e', 0..5), 0u64..1000);
        (Just(r), prop::collection::vec(prop::collection::vec(record, 0..120), 1..12))
    })
}

fn write_runs(dir: &std::path::Path, r: u32, runs: &[Records]) -> Vec<PathBuf> {
    runs.iter()
        .enumerate()
        .map(|(i, recs)| {
            let path = dir.join(format!("in{i}.run"));
            write_run(&path, r, recs.clone(), 128);
            path
        })
        .collect()
}

fn add(acc: &mut u64, v: &rkyv::Archived<u64>) {
    *acc += v.to_native();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Without a combiner, merging K runs gives the records of their concatenation in key
    /// order, equal keys in run order.
    #[test]
    fn merge_equals_sorted_concatenation((r, runs) in runs_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_runs(dir.path(), r, &runs);
        let inputs: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
        let out = dir.path().join("out.run");
        merge_runs::<u64>(&inputs, &out, None, &MergeOptions::default()).unwrap();
        // Reference: stable sort by (partition, key) of (run index, sorted run records).
        let mut expected: Vec<(u32, Vec<u8>, usize, u64)> = Vec::new();
        for (i, recs) in runs.iter().enumerate() {
            let mut recs = recs.clone();
            recs.sort();
            expected.extend(recs.into_iter().map(|(p, k, v)| (p, k, i, v)));
        }
        expected.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
        let expected: Records = expected.into_iter().map(|(p, k, _, v)| (p, k, v)).collect();
        prop_assert_eq!(read_all(&out), expected);
    }

    /// With a combiner, each key appears once with the sum of its values.
    #[test]
    fn combined_merge_equals_btreemap((r, runs) in runs_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_runs(dir.path(), r, &runs);
        let inputs: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
        let out = dir.path().join("out.run");
        merge_runs::<u64>(&inputs, &out, Some(&add), &MergeOptions::default()).unwrap();
        let all: Records = runs.concat();
        prop_assert_eq!(read_all(&out), sum_by_key(&all));
    }

    /// Groups see every value of a key once, whether or not they consume them.
    #[test]
    fn groups_partition_the_records((r, runs) in runs_strategy(), consume in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_runs(dir.path(), r, &runs);
        let readers: Vec<RunReader<u64>> = paths.iter().map(|p| RunReader::open(p, ReadMode::Mmap).unwrap()).collect();
        let all = runs.concat();
        for p in 0..r {
            let mut merge = Merge::new(readers.iter().map(|rd| rd.iter(p)).collect());
            let mut keys = Vec::new();
            let mut total = 0u64;
            while let Some((key, group)) = merge.next_group() {
                keys.push(key.to_vec());
                if consume {
                    total += group.map(|v| v.to_native()).sum::<u64>();
                }
            }
            let expected: BTreeSet<Vec<u8>> = all.iter().filter(|x| x.0 == p).map(|x| x.1.clone()).collect();
            prop_assert_eq!(keys, expected.into_iter().collect::<Vec<_>>());
            if consume {
                prop_assert_eq!(total, all.iter().filter(|x| x.0 == p).map(|x| x.2).sum::<u64>());
            }
        }
    }
}

/// Plans for N in 1..500 and F in 2..64: no step reads more than F runs, every run (initial
/// or intermediate) is read exactly once, and steps only read runs that exist.
#[test]
fn plans_respect_fan_in_and_consume_every_run_once() {
    for f in 2..64usize {
        for n in 1..500usize {
            let sizes: Vec<u64> = (0..n as u64).map(|i| (i * 7919) % 1000 + 1).collect();
            let plan = plan_merges(&sizes, f);
            assert!(plan.max_fan_in() <= f, "n={n} f={f}");
            let mut used = vec![0u32; n + plan.steps.len()];
            for (i, step) in plan.steps.iter().enumerate() {
                assert_eq!(step.output, n + i);
                assert!(step.inputs.len() >= 2, "n={n} f={f}: a step must merge something");
                for &input in &step.inputs {
                    assert!(input < n + i, "step {i} reads a run not yet written");
                    used[input] += 1;
                }
            }
            for &input in &plan.final_inputs {
                used[input] += 1;
            }
            assert!(used.iter().all(|&u| u == 1), "n={n} f={f}: {used:?}");
            // The Huffman schedule needs the fewest steps possible.
            let min_steps = if n <= f { 0 } else { (n - f).div_ceil(f - 1) };
            assert_eq!(plan.steps.len(), min_steps, "n={n} f={f}");
        }
    }
}

#[test]
fn plans_merge_the_smallest_runs_first() {
    let plan = plan_merges(&[100, 1, 50, 2, 3, 70], 3);
    // N = 6, F = 3: the short first step folds (6 - 1) mod 2 + 1 = 2 runs, the smallest.
    assert_eq!(plan.steps[0].inputs, vec![1, 3], "sizes 1 and 2 first");
    // Then the three smallest of 100, 50, 3, 70 and the new 3: ids 2, 4 and 6.
    assert_eq!(plan.steps[1].inputs, vec![2, 4, 6]);
    assert_eq!(plan.final_inputs, vec![0, 5, 7]);
}

/// Executing a multi-pass plan with a gauge: the peak number of open runs never exceeds F,
/// and the result equals a single-pass combined merge.
#[test]
fn executed_plan_never_opens_more_than_f_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<Records> = (0..23u64)
        .map(|i| {
            (0..50u64)
                .map(|j| ((j % 2) as u32, format!("w{}", (i * 31 + j * 17) % 97).into_bytes(), i + j))
                .collect()
        })
        .collect();
    let mut paths = write_runs(dir.path(), 2, &runs);
    let sizes: Vec<u64> = paths.iter().map(|p| std::fs::metadata(p).unwrap().len()).collect();
    for f in [2usize, 3, 5] {
        let plan = plan_merges(&sizes, f);
        assert!(!plan.steps.is_empty());
        let gauge = OpenRunGauge::new();
        let options = MergeOptions { gauge: Some(gauge.clone()), ..MergeOptions::default() };
        let mut all_paths = paths.clone();
        for step in &plan.steps {
            let out = dir.path().join(format!("f{f}-step{}.run", step.output));
            let inputs: Vec<&std::path::Path> = step.inputs.iter().map(|&i| all_paths[i].as_path()).collect();
            merge_runs::<u64>(&inputs, &out, Some(&add), &options).unwrap();
            all_paths.push(out);
        }
        let finals: Vec<&std::path::Path> =
            plan.final_inputs.iter().map(|&i| all_paths[i].as_path()).collect();
        let out = dir.path().join(format!("f{f}-final.run"));
        merge_runs::<u64>(&finals, &out, Some(&add), &options).unwrap();
        assert!(gauge.peak() <= f, "peak {} > F {f}", gauge.peak());
        assert!(gauge.peak() >= 2);
        assert_eq!(gauge.open(), 0, "every reader was closed");
        assert_eq!(read_all(&out), sum_by_key(&runs.concat()));
    }
    paths.clear();
}
