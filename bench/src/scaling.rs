//! A model of Spillway's exchange at P ranks (`docs/scaling.md` derives it; binary
//! `scale-model` prints it and calibrates it against measured runs).
//!
//! The model follows the code of `engine::cluster::mpi` and `engine::engine::exchange`:
//!
//! - after the map phase a rank holds `k` local runs (each thread spills every `M / T` bytes;
//!   background merges keep fewer than F waiting), each with R partition sections;
//! - a section goes to its owner (`p % P`); the sections of all runs for one destination go
//!   as one stream, cut into messages of the receiver's chunk (64 MiB): `⌈stream / C⌉`
//!   messages per destination, a message spanning sections packed (copied) first, at most
//!   [`WINDOW`] messages in flight; a section of at least [`DIRECT_BYTES`] goes in messages of
//!   its own, never copied;
//! - a rank with k > 1 runs merges them into one before sending when its receivers would
//!   otherwise hold more than F runs (k P > F), so that each receiver gets one run from it;
//! - descriptors (32 bytes per section) go all-to-all-v first, after an all-to-all of counts;
//!   the receiver keeps a 48-byte entry per section it will receive;
//! - each (source rank, run it sends) that sends this rank a section becomes one received run,
//!   its index holding only the sections it holds (run format version 2, 32 bytes each);
//! - the received runs and the rank's own are merged under the open-run bound F before reduce;
//! - rank 0 answers the split requests of every rank, each for a batch of splits: as many as
//!   the rank's threads, but at most the splits left over twice the threads of all ranks
//!   (guided self-scheduling), counted here as the batch at the start of the map phase.

/// Bytes of one section descriptor on the wire (`engine::cluster::mpi`).
pub const DESCRIPTOR_BYTES: f64 = 32.0;
/// Bytes the receiver keeps per incoming section besides its descriptor (an `Incoming`).
pub const UNIT_BYTES: f64 = 48.0;
/// Bytes of run index per section a run holds (format version 2 indexes non-empty sections).
pub const INDEX_BYTES: f64 = 32.0;
/// Sends in flight at most (`engine::cluster::mpi`'s window).
pub const WINDOW: f64 = 32.0;
/// Memory of one posted send (an Open MPI request and rsmpi's handle), an estimate.
pub const REQUEST_BYTES: f64 = 256.0;
/// The receiver's default message size (`SPILLWAY_MPI_CHUNK`).
pub const CHUNK_BYTES: f64 = (64u64 << 20) as f64;
/// The receiver's default direct threshold (`SPILLWAY_MPI_DIRECT`): `C / 64`, at least 64 KiB.
pub const DIRECT_BYTES: f64 = (1u64 << 20) as f64;

/// What a job and a machine look like to the model.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Map output per rank, in bytes (what the exchange moves, before it leaves the rank).
    pub shuffle_per_rank: f64,
    /// Input per rank, in bytes (what the splits cut).
    pub input_per_rank: f64,
    /// Worker threads per rank (T).
    pub threads: f64,
    /// Memory budget per rank (M), in bytes.
    pub memory: f64,
    /// The open-run bound F.
    pub fan_in: f64,
    /// Partitions R; `None` for the CLI's default (`ranks x threads`, at least 16).
    pub partitions: Option<f64>,
    /// Split size, in bytes.
    pub split_size: f64,
    /// Map throughput of one thread, bytes per second.
    pub map_rate: f64,
    /// Link bandwidth per rank, bytes per second.
    pub bandwidth: f64,
    /// One network latency, seconds (a step of the descriptor all-to-all).
    pub latency: f64,
    /// CPU cost of one message at sender and receiver (posting, matching, completing), seconds.
    pub per_message: f64,
    /// Seconds rank 0's server spends on one split request.
    pub request_service: f64,
    /// Bytes per second one rank copies when packing small sections into a message.
    pub copy_rate: f64,
}

