//! With several ranks: every local run's sections that other ranks own go to their owners.
//!
//! One received run per source rank, when it matters: a rank holding k runs with sections
//! for others sends each receiver k runs, so a receiver gets about k (P − 1) runs, beyond the
//! open-run bound F from P ≈ F / k on (one more merge pass over all the data). When k P
//! exceeds F, the rank first merges its k runs into one (one local pass, the merge pass that
//! the receivers would have needed, made before sending) and every receiver gets one run from
//! it. Merging on the sending side, before the exchange, keeps the exchange zero-copy (the
//! merged run is mapped and its sections go as they are, their lengths known for the
//! descriptors) and its memory bounded (an ordinary merge step); merging on receipt would
//! need all k sections of a partition at once, held in memory or written once more first.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use spillway_shuffle::{ByteSource, ReadMode, RunInfo, RunReader, RunWriter, plan_merges};

use super::Engine;
use crate::cluster::{ExchangeStats, InSection, OutSection};
use crate::error::{Error, Result};
use crate::job::Job;
use crate::merge_plan;
use crate::report::SpanKind;
use crate::spill::Spiller;

/// Overrides when a rank merges its runs into one before sending (for measurements and
/// tests): `never`, or `always` (when it has more than one run for others); otherwise by
/// [`premerge`].
const PREMERGE_ENV: &str = "SPILLWAY_PREMERGE";

impl Engine {
    /// Sends every local run's sections that other ranks own to their owners, and writes
    /// what arrives as runs (one run per source run, sections copied as they are, validated
    /// when opened; one per source rank when it merged its runs first, see the module). A local run stays as it is when nothing left it or when no merge will be
    /// needed (reduce reads only the partitions this rank owns, so the sections that left are
    /// never read again); otherwise its own sections are copied into a smaller run, so that
    /// merges do not carry the sections that left.
    pub(super) fn exchange<J: Job>(
        &self,
        job: &J,
        spiller: &Spiller<'_>,
        owner: &dyn Fn(u32) -> usize,
    ) -> Result<ExchangeStats> {
        let _span = self.progress.span(SpanKind::Exchange); // the report's record (--report)
        let rank = self.cluster.rank();
        let started = Instant::now();
        let mut runs = spiller.take_all();
        let leaving_runs =
            runs.iter().filter(|r| r.records.iter().any(|&(p, n)| n > 0 && owner(p) != rank)).count();
        let wanted = match std::env::var(PREMERGE_ENV).as_deref() {
            Ok("never") => false,
            Ok("always") => leaving_runs > 1,
            _ => premerge(leaving_runs, self.cluster.size(), self.max_open_runs),
        };
        // A resumable job's map runs stay as journaled: it exchanges them as they are.
        let premerged = if wanted && spiller.journal().is_none() {
            let n = runs.len();
            // The merge plan down to F runs (background merges may lag behind the map phase),
            // then one step into one run.
            let sizes: Vec<u64> = runs.iter().map(|r| r.bytes).collect();
            let plan = plan_merges(&sizes, self.max_open_runs);
            let steps = plan.steps.len() + usize::from(plan.final_inputs.len() > 1);
            self.progress.merges_planned.fetch_add(steps as u64, Ordering::Relaxed);
            let finals =
                merge_plan::execute(&plan, runs, self.crew(), |_, inputs| spiller.merge(job, inputs))?;
            runs = if finals.len() > 1 { vec![spiller.merge(job, finals)?] } else { finals };
            n as u64
        } else {
            0
        };
        let premerge_time = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let readers = runs
            .iter()
            .map(|r| RunReader::<J::Value>::open(&r.path, self.read))
            .collect::<Result<Vec<_>, _>>()?;
        let mut outgoing = Vec::new();
        // Per local run: bytes of sections this rank owns, and of sections that leave.
        let mut own = vec![0u64; runs.len()];
        let mut leaving = vec![0u64; runs.len()];
        for (i, reader) in readers.iter().enumerate() {
            for p in 0..reader.partitions() {
                let section = reader.section(p);
                if section.records == 0 {
                    continue;
                }
                if owner(p) == rank {
                    own[i] += section.len;
                } else {
                    leaving[i] += section.len;
                    outgoing.push(OutSection {
                        run: i as u32,
                        partition: p,
                        records: section.records,
                        blocks: section.blocks,
                        bytes: reader.section_bytes(p),
                    });
                }
            }
        }
        if let Some(recorder) = self.progress.recorder() {
            // The report's matrix: this rank's row.
            let mut sent = vec![0u64; self.cluster.size()];
            for s in &outgoing {
                sent[owner(s.partition)] += s.bytes.len() as u64;
            }
            recorder.note_sent(rank, sent);
        }
        let prepare = started.elapsed().as_secs_f64();
        let partitions = spiller.partitions();
        // The run being received: (source rank, source run) and its writer.
        type Receiving<V> = Option<((usize, u32), RunWriter<V>)>;
        let mut current: Receiving<J::Value> = None;
        // A section larger than a receive buffer, collected piece by piece in a file.
        let mut pieces: Option<(PathBuf, std::fs::File)> = None;
        let mut received: Vec<RunInfo> = Vec::new();
        // Sources whose sections arrived (they arrive grouped by source).
        let mut sources: Vec<usize> = Vec::new();
        let buffers = usize::try_from(self.memory_budget).unwrap_or(usize::MAX);
        let mut stats = self.cluster.exchange(&outgoing, owner, buffers, &mut |s: InSection<'_>| {
            if current.as_ref().is_none_or(|(key, _)| *key != (s.source, s.run)) {
                crate::failpoint::hit("exchange.receive");
                if sources.last() != Some(&s.source) {
                    sources.push(s.source);
                }
                if let Some((_, writer)) = current.take() {
                    received.push(writer.finish(false)?);
                }
                let writer = RunWriter::<J::Value>::create(&spiller.next_path("recv"), partitions, self.io)?;
                current = Some(((s.source, s.run), writer));
            }
            let (_, writer) = current.as_mut().expect("a writer is open");
            self.progress.bytes_exchanged.fetch_add(s.bytes.len() as u64, Ordering::Relaxed);
            if s.is_whole() {
                writer.append_section(s.partition, s.bytes, s.records, s.blocks)?;
                return Ok(());
            }
            if s.offset == 0 {
                let path = spiller.next_path("piece");
                let file = std::fs::File::create(&path).map_err(|e| Error::io("create", &path, e))?;
                pieces = Some((path, file));
            }
            let (path, file) = pieces.as_mut().expect("a section's first piece comes first");
            file.write_all(s.bytes).map_err(|e| Error::io("write", &*path, e))?;
            if s.is_last() {
                let (path, file) = pieces.take().expect("collecting a section");
                drop(file);
                let section = ByteSource::open(&path, ReadMode::Mmap)?;
                writer.append_section(s.partition, &section, s.records, s.blocks)?;
                drop(section);
                let _ = std::fs::remove_file(&path);
            }
            Ok(())
        })?;
        let started = Instant::now();
        if let Some((_, writer)) = current.take() {
            received.push(writer.finish(false)?);
        }
        stats.times.finish = started.elapsed().as_secs_f64();
        stats.times.runs_received = received.len() as u64;
        stats.times.sources = sources.len() as u64;

