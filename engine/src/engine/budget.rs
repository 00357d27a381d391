//! The default memory budget: a share of the memory this process may use on its node, so that
//! nobody has to tune `--memory` (see [`MemoryBudget::from_facts`] for the rule).
//!
//! [`MemoryFacts`] gathers what the rule needs (`/proc/meminfo`, the control group's limit,
//! SLURM's allocation, the ranks on the node) through two lookups, a file reader and an
//! environment reader, so that tests feed it made-up `/proc` contents and variables.

use std::fmt;

/// The smallest default budget: 64 MiB (unless half of a hard limit is smaller).
pub const DEFAULT_BUDGET_FLOOR: u64 = 64 << 20;
/// The largest default budget: 64 GiB (a larger one must be asked for with `--memory`).
pub const DEFAULT_BUDGET_CAP: u64 = 64 << 30;
/// The budget when nothing about the machine can be read (no `/proc`): 1 GiB.
pub const FALLBACK_BUDGET: u64 = 1 << 30;

/// Limits above this are "unlimited" (cgroup v1 writes `PAGE_COUNTER_MAX` pages, ~2^63).
const UNLIMITED: u64 = 1 << 60;

/// One limit on the memory this process may use, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes.
    pub bytes: u64,
    /// Where it came from, for messages and the metrics (`"cgroup memory.max"`).
    pub source: String,
    /// True when the limit is the node's (shared by the ranks on it); false when it is this
    /// process's own (`SLURM_MEM_PER_CPU` times this process's threads).
    pub per_node: bool,
}

/// What the default budget is computed from. [`MemoryFacts::read`] reads it from this machine;
/// [`MemoryFacts::gather`] from any lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryFacts {
    /// `MemAvailable` from `/proc/meminfo`, bytes.
    pub mem_available: Option<u64>,
    /// The lowest memory limit of this process's control group and its ancestors (cgroup v2
    /// `memory.max`, or v1 `memory.limit_in_bytes`).
    pub cgroup: Option<MemoryLimit>,
    /// SLURM's allocation: `SLURM_MEM_PER_NODE`, or `SLURM_MEM_PER_CPU` times
    /// `SLURM_CPUS_ON_NODE` (or times the threads when that is not set).
    pub slurm: Option<MemoryLimit>,
    /// The ranks of this job on this node, and the variable that said so (more than 1 only).
    pub local_ranks: Option<(u64, &'static str)>,
}

impl MemoryFacts {
    /// The facts of this process on this machine.
    pub fn read(threads: usize) -> MemoryFacts {
        MemoryFacts::gather(
            |path| std::fs::read_to_string(path).ok(),
            |name| std::env::var(name).ok(),
            threads,
        )
    }

    /// The facts from `file` (reads a path such as `/proc/meminfo`, `/proc/self/cgroup` and the
    /// files under `/sys/fs/cgroup`) and `var` (an environment variable); `threads` is the
    /// number of worker threads, for `SLURM_MEM_PER_CPU` without `SLURM_CPUS_ON_NODE`.
    pub fn gather(
        file: impl Fn(&str) -> Option<String>,
        var: impl Fn(&str) -> Option<String>,
        threads: usize,
    ) -> MemoryFacts {
        let number = |name: &str| var(name).and_then(|v| v.trim().parse::<u64>().ok());
        let mem_available = file("/proc/meminfo").and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib << 10)
        });
        let cgroup = file("/proc/self/cgroup").and_then(|text| cgroup_limit(&text, &file));
        let mib = |name: &'static str, n: u64, per_node| MemoryLimit {
            bytes: n.saturating_mul(1 << 20),
            source: name.to_owned(),
            per_node,
        };
        let slurm = match (number("SLURM_MEM_PER_NODE"), number("SLURM_MEM_PER_CPU")) {
            // 0 asks SLURM for all of the node's memory: no limit of its own.
            (Some(n), _) if n > 0 => Some(mib("SLURM_MEM_PER_NODE", n, true)),
            (_, Some(n)) if n > 0 => Some(match number("SLURM_CPUS_ON_NODE").filter(|&c| c > 0) {
                Some(cpus) => MemoryLimit {
                    source: format!("SLURM_MEM_PER_CPU x SLURM_CPUS_ON_NODE ({cpus})"),
                    ..mib("", n.saturating_mul(cpus), true)
                },
                None => MemoryLimit {
                    source: format!("SLURM_MEM_PER_CPU x {threads} threads"),
                    ..mib("", n.saturating_mul(threads.max(1) as u64), false)
                },
            }),
            _ => None,
        };
        let slurm_local = || {
            // srun: "2(x3),1" = 2 tasks on each of nodes 0-2, 1 on node 3.
            number("SLURM_STEP_NUM_TASKS")?;
            let node = number("SLURM_NODEID")?;
            tasks_on_node(&var("SLURM_STEP_TASKS_PER_NODE")?, node)
        };
        let local_ranks = [
            ("OMPI_COMM_WORLD_LOCAL_SIZE", number("OMPI_COMM_WORLD_LOCAL_SIZE")),
            ("MPI_LOCALNRANKS", number("MPI_LOCALNRANKS")),
            ("SLURM_STEP_TASKS_PER_NODE", slurm_local()),
        ]
        .into_iter()
        .find_map(|(name, n)| Some((n?, name)))
        .filter(|&(n, _)| n > 1);
        MemoryFacts { mem_available, cgroup, slurm, local_ranks }
    }
}