impl Default for Params {
    /// 1 GiB per rank through the exchange, 8 threads, 1 GiB budget, F = 1000, 64 MiB
    /// splits mapped at 250 MB/s per thread, a 100 Gb/s link (12.5 GB/s, 2 µs), 2 µs of CPU
    /// per message and 35 µs per split request (measured by `split-server-bench` at 16
    /// ranks of 8 threads, batching off, all sharing 2 cores: an upper bound).
    fn default() -> Self {
        Params {
            shuffle_per_rank: (1u64 << 30) as f64,
            input_per_rank: (1u64 << 30) as f64,
            threads: 8.0,
            memory: (1u64 << 30) as f64,
            fan_in: 1000.0,
            partitions: None,
            split_size: (64u64 << 20) as f64,
            map_rate: 250e6,
            bandwidth: 12.5e9,
            latency: 2e-6,
            per_message: 2e-6,
            request_service: 35e-6,
            copy_rate: 5e9,
        }
    }
}

/// The model's answer for one P.
#[derive(Debug, Clone, Copy)]
pub struct Prediction {
    /// Ranks P.
    pub ranks: f64,
    /// Partitions R.
    pub partitions: f64,
    /// Local runs per rank when the exchange starts (k).
    pub runs_per_rank: f64,
    /// Runs a rank sends from: 1 when it merges its k runs first (k P > F), else k.
    pub runs_sent: f64,
    /// Bytes a rank merges before sending (its map output, when it merges its runs first).
    pub premerge_bytes: f64,
    /// Sections a rank sends (non-empty ones; an upper bound).
    pub sections_sent: f64,
    /// Messages a rank sends in the exchange round.
    pub messages_per_rank: f64,
    /// Messages of the whole round (all ranks).
    pub messages_total: f64,
    /// Bytes a rank sends (and receives).
    pub bytes_per_rank: f64,
    /// Bytes a rank copies into packed messages (messages that span sections).
    pub packed_bytes: f64,
    /// Descriptor, unit and request memory per rank during the exchange.
    pub descriptor_memory: f64,
    /// The two receive buffers.
    pub buffer_memory: f64,
    /// Runs a rank holds after the exchange (received and its own).
    pub runs_after: f64,
    /// Bytes of run index a rank writes for received runs.
    pub received_index_bytes: f64,
    /// Merge passes over the runs after the exchange, under F.
    pub merge_passes: f64,
    /// Bytes the intermediate merges after the exchange read (an optimal plan merges only the
    /// smallest runs needed to bring them down to F).
    pub merged_after: f64,
    /// Descriptor all-to-all time.
    pub descriptor_time: f64,
    /// Section transfer time of a rank.
    pub data_time: f64,
    /// Split requests per second all ranks make while mapping.
    pub requests_per_second: f64,
    /// Split requests per second rank 0 can answer.
    pub server_capacity: f64,
}

impl Prediction {
    /// The whole exchange: descriptors, then sections.
    pub fn exchange_time(&self) -> f64 {
        self.descriptor_time + self.data_time
    }
}

/// The CLI's partition count without `-r` (`tools` `default_partitions`, without its cap).
pub fn default_partitions(ranks: f64, threads: f64) -> f64 {
    (ranks * threads).clamp(16.0, (1u64 << 20) as f64)
}

/// Merge passes that bring `runs` runs down to one under fan-in `f` (at least one pass when
/// there is more than one run).
pub fn merge_passes(runs: f64, f: f64) -> f64 {
    if runs <= 1.0 {
        return 0.0;
    }
    (runs.ln() / f.max(2.0).ln()).ceil().max(1.0)
}

