//! The ranked vocabulary and the Zipf–Mandelbrot rank sampler.

use super::*;

/// Longest vocabulary word.
pub(super) const MAX_WORD: usize = 15;

/// Number of top ranks in the "head" table of a [`RankSampler`].
pub(super) const HEAD_RANKS: usize = 4096;

/// Samples vocabulary ranks from the Zipf–Mandelbrot distribution.
///
/// An alias table draws a *uniform* bucket, so one table over all ranks
/// would touch a random spot of a large table (and then of the vocabulary)
/// on every draw. Instead the top `HEAD_RANKS` ranks (~75 % of the
/// tokens) get their own small, cache-resident alias table, and only the
/// other draws go to the alias table of the tail ranks. Both tables live in
/// one bucket array and the choice is branch-free, so a batch of draws
/// overlaps its cache misses.
#[derive(Clone, Debug)]
pub struct RankSampler {
    /// Probability of drawing from the head, scaled to 2^64.
    pub(super) head_threshold: u64,
    /// Head buckets, then tail buckets (tail aliases already offset).
    pub(super) buckets: Vec<Bucket>,
    /// `(first bucket, bucket count)` of the head and of the tail table.
    pub(super) ranges: [(usize, u64); 2],
}

impl RankSampler {
    /// A sampler for rank weights `weights` (rank 0 first, not all zero).
    pub fn new(weights: &[f64]) -> Self {
        let split = weights.len().min(HEAD_RANKS);
        let (head_w, tail_w) = weights.split_at(split);
        let head_sum: f64 = head_w.iter().sum();
        let tail_sum: f64 = tail_w.iter().sum();
        let mut buckets = AliasTable::new(head_w).buckets;
        let head_range = (0, split as u64);
        if tail_sum <= 0.0 {
            return RankSampler { head_threshold: u64::MAX, buckets, ranges: [head_range, head_range] };
        }
        let head_threshold = (head_sum / (head_sum + tail_sum) * 18_446_744_073_709_551_616.0) as u64;
        buckets.extend(
            AliasTable::new(tail_w)
                .buckets
                .iter()
                .map(|b| Bucket { thresh: b.thresh, alias: b.alias + split as u32 }),
        );
        RankSampler { head_threshold, buckets, ranges: [head_range, (split, tail_w.len() as u64)] }
    }

    /// Draws one rank.
    #[inline]
    pub fn sample(&self, rng: &mut SplitMix64) -> usize {
        let (i, lo) = self.draw_bucket(rng);
        self.resolve(i, lo)
    }

    /// First half of a draw: the bucket index and the 32 random bits that
    /// decide between the bucket and its alias. Touches no table memory.
    #[inline]
    pub(super) fn draw_bucket(&self, rng: &mut SplitMix64) -> (usize, u32) {
        let pick = rng.next_u64();
        let r = rng.next_u64();
        let (start, len) = self.ranges[usize::from(pick >= self.head_threshold)];
        (start + (((r >> 32) * len) >> 32) as usize, r as u32)
    }

    /// Second half of a draw: the rank for bucket `i` and random bits `lo`.
    #[inline]
    pub(super) fn resolve(&self, i: usize, lo: u32) -> usize {
        let b = self.buckets[i];
        // Branch-free select (the comparison is unpredictable in the tail).
        let take_alias = usize::from(lo >= b.thresh).wrapping_neg();
        i ^ ((i ^ b.alias as usize) & take_alias)
    }
}

/// One vocabulary entry: the word padded to 15 bytes plus a metadata byte
/// (`len | proper << 7`). The generator copies all 16 bytes at once and
/// advances by `len`.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(16))]
pub(super) struct Slot {
    pub(super) bytes: [u8; 16],
}

impl Slot {
    pub(super) fn new(word: &[u8], proper: bool) -> Self {
        assert!(!word.is_empty() && word.len() <= MAX_WORD);
        let mut bytes = [0u8; 16];
        bytes[..word.len()].copy_from_slice(word);
        bytes[15] = word.len() as u8 | (u8::from(proper) << 7);
        Slot { bytes }
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        (self.bytes[15] & 0x7f) as usize
    }

    #[inline]
    pub(super) fn proper(&self) -> bool {
        self.bytes[15] & 0x80 != 0
    }

    pub(super) fn word(&self) -> &[u8] {
        &self.bytes[..self.len()]
    }
}

/// A ranked vocabulary of distinct words (rank 0 is the most frequent).
#[derive(Clone, Debug)]
pub struct Vocabulary {
    pub(super) slots: Vec<Slot>,
    /// A lowercase word of each length 0..=12 (index 0 and 1 unused/"a"),
    /// used to pad the last line of a file to an exact size.
    pub(super) fillers: Vec<Vec<u8>>,
}

/// Summary statistics of a [`Vocabulary`] and of the token distribution it
/// induces.
#[derive(Clone, Debug)]
pub struct VocabStats {
    /// Number of distinct entries (before Capitalization).
    pub words: usize,
    /// Number of entries that are always Capitalized.
    pub proper_nouns: usize,
    /// Shortest entry length.
    pub min_len: usize,
    /// Longest entry length.
    pub max_len: usize,
    /// Mean entry length over distinct words (type mean).
    pub mean_type_len: f64,
    /// Expected word length of a drawn token (Zipf-weighted mean).
    pub mean_token_len: f64,
    /// Share of the tokens taken by the most frequent word.
    pub top_word_share: f64,
    /// `type_len_histogram[l]` = number of entries of length `l`.
    pub type_len_histogram: Vec<usize>,
}

