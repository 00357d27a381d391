//! Telling from the environment whether an MPI launcher (or `srun`) started this process as
//! one of several ranks.
//!
//! A build without the `mpi` feature cannot talk to the other ranks: each would run the whole
//! job on its own, N times over (and race to write the same output). So such a build refuses
//! to run a job when the launcher's environment says there is more than one rank.

use std::fmt;

/// How the launcher that started this process said it was one of several ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// This process's rank (0 when the launcher does not say).
    pub rank: u64,
    /// The number of ranks, when the launcher says.
    pub size: Option<u64>,
    /// The launcher, for messages ("mpirun", "srun", ...).
    pub launcher: &'static str,
    /// The variable that gave it away, and its value.
    pub evidence: (&'static str, String),
}

impl Launch {
    /// True when there is more than one rank.
    pub fn is_parallel(&self) -> bool {
        self.size.map_or(self.rank > 0, |size| size > 1)
    }
}

impl fmt::Display for Launch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (var, value) = &self.evidence;
        match self.size {
            Some(size) => write!(f, "rank {} of {size} by {} ({var}={value})", self.rank, self.launcher),
            None => write!(f, "rank {} by {} ({var}={value})", self.rank, self.launcher),
        }
    }
}

/// The launcher's word on this process, from the process environment (see [`detect_in`]).
pub fn detect() -> Option<Launch> {
    detect_in(|name| std::env::var(name).ok())
}

/// The launcher's word on this process, from the environment variables that `var` looks up:
///
/// - Open MPI (`mpirun`, `prterun`): `OMPI_COMM_WORLD_SIZE`, `OMPI_COMM_WORLD_RANK`;
/// - MVAPICH (`mpirun_rsh`): `MV2_COMM_WORLD_SIZE`, `MV2_COMM_WORLD_RANK`;
/// - MPICH and Intel MPI (Hydra's `mpiexec`), and PMI-2 under Slurm: `PMI_SIZE`, `PMI_RANK`;
/// - Slurm's `srun`: `SLURM_STEP_NUM_TASKS` (the tasks of a job step) and `SLURM_PROCID`. Not
///   `SLURM_NTASKS`: an `sbatch` script runs once although `SLURM_NTASKS` (and
///   `SLURM_PROCID=0`) are set in it;
/// - PMIx launchers: `PMIX_RANK` (PMIx publishes no size in the environment, so only a rank
///   above 0 tells).
///
/// `None` when none of them is set (or none parses).
pub fn detect_in(var: impl Fn(&str) -> Option<String>) -> Option<Launch> {
    let number = |name: &str| var(name).and_then(|v| v.trim().parse::<u64>().ok());
    let launch = |launcher, size_var: &'static str, rank_var: &str| {
        let size = number(size_var)?;
        Some(Launch {
            rank: number(rank_var).unwrap_or(0),
            size: Some(size),
            launcher,
            evidence: (size_var, size.to_string()),
        })
    };
    launch("mpirun", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")
        .or_else(|| launch("mpirun", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK"))
        .or_else(|| launch("mpiexec", "PMI_SIZE", "PMI_RANK"))
        .or_else(|| launch("srun", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID"))
        .or_else(|| {
            let rank = number("PMIX_RANK")?;
            Some(Launch {
                rank,
                size: None,
                launcher: "a PMIx launcher",
                evidence: ("PMIX_RANK", rank.to_string()),
            })
        })
}

/// The error for a build without the `mpi` feature started as one of several ranks.
pub fn without_mpi_error(launch: &Launch) -> String {
    format!(
        "started as {launch}, but this spillway was built without MPI support: every rank would \
         run the whole job. Rebuild with --features mpi (see README \"Many nodes\")"
    )
}

#[cfg(test)]
mod tests {
    use super::{Launch, detect_in};

    fn detect(vars: &[(&str, &str)]) -> Option<Launch> {
        detect_in(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_string()))
    }

    #[test]
    fn launchers_are_recognized_by_their_environment() {
        let ompi = detect(&[("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_COMM_WORLD_RANK", "2")]).unwrap();
        assert!(ompi.is_parallel());
        assert_eq!(ompi.to_string(), "rank 2 of 4 by mpirun (OMPI_COMM_WORLD_SIZE=4)");
        let hydra = detect(&[("PMI_SIZE", "3"), ("PMI_RANK", "0")]).unwrap();
        assert_eq!(hydra.to_string(), "rank 0 of 3 by mpiexec (PMI_SIZE=3)");
        let srun = detect(&[
            ("SLURM_STEP_ID", "0"),
            ("SLURM_STEP_NUM_TASKS", "8"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_PROCID", "5"),
        ])
        .unwrap();
        assert_eq!(srun.to_string(), "rank 5 of 8 by srun (SLURM_STEP_NUM_TASKS=8)");
        let pmix = detect(&[("PMIX_RANK", "1")]).unwrap();
        assert!(pmix.is_parallel());
        assert_eq!(pmix.to_string(), "rank 1 by a PMIx launcher (PMIX_RANK=1)");

        // One rank, an sbatch script (no job step), nothing at all: not parallel.
        assert!(
            !detect(&[("OMPI_COMM_WORLD_SIZE", "1"), ("OMPI_COMM_WORLD_RANK", "0")]).unwrap().is_parallel()
        );
        assert!(!detect(&[("SLURM_STEP_ID", "0"), ("SLURM_STEP_NUM_TASKS", "1")]).unwrap().is_parallel());
        assert_eq!(detect(&[("SLURM_NTASKS", "4"), ("SLURM_PROCID", "0"), ("SLURM_JOB_ID", "7")]), None);
        assert!(!detect(&[("PMIX_RANK", "0")]).unwrap().is_parallel());
        assert_eq!(detect(&[("OMPI_COMM_WORLD_SIZE", "many")]), None);
        assert_eq!(detect(&[]), None);
    }
}