/// The share of `runs` equal runs' bytes that the intermediate steps of the engine's merge
/// plan rewrite under fan-in `f` (`spillway_shuffle::plan_merges`, an F-ary Huffman merge:
/// the first step folds `1 + (N − 1) mod (F − 1)` runs, every later one F, the smallest
/// first); 0 within F.
pub fn rewritten_fraction(runs: f64, f: f64) -> f64 {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let (n, f) = (runs.round().max(0.0) as u64, f.round().max(2.0) as u64);
    if n <= f {
        return 0.0;
    }
    let mut heap: BinaryHeap<Reverse<u64>> = (0..n).map(|_| Reverse(1)).collect();
    let mut written = 0u64;
    let mut fold = |heap: &mut BinaryHeap<Reverse<u64>>, k: u64| {
        let size: u64 = (0..k).filter_map(|_| heap.pop()).map(|Reverse(s)| s).sum();
        written += size;
        heap.push(Reverse(size));
    };
    let first = 1 + (n - 1) % (f - 1);
    if first > 1 {
        fold(&mut heap, first);
    }
    while heap.len() as u64 > f {
        fold(&mut heap, f);
    }
    written as f64 / n as f64
}

/// The model at `ranks` ranks.
pub fn predict(p: &Params, ranks: f64) -> Prediction {
    let t = p.threads;
    let r = p.partitions.unwrap_or_else(|| default_partitions(ranks, t));
    // Every thread spills when its share (M / T) is full and flushes once at the end; merges
    // start once F runs wait.
    let spills = t * (p.shuffle_per_rank / p.memory).ceil().max(1.0);
    let k = spills.min((p.fan_in - 1.0).max(1.0));
    // Runs merged into one before sending when the receivers would exceed F.
    let premerge = k > 1.0 && k * ranks > p.fan_in;
    let k_sent = if premerge { 1.0 } else { k };
    let leaving = (ranks - 1.0) / ranks;
    let bytes = p.shuffle_per_rank * leaving;
    let sections = k_sent * r * leaving;
    let section_bytes = p.shuffle_per_rank / (k_sent * r);
    // One stream per destination of S / P bytes, in messages of C bytes; sections of at
    // least D bytes in messages of their own, straight from the mapped run (never copied);
    // smaller ones packed where a message spans them: every byte when sections are smaller
    // than a message.
    let stream = p.shuffle_per_rank / ranks;
    let (messages, packed) = if section_bytes >= DIRECT_BYTES {
        (sections * (section_bytes / CHUNK_BYTES).ceil(), 0.0)
    } else {
        (
            (ranks - 1.0) * (stream / CHUNK_BYTES).ceil().max(1.0),
            bytes * (CHUNK_BYTES / section_bytes).min(1.0),
        )
    };
    let descriptor_memory = sections * (2.0 * DESCRIPTOR_BYTES + UNIT_BYTES)
        + messages.min(WINDOW) * REQUEST_BYTES
        + 16.0 * ranks;
    // Two receive buffers of at most one stream (or M / 2) each.
    let buffer_memory = 2.0 * stream.min(p.memory / 2.0);
    // Received runs: one per (source, run sent) with a section here; own runs stay.
    let received_runs = k_sent * (ranks - 1.0);
    let runs_after = received_runs + k_sent;
    let merged_after = p.shuffle_per_rank * rewritten_fraction(runs_after, p.fan_in);
    let descriptor_time = (ranks - 1.0) * p.latency + sections * DESCRIPTOR_BYTES / p.bandwidth;
    let data_time = messages * p.per_message + bytes / p.bandwidth + packed / p.copy_rate + p.latency;
    // Each request carries the first batch's splits: guided self-scheduling over the splits
    // of all ranks, at most one per thread.
    let splits_per_rank = (p.input_per_rank / p.split_size).ceil();
    let batch = (splits_per_rank / (2.0 * t)).floor().clamp(1.0, t.max(1.0));
    let requests = ranks * t * p.map_rate / p.split_size / batch;
    Prediction {
        ranks,
        partitions: r,
        runs_per_rank: k,
        runs_sent: k_sent,
        premerge_bytes: if premerge { p.shuffle_per_rank } else { 0.0 },
        sections_sent: sections,
        messages_per_rank: messages,
        messages_total: messages * ranks,
        bytes_per_rank: bytes,
        packed_bytes: packed,
        descriptor_memory,
        buffer_memory,
        runs_after,
        // Each received run indexes the sections it holds: one entry per section received.
        received_index_bytes: sections * INDEX_BYTES,
        merge_passes: merge_passes(runs_after, p.fan_in),
        merged_after,
        descriptor_time,
        data_time,
        requests_per_second: requests,
        server_capacity: 1.0 / p.request_service,
    }
}

