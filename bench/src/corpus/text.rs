//! The text generator: sentences, punctuation and lines written straight into a buffer.

use super::*;

/// Streaming state of the text generator for one file.
///
/// Text is written straight into the output buffer: `push_token` writes at
/// `pos` and returns the new position; a token that overflows the line is
/// dropped by simply not advancing past it. Every token writes at most
/// [`TOKEN_SLACK`] bytes past its start (whole 16-byte word slots included).
pub(super) struct TextGen<'a> {
    pub(super) vocab: &'a Vocabulary,
    pub(super) table: &'a RankSampler,
    pub(super) rng: SplitMix64,
    /// Capitalize the next word (sentence start).
    pub(super) cap_next: bool,
    /// Words left until the open quote closes (0 = no open quote).
    pub(super) quote_left: u8,
    /// The open quote character.
    pub(super) quote_char: u8,
    /// The previous token ended in '-': no separator before the next one.
    pub(super) glue_next: bool,
    /// Separate stream for word ranks, so they can be drawn in batches.
    pub(super) rank_rng: SplitMix64,
    /// The next words, drawn ahead in a batch (see [`TextGen::refill`]).
    pub(super) batch: Vec<Slot>,
    /// Position of the next unused word in `batch`.
    pub(super) batch_pos: usize,
}

/// Number of words drawn ahead at once.
pub(super) const BATCH: usize = 256;

/// Upper bound on the bytes one token may touch past its start position.
pub(super) const TOKEN_SLACK: usize = 32;

/// Upper bound on the bytes one line (including its '\n') may touch.
pub(super) const LINE_SLACK: usize = 160 + TOKEN_SLACK;

impl<'a> TextGen<'a> {
    pub(super) fn new(vocab: &'a Vocabulary, table: &'a RankSampler, seed: u64) -> Self {
        TextGen {
            vocab,
            table,
            rng: SplitMix64::new(seed),
            cap_next: true,
            quote_left: 0,
            quote_char: b'"',
            glue_next: false,
            rank_rng: SplitMix64::new(derive_seed(seed, 0x7261_6e6b)),
            batch: vec![Slot { bytes: [0; 16] }; BATCH],
            batch_pos: BATCH,
        }
    }

    /// Draws the next [`BATCH`] words. The draws are independent of each
    /// other, so the CPU overlaps their cache misses (alias bucket + word
    /// slot) instead of paying for them one token at a time.
    #[inline(never)]
    pub(super) fn refill(&mut self) {
        // Three passes: random numbers only; alias buckets; word slots. The
        // loads of each pass are independent, so many misses are in flight.
        let (slots, table, rng) = (&self.vocab.slots[..], self.table, &mut self.rank_rng);
        let mut idx = [0usize; BATCH];
        let mut lo = [0u32; BATCH];
        for (i, l) in idx.iter_mut().zip(lo.iter_mut()) {
            (*i, *l) = table.draw_bucket(rng);
        }
        for (i, l) in idx.iter_mut().zip(lo) {
            *i = table.resolve(*i, l);
        }
        for (slot, i) in self.batch.iter_mut().zip(idx) {
            *slot = slots[i];
        }
        self.batch_pos = 0;
    }

    #[inline]
    pub(super) fn next_slot(&mut self) -> Slot {
        if self.batch_pos == BATCH {
            self.refill();
        }
        let s = self.batch[self.batch_pos];
        self.batch_pos += 1;
        s
    }

    /// Writes one token (separator, optional quote, word or number,
    /// punctuation) at `buf[pos..]`, where `line_start` is where the current
    /// line began; returns the position after the token.
    #[inline]
    pub(super) fn push_token(&mut self, buf: &mut [u8], mut pos: usize, line_start: usize) -> usize {
        let buf = &mut buf[..pos + TOKEN_SLACK];
        let r = self.rng.next_u64();
        if pos != line_start && !self.glue_next {
            buf[pos] = b' ';
            pos += 1;
        }
        self.glue_next = false;
        if self.quote_left == 0 && (r & 0x3ff) < 12 {
            self.quote_char = if (r >> 10) & 3 == 0 { b'\'' } else { b'"' };
            buf[pos] = self.quote_char;
            pos += 1;
            self.quote_left = 1 + ((r >> 60) & 7) as u8;
        }
        if (r >> 12) & 0x3ff < 8 {
            // A number of 1-4 digits without leading zero.
            let digits = 1 + ((r >> 22) & 3) as u32;
            let lo = if digits == 1 { 0 } else { 10u64.pow(digits - 1) };
            let hi = 10u64.pow(digits);
            let mut v = lo + ((r >> 24) & 0xffff_ffff) % (hi - lo);
            for i in (0..digits as usize).rev() {
                buf[pos + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
            pos += digits as usize;
            self.cap_next = false;
        } else {
            let slot = self.next_slot();
            buf[pos..pos + 16].copy_from_slice(&slot.bytes);
            if self.cap_next || slot.proper() || (r >> 22) & 0x3ff < 4 {
                buf[pos] = buf[pos].to_ascii_uppercase();
            }
            pos += slot.len();
            self.cap_next = false;
            if (r >> 32) & 0x3ff < 15 {
                buf[pos..pos + 2].copy_from_slice(b"'s");
                pos += 2;
            }
        }
        let p = (r >> 42) & 0x3ff;
        let punct = if p < 64 {
            self.cap_next = true;
            match (r >> 52) & 0xf {
                14 => b'?',
                15 => b'!',
                _ => b'.',
            }
        } else if p < 64 + 72 {
            b','
        } else if p < 64 + 72 + 6 {
            b';'
        } else if p < 64 + 72 + 6 + 4 {
            b':'
        } else if p < 64 + 72 + 6 + 4 + 10 {
            self.glue_next = true;
            b'-'
        } else {
            0
        };
        if punct != 0 {
            buf[pos] = punct;
            pos += 1;
        }
        if self.quote_left > 0 {
            self.quote_left -= 1;
            if self.quote_left == 0 {
                buf[pos] = self.quote_char;
                pos += 1;
            }
        }
        pos
    }

    /// Writes tokens from `line_start` while they fit in `limit` bytes
    /// (excluding the '\n'); the token that does not fit is dropped.
    /// Returns the end of the line content.
    #[inline]
    pub(super) fn fill_line(&mut self, buf: &mut [u8], line_start: usize, limit: usize) -> usize {
        let end = line_start + limit;
        let mut pos = line_start;
        loop {
            let next = self.push_token(buf, pos, line_start);
            if next > end {
                return pos;
            }
            pos = next;
        }
    }

    /// Pads the line `buf[line_start..pos]` to exactly `target` bytes with
    /// filler words / a period; returns the new end.
    pub(super) fn pad_line(&self, buf: &mut [u8], line_start: usize, mut pos: usize, target: usize) -> usize {
        let end = line_start + target;
        while pos < end {
            let gap = end - pos;
            let word: &[u8] = if pos == line_start {
                &self.vocab.fillers[gap.min(12)]
            } else if gap == 1 {
                b"."
            } else {
                buf[pos] = b' ';
                pos += 1;
                &self.vocab.fillers[(gap - 1).min(12)]
            };
            buf[pos..pos + word.len()].copy_from_slice(word);
            pos += word.len();
        }
        pos
    }
}