/// The lowest memory limit of the control group named in `/proc/self/cgroup` and its ancestors
/// (a parent's limit binds its children too): cgroup v2 (`0::/path`, `memory.max`) first, else
/// v1 (`N:...memory...:/path`, `memory.limit_in_bytes`).
fn cgroup_limit(proc_self_cgroup: &str, file: &impl Fn(&str) -> Option<String>) -> Option<MemoryLimit> {
    let mut found: Option<MemoryLimit> = None;
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let (root, name) = if id == "0" && controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dir = path.trim_end_matches('/').to_owned();
        loop {
            let limit = file(&format!("{root}{dir}/{name}"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&b| b < UNLIMITED);
            if let Some(bytes) = limit
                && found.as_ref().is_none_or(|f| bytes < f.bytes)
            {
                found = Some(MemoryLimit { bytes, source: format!("cgroup {name}"), per_node: true });
            }
            match dir.rfind('/') {
                Some(cut) => dir.truncate(cut),
                None => break,
            }
        }
    }
    found
}

/// The tasks on node `node` from SLURM's compressed list (`"2(x3),1"`).
fn tasks_on_node(list: &str, node: u64) -> Option<u64> {
    let mut first = 0u64;
    for item in list.split(',') {
        let (tasks, repeat) = match item.split_once("(x") {
            Some((tasks, rest)) => (tasks, rest.strip_suffix(')')?.parse::<u64>().ok()?),
            None => (item, 1),
        };
        let tasks = tasks.trim().parse::<u64>().ok()?;
        if node < first + repeat {
            return Some(tasks);
        }
        first += repeat;
    }
    None
}

/// A memory budget and where it came from (the metrics' `memory_budget_source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Bytes.
    pub bytes: u64,
    /// Where it came from: `"--memory"`, or how the default was computed
    /// (`"half of cgroup memory.max (4 GiB)"`).
    pub source: String,
}

impl MemoryBudget {
    /// A budget the user chose (`source` names how: `"--memory"`).
    pub fn given(bytes: u64, source: impl Into<String>) -> MemoryBudget {
        MemoryBudget { bytes, source: source.into() }
    }

    /// The default budget of a process with `threads` worker threads on this machine.
    pub fn detect(threads: usize) -> MemoryBudget {
        MemoryBudget::from_facts(&MemoryFacts::read(threads), threads)
    }

    /// The default budget from `facts`: half of the memory this process may use, which is the
    /// least of `MemAvailable`, the control group's limit and SLURM's allocation, the node's
    /// share divided among the job's ranks on the node; at least [`DEFAULT_BUDGET_FLOOR`]
    /// (but never more than half of a hard limit: cgroup or SLURM), at most
    /// [`DEFAULT_BUDGET_CAP`], and never under 16 KiB per thread. [`DEFAULT_MEMORY_BUDGET`](crate::DEFAULT_MEMORY_BUDGET) (1 GiB) when
    /// nothing is known.
    pub fn from_facts(facts: &MemoryFacts, threads: usize) -> MemoryBudget {
        let ranks = facts.local_ranks.map_or(1, |(n, _)| n.max(1));
        let available = facts.mem_available.map(|bytes| MemoryLimit {
            bytes,
            source: "MemAvailable".to_owned(),
            per_node: true,
        });
        // The room each limit leaves this process: a node's limit is shared by its ranks.
        let room = |l: &MemoryLimit| if l.per_node { l.bytes / ranks } else { l.bytes };
        let hard = [&facts.cgroup, &facts.slurm].into_iter().flatten().map(room).min();
        let Some(tightest) =
            [&available, &facts.cgroup, &facts.slurm].into_iter().flatten().min_by_key(|l| room(l))
        else {
            return MemoryBudget::given(FALLBACK_BUDGET, "1 GiB: nothing known of this machine's memory");
        };
        let half = room(tightest) / 2;
        let mut source = format!("half of {} ({})", tightest.source, Bytes(tightest.bytes));
        if let (Some((n, var)), true) = (facts.local_ranks, tightest.per_node) {
            source.push_str(&format!(" shared by {n} ranks on the node ({var})"));
        }
        let floor = DEFAULT_BUDGET_FLOOR.min(hard.map_or(u64::MAX, |h| h / 2));
        let bytes = if half < floor {
            source.push_str(&format!(", raised to the floor of {}", Bytes(floor)));
            floor
        } else if half > DEFAULT_BUDGET_CAP {
            source.push_str(&format!(", capped at {}", Bytes(DEFAULT_BUDGET_CAP)));
            DEFAULT_BUDGET_CAP
        } else {
            half
        };
        let bytes = bytes
            .max(super::builder::MIN_THREAD_SHARE * threads.max(1) as u64)
            .max(super::builder::MIN_MEMORY_BUDGET);
        MemoryBudget { bytes, source }
    }
}