/// One rank's exchange as measured (from the metrics' `per_rank`).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Ranks of the run.
    pub ranks: f64,
    /// Messages the rank sent.
    pub messages: f64,
    /// Bytes the rank received.
    pub bytes: f64,
    /// Its transfer time (`exchange.transfer`), seconds.
    pub transfer: f64,
    /// Its descriptor all-to-all time (`exchange.descriptors`), seconds.
    pub descriptors: f64,
}

/// Per-message cost, bandwidth and descriptor step fitted to measured samples on a machine of
/// `cores` cores, where `ranks / cores` ranks share each core (oversubscribed), which
/// stretches every CPU cost by that factor.
#[derive(Debug, Clone, Copy)]
pub struct Fit {
    /// CPU seconds per message.
    pub per_message: f64,
    /// Bytes per second of one rank, unshared.
    pub bandwidth: f64,
    /// Seconds per step of the descriptor all-to-all.
    pub latency: f64,
}

/// How many ranks share one core.
pub fn sharing(ranks: f64, cores: f64) -> f64 {
    (ranks / cores).max(1.0)
}

impl Fit {
    /// Least squares of `transfer = s (m a + b / beta)` (a, 1/beta >= 0) and of
    /// `descriptors = s (P - 1) l`, with `s` = [`sharing`].
    pub fn from_samples(samples: &[Sample], cores: f64) -> Fit {
        let (mut xx, mut xy, mut yy, mut xt, mut yt) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let (mut dd, mut dt) = (0.0, 0.0);
        for s in samples {
            let c = sharing(s.ranks, cores);
            let (x, y) = (c * s.messages, c * s.bytes);
            xx += x * x;
            xy += x * y;
            yy += y * y;
            xt += x * s.transfer;
            yt += y * s.transfer;
            let d = c * (s.ranks - 1.0);
            dd += d * d;
            dt += d * s.descriptors;
        }
        let det = xx * yy - xy * xy;
        let (mut a, mut inv_beta) = if det.abs() > f64::EPSILON * xx * yy {
            ((xt * yy - yt * xy) / det, (yt * xx - xt * xy) / det)
        } else {
            (0.0, 0.0)
        };
        // A negative coefficient means the other one explains the data: refit with one.
        if a < 0.0 || inv_beta <= 0.0 {
            if yy > 0.0 && (a < 0.0 || inv_beta > 0.0) {
                a = 0.0;
                inv_beta = yt / yy;
            } else if xx > 0.0 {
                a = xt / xx;
                inv_beta = 0.0;
            }
        }
        Fit {
            per_message: a.max(0.0),
            bandwidth: if inv_beta > 0.0 { 1.0 / inv_beta } else { f64::INFINITY },
            latency: if dd > 0.0 { (dt / dd).max(0.0) } else { 0.0 },
        }
    }

    /// The fitted transfer time of a rank that sent `messages` messages and received `bytes`.
    pub fn transfer(&self, ranks: f64, cores: f64, messages: f64, bytes: f64) -> f64 {
        sharing(ranks, cores) * (messages * self.per_message + bytes / self.bandwidth)
    }