        // This rank's own sections.
        let started = Instant::now();
        // Kept whole, a run costs a validation of the sections that left when it is opened
        // again (cheaper than copying the sections that stay: `bench/README.md`), but merges
        // would carry them: keep runs whole unless a merge will be needed.
        let kept = own.iter().filter(|&&b| b > 0).count();
        let merges = kept + received.len() > self.max_open_runs;
        // A resumable job keeps its journaled map runs until it is done: resumed after a
        // kill, it exchanges them again rather than mapping their splits again.
        let remove = |path: &std::path::Path| {
            if spiller.journal().is_none() {
                let _ = std::fs::remove_file(path);
            }
        };
        for (i, (run, reader)) in runs.into_iter().zip(&readers).enumerate() {
            if own[i] == 0 {
                remove(&run.path);
            } else if leaving[i] == 0 || !merges {
                spiller.add(run);
            } else {
                let mut writer =
                    RunWriter::<J::Value>::create(&spiller.next_path("own"), partitions, self.io)?;
                for p in (0..partitions).filter(|&p| owner(p) == rank) {
                    let section = reader.section(p);
                    if section.records > 0 {
                        writer.append_section(p, reader.section_bytes(p), section.records, section.blocks)?;
                    }
                }
                spiller.add(writer.finish(false)?);
                remove(&run.path);
            }
        }
        drop(readers);
        for run in received {
            spiller.add(run);
        }
        stats.times.prepare = prepare;
        stats.times.premerge = premerge_time;
        stats.times.premerged = premerged;
        stats.times.local = started.elapsed().as_secs_f64();
        Ok(stats)
    }
}

/// Whether a rank with `leaving` runs holding sections for other ranks, one of `ranks`, merges
/// them into one before sending: when the receivers' runs, about `leaving × ranks` (as many
/// from each rank), would exceed the open-run bound `max_open_runs` and so need a merge pass
/// anyway.
pub(crate) fn premerge(leaving: usize, ranks: usize, max_open_runs: usize) -> bool {
    leaving > 1 && leaving.saturating_mul(ranks) > max_open_runs
}

#[cfg(test)]
mod tests {
    use super::premerge;

    #[test]
    fn a_rank_merges_its_runs_first_only_when_receivers_would_exceed_f() {
        // One run, or runs that fit: nothing to gain.
        assert!(!premerge(0, 8, 2));
        assert!(!premerge(1, 1000, 2));
        assert!(!premerge(8, 2, 16));
        assert!(!premerge(8, 125, 1000));
        // k P > F: each receiver's k (P − 1) runs and its own k would need a merge pass.
        assert!(premerge(2, 3, 4));
        assert!(premerge(8, 126, 1000));
        assert!(premerge(3, usize::MAX / 2, 1000));
    }
}