impl Vocabulary {
    /// Builds the vocabulary for `seed` with `size` entries (at least the
    /// number of built-in common words, 50).
    pub fn new(seed: u64, size: usize) -> Self {
        let size = size.max(COMMON_WORDS.len());
        let mut rng = SplitMix64::new(derive_seed(seed, 0x0076_6f63_6162));
        let mut seen: HashSet<Vec<u8>> = HashSet::with_capacity(size * 2);
        for w in COMMON_WORDS {
            seen.insert(w.as_bytes().to_vec());
        }
        // (sort key, word, proper)
        let mut rest: Vec<(u32, Vec<u8>, bool)> = Vec::with_capacity(size);
        while COMMON_WORDS.len() + rest.len() < size {
            let mut len = sample_length(&mut rng);
            let mut attempts = 0u32;
            let word = loop {
                let w = make_word(&mut rng, len);
                if !seen.contains(&w) {
                    seen.insert(w.clone());
                    break w;
                }
                attempts += 1;
                if attempts.is_multiple_of(8) && len < MAX_WORD {
                    len += 1;
                }
            };
            // Shorter words tend to be more frequent; the noise spans ~±2 letters.
            let key = len as u32 * 4 + rng.below(161) as u32;
            let proper = rng.below(1000) < 25;
            rest.push((key, word, proper));
        }
        rest.sort_by_key(|(key, _, _)| *key); // stable: deterministic
        let mut slots = Vec::with_capacity(size);
        for w in COMMON_WORDS {
            slots.push(Slot::new(w.as_bytes(), false));
        }
        for (_, w, proper) in &rest {
            slots.push(Slot::new(w, *proper));
        }
        let mut fillers: Vec<Vec<u8>> = vec![Vec::new(); 13];
        fillers[1] = b"a".to_vec();
        for (len, filler) in fillers.iter_mut().enumerate().skip(2) {
            *filler = rest
                .iter()
                .find(|(_, w, proper)| w.len() == len && !proper)
                .map(|(_, w, _)| w.clone())
                .unwrap_or_else(|| b"etaoinshrdlu"[..len].to_vec());
        }
        Vocabulary { slots, fillers }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the vocabulary is empty (never true).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The word of rank `rank` (as stored, i.e. lowercase except "I").
    pub fn word(&self, rank: usize) -> &[u8] {
        self.slots[rank].word()
    }

    /// Whether the word of rank `rank` is always Capitalized.
    pub fn is_proper(&self, rank: usize) -> bool {
        self.slots[rank].proper()
    }

    /// The Zipf–Mandelbrot weights `(k + q)^-s`, k = 1-based rank.
    pub fn zipf_weights(&self) -> Vec<f64> {
        (0..self.slots.len()).map(|i| det_exp(-ZIPF_S * det_ln(i as f64 + 1.0 + ZIPF_Q))).collect()
    }

    /// Statistics over the vocabulary and the Zipf token distribution.
    pub fn stats(&self) -> VocabStats {
        let weights = self.zipf_weights();
        let total: f64 = weights.iter().sum();
        let mut hist = vec![0usize; 1 + self.slots.iter().map(Slot::len).max().unwrap_or(0)];
        let mut type_sum = 0usize;
        let mut token_sum = 0.0;
        for (e, w) in self.slots.iter().zip(&weights) {
            hist[e.len()] += 1;
            type_sum += e.len();
            token_sum += w * e.len() as f64;
        }
        VocabStats {
            words: self.slots.len(),
            proper_nouns: self.slots.iter().filter(|e| e.proper()).count(),
            min_len: hist.iter().position(|&c| c > 0).unwrap_or(0),
            max_len: hist.len() - 1,
            mean_type_len: type_sum as f64 / self.slots.len() as f64,
            mean_token_len: token_sum / total,
            top_word_share: weights[0] / total,
            type_len_histogram: hist,
        }
    }
}

pub(super) fn sample_length(rng: &mut SplitMix64) -> usize {
    let mut r = rng.below(1000);
    for (len, w) in LENGTH_WEIGHTS {
        if r < w {
            return len;
        }
        r -= w;
    }
    unreachable!("length weights sum to 1000")
}

pub(super) fn pick<'a>(rng: &mut SplitMix64, list: &[&'a str]) -> &'a [u8] {
    list[rng.below(list.len() as u64) as usize].as_bytes()
}

pub(super) fn make_word(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    let mut w = Vec::with_capacity(len + 6);
    if rng.below(100) < 18 {
        w.extend_from_slice(pick(rng, &NUCLEI));
    }
    while w.len() < len {
        w.extend_from_slice(pick(rng, &ONSETS));
        w.extend_from_slice(pick(rng, &NUCLEI));
        if rng.below(100) < 35 {
            w.extend_from_slice(pick(rng, &CODAS));
        }
    }
    w.truncate(len);
    w
}