    /// The fitted descriptor time at `ranks` ranks.
    pub fn descriptors(&self, ranks: f64, cores: f64) -> f64 {
        sharing(ranks, cores) * (ranks - 1.0) * self.latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_per_rank_follow_the_ranks_not_the_sections() {
        let p = Params::default();
        let a = predict(&p, 1024.0);
        let b = predict(&p, 2048.0);
        assert_eq!(a.partitions, 8192.0);
        assert_eq!(a.runs_per_rank, 8.0);
        // k P > F: every rank sends from one run, so each receives P − 1 runs.
        assert_eq!(a.runs_sent, 1.0);
        assert_eq!(a.premerge_bytes, p.shuffle_per_rank);
        // One stream per destination, each under one message: P - 1 messages.
        assert_eq!(a.messages_per_rank, 1023.0);
        let growth = b.messages_total / a.messages_total;
        assert!((3.9..4.1).contains(&growth), "{growth}");
        // With 1 GiB to 8 ranks in 8 runs of 64 partitions, sections of 2 MiB, above the
        // direct threshold: one message each, k R (P − 1) / P, none copied.
        let eight = predict(&p, 8.0);
        assert_eq!((eight.runs_sent, eight.premerge_bytes), (8.0, 0.0));
        assert_eq!(eight.messages_per_rank, 8.0 * 64.0 * 7.0 / 8.0);
        assert_eq!(eight.packed_bytes, 0.0);
        // Smaller sections (~0.9 MiB at 1024 ranks... here 128 KiB): packed.
        assert!(a.packed_bytes > 0.0);
        // The index of received runs: one 32-byte entry per section received, R (P-1)/P.
        assert!((a.received_index_bytes - 32.0 * 8192.0 * 1023.0 / 1024.0).abs() < 1e-6);
        assert_eq!(a.runs_after, 1024.0);
        // 1024 runs against F = 1000: a second pass, over the 25 smallest runs only.
        assert_eq!(a.merge_passes, 2.0);
        assert!((a.merged_after / p.shuffle_per_rank - 25.0 / 1024.0).abs() < 1e-9);
        // Before (k = 8 runs from each source): 8192 runs, 88 % rewritten once.
        assert_eq!(rewritten_fraction(8192.0, 1000.0), (200.0 + 7.0 * 1000.0) / 8192.0);
        assert_eq!(rewritten_fraction(1000.0, 1000.0), 0.0);
        assert_eq!(rewritten_fraction(5.0, 2.0), 7.0 / 5.0);
    }

    #[test]
    fn merge_passes_count_levels_of_f() {
        assert_eq!(merge_passes(1.0, 2.0), 0.0);
        assert_eq!(merge_passes(2.0, 2.0), 1.0);
        assert_eq!(merge_passes(1000.0, 1000.0), 1.0);
        assert_eq!(merge_passes(1001.0, 1000.0), 2.0);
        assert_eq!(merge_passes(8.0, 2.0), 3.0);
    }

    #[test]
    fn the_fit_recovers_its_parameters() {
        let truth = Fit { per_message: 5e-6, bandwidth: 2e9, latency: 1e-4 };
        let samples: Vec<Sample> = [2.0, 4.0, 8.0, 16.0, 64.0]
            .iter()
            .flat_map(|&ranks| {
                [(100.0, 1e6), (3000.0, 4e6), (50.0, 2e7)].map(|(messages, bytes)| Sample {
                    ranks,
                    messages,
                    bytes,
                    transfer: truth.transfer(ranks, 2.0, messages, bytes),
                    descriptors: truth.descriptors(ranks, 2.0),
                })
            })
            .collect();
        let fit = Fit::from_samples(&samples, 2.0);
        assert!((fit.per_message / truth.per_message - 1.0).abs() < 1e-6, "{fit:?}");
        assert!((fit.bandwidth / truth.bandwidth - 1.0).abs() < 1e-6, "{fit:?}");
        assert!((fit.latency / truth.latency - 1.0).abs() < 1e-6, "{fit:?}");
    }
}