/// Bytes for people: `21.9 GiB`, `512 MiB`.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0 as f64;
        match self.0 {
            n_ if n_ >= 1 << 30 => write!(f, "{:.1} GiB", n / f64::from(1u32 << 30)),
            n_ if n_ >= 1 << 20 => write!(f, "{:.0} MiB", n / f64::from(1u32 << 20)),
            _ => write!(f, "{:.0} KiB", n / 1024.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// Facts from fake files and variables.
    fn facts(files: &[(&str, &str)], vars: &[(&str, &str)], threads: usize) -> MemoryFacts {
        MemoryFacts::gather(
            |p| files.iter().find(|(k, _)| *k == p).map(|(_, v)| (*v).to_owned()),
            |n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| (*v).to_owned()),
            threads,
        )
    }

    const MEMINFO_24G: &str = "MemTotal:       24598000 kB\nMemFree:        20000000 kB\n\
                               MemAvailable:   23068672 kB\n"; // 22 GiB

    #[test]
    fn half_of_mem_available_without_limits() {
        let f = facts(&[("/proc/meminfo", MEMINFO_24G), ("/proc/self/cgroup", "0::/\n")], &[], 2);
        assert_eq!(f.mem_available, Some(22 * GIB));
        assert_eq!(f.cgroup, None);
        let b = MemoryBudget::from_facts(&f, 2);
        assert_eq!(b.bytes, 11 * GIB);
        assert_eq!(b.source, "half of MemAvailable (22.0 GiB)");
    }

    #[test]
    fn a_cgroup_v2_limit_of_the_group_or_an_ancestor_binds() {
        let files = [
            ("/proc/meminfo", MEMINFO_24G),
            ("/proc/self/cgroup", "0::/job/step/task\n"),
            ("/sys/fs/cgroup/job/step/task/memory.max", "max\n"),
            ("/sys/fs/cgroup/job/step/memory.max", "4294967296\n"),
            ("/sys/fs/cgroup/job/memory.max", "8589934592\n"),
        ];
        let f = facts(&files, &[], 2);
        assert_eq!(
            f.cgroup.as_ref().map(|l| (l.bytes, l.source.as_str())),
            Some((4 * GIB, "cgroup memory.max"))
        );
        let b = MemoryBudget::from_facts(&f, 2);
        assert_eq!((b.bytes, b.source.as_str()), (2 * GIB, "half of cgroup memory.max (4.0 GiB)"));
    }

    #[test]
    fn a_cgroup_v1_limit_binds_and_unlimited_is_ignored() {
        let cgroup = "12:cpu,cpuacct:/slurm/uid_0/job_7\n4:memory:/slurm/uid_0/job_7\n";
        let files = [
            ("/proc/meminfo", MEMINFO_24G),
            ("/proc/self/cgroup", cgroup),
            ("/sys/fs/cgroup/memory/slurm/uid_0/job_7/memory.limit_in_bytes", "1073741824\n"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"),
        ];
        let b = MemoryBudget::from_facts(&facts(&files, &[], 4), 4);
        assert_eq!((b.bytes, b.source.as_str()), (GIB / 2, "half of cgroup memory.limit_in_bytes (1.0 GiB)"));
        let unlimited = [
            ("/proc/meminfo", MEMINFO_24G),
            ("/proc/self/cgroup", "4:memory:/\n"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"),
        ];
        assert_eq!(facts(&unlimited, &[], 4).cgroup, None);
    }

    #[test]
    fn slurm_allocations_and_ranks_on_the_node() {
        let files = [("/proc/meminfo", MEMINFO_24G)];
        let b = MemoryBudget::from_facts(&facts(&files, &[("SLURM_MEM_PER_NODE", "8192")], 2), 2);
        assert_eq!((b.bytes, b.source.as_str()), (4 * GIB, "half of SLURM_MEM_PER_NODE (8.0 GiB)"));
        // Per CPU x CPUs on the node, shared by 4 ranks of Open MPI.
        let vars =
            [("SLURM_MEM_PER_CPU", "2048"), ("SLURM_CPUS_ON_NODE", "8"), ("OMPI_COMM_WORLD_LOCAL_SIZE", "4")];
        let b = MemoryBudget::from_facts(&facts(&files, &vars, 2), 2);
        assert_eq!(b.bytes, 2 * GIB);
        assert_eq!(
            b.source,
            "half of SLURM_MEM_PER_CPU x SLURM_CPUS_ON_NODE (8) (16.0 GiB) shared by 4 ranks on the node \
             (OMPI_COMM_WORLD_LOCAL_SIZE)"
        );
        // Per CPU without the node's CPUs: this process's threads, not divided by ranks.
        let vars = [("SLURM_MEM_PER_CPU", "1024"), ("MPI_LOCALNRANKS", "2")];
        let b = MemoryBudget::from_facts(&facts(&files, &vars, 3), 3);
        assert_eq!(
            (b.bytes, b.source.as_str()),
            (3 * GIB / 2, "half of SLURM_MEM_PER_CPU x 3 threads (3.0 GiB)")
        );
        // SLURM_MEM_PER_NODE=0 means the whole node; MemAvailable divided among srun's tasks.
        let vars = [
            ("SLURM_MEM_PER_NODE", "0"),
            ("SLURM_STEP_NUM_TASKS", "7"),
            ("SLURM_NODEID", "3"),
            ("SLURM_STEP_TASKS_PER_NODE", "2(x3),1"),
        ];
        let f = facts(&files, &vars, 2);
        assert_eq!((f.slurm, f.local_ranks), (None, None), "node 3 runs one task");
        let vars =
            [("SLURM_STEP_NUM_TASKS", "7"), ("SLURM_NODEID", "2"), ("SLURM_STEP_TASKS_PER_NODE", "2(x3),1")];
        let b = MemoryBudget::from_facts(&facts(&files, &vars, 2), 2);
        assert_eq!(b.bytes, 11 * GIB / 2);
        assert!(
            b.source.ends_with("shared by 2 ranks on the node (SLURM_STEP_TASKS_PER_NODE)"),
            "{}",
            b.source
        );
    }

    #[test]
    fn floor_cap_and_fallback() {
        // 100 MiB available: the 64 MiB floor, above half of it.
        let small = "MemAvailable:     102400 kB\n";
        let b = MemoryBudget::from_facts(&facts(&[("/proc/meminfo", small)], &[], 2), 2);
        assert_eq!(b.bytes, DEFAULT_BUDGET_FLOOR);
        assert!(b.source.ends_with("raised to the floor of 64 MiB"), "{}", b.source);
        // A 32 MiB cgroup: never more than half of it.
        let files = [
            ("/proc/meminfo", small),
            ("/proc/self/cgroup", "0::/\n"),
            ("/sys/fs/cgroup/memory.max", "33554432\n"),
        ];
        assert_eq!(MemoryBudget::from_facts(&facts(&files, &[], 2), 2).bytes, 16 << 20);
        // A 1 TiB machine: capped.
        let big = "MemAvailable: 1073741824 kB\n";
        let b = MemoryBudget::from_facts(&facts(&[("/proc/meminfo", big)], &[], 2), 2);
        assert_eq!(b.bytes, DEFAULT_BUDGET_CAP);
        assert!(b.source.ends_with("capped at 64.0 GiB"), "{}", b.source);
        // Nothing known.
        let b = MemoryBudget::from_facts(&MemoryFacts::default(), 2);
        assert_eq!(b.bytes, FALLBACK_BUDGET);
        // Never under 16 KiB per thread.
        let files = [("/proc/self/cgroup", "0::/\n"), ("/sys/fs/cgroup/memory.max", "131072\n")];
        assert_eq!(MemoryBudget::from_facts(&facts(&files, &[], 64), 64).bytes, 64 << 14);
    }

    #[test]
    fn slurm_task_lists() {
        assert_eq!(tasks_on_node("2(x3),1", 0), Some(2));
        assert_eq!(tasks_on_node("2(x3),1", 2), Some(2));
        assert_eq!(tasks_on_node("2(x3),1", 3), Some(1));
        assert_eq!(tasks_on_node("2(x3),1", 4), None);
        assert_eq!(tasks_on_node("4", 0), Some(4));
        assert_eq!(tasks_on_node("x", 0), None);
    }
}
