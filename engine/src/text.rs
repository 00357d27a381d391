//! Word tokenizer behind `spillway wordcount` and `spillway index`.
//!
//! Two notions of "word" are supported (see [`WordMode`]):
//!
//! * [`WordMode::Ascii`]: a word is a maximal run of bytes in `[A-Za-z]`;
//!   every other byte separates words.
//! * [`WordMode::Unicode`]: a word is a maximal run of Unicode letters
//!   (general category `Lu`, `Ll`, `Lt`, `Lm` or `Lo`), exactly like Go's
//!   `strings.FieldsFunc(s, func(r rune) bool { return !unicode.IsLetter(r) })`
//!   used by the MIT 6.824 MapReduce lab. Input that is not valid UTF-8 is
//!   decoded the way Go's `utf8.DecodeRune` does: every ill-formed sequence
//!   becomes one U+FFFD (consuming one byte), which is not a letter and
//!   therefore separates words.
//!
//! Words are handed out as slices borrowed from the input, with their case
//! kept; in Unicode mode they are always valid UTF-8.
//!
//! # How it is fast
//!
//! The text is processed in 64-byte blocks. For each block a `u64` bit mask
//! of "this byte belongs to a word" is computed with branch-free code that
//! LLVM vectorizes for baseline SSE2 (byte-wise range compares into a
//! `[u8; 64]`, then eight multiply-packs of eight bytes into eight bits).
//! Word starts are `mask & !(mask << 1 | carry)` and word ends
//! `!mask & (mask << 1 | carry)`; both are walked in lockstep with
//! `trailing_zeros`, and a word running over the end of a block is carried
//! into the next one. In Unicode mode a block without any byte `>= 0x80`
//! (checked by an OR-reduction) takes exactly the ASCII path; only blocks
//! containing non-ASCII bytes are fixed up by a scalar UTF-8 decoder that
//! visits the non-ASCII bytes alone and marks the bytes of letter characters
//! in the mask. A character straddling a block boundary is carried over.

use unicode_general_category::{GeneralCategory, get_general_category};

/// Which bytes make up a word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WordMode {
    /// A word is a maximal run of ASCII letters `[A-Za-z]`; every other byte
    /// (including every byte `>= 0x80`) separates words.
    Ascii,
    /// A word is a maximal run of Unicode letters (general category `L*`),
    /// as Go's `unicode.IsLetter`; invalid UTF-8 separates words.
    Unicode,
}

/// Calls `f` once per word of `text`, in order, with a slice borrowed from
/// `text`.
///
/// Words never span calls: pass whole pieces of text (e.g. whole splits).
///
/// ```
/// use spillway_engine::text::{WordMode, for_each_word};
///
/// let mut words = Vec::new();
/// for_each_word("Cæsar's naïve café, 42x".as_bytes(), WordMode::Unicode, |w| words.push(w));
/// assert_eq!(words, ["Cæsar", "s", "naïve", "café", "x"].map(str::as_bytes));
///
/// let mut words = Vec::new();
/// for_each_word("Cæsar's naïve".as_bytes(), WordMode::Ascii, |w| words.push(w));
/// assert_eq!(words, ["C", "sar", "s", "na", "ve"].map(str::as_bytes));
/// ```
#[inline]
pub fn for_each_word<'t>(text: &'t [u8], mode: WordMode, f: impl FnMut(&'t [u8])) {
    match mode {
        WordMode::Ascii => for_each_word_ascii(text, f),
        WordMode::Unicode => for_each_word_unicode(text, f),
    }
}

/// [`for_each_word`] in [`WordMode::Ascii`]: calls `f` once per maximal run
/// of bytes in `[A-Za-z]`, in order.
pub fn for_each_word_ascii<'t>(text: &'t [u8], f: impl FnMut(&'t [u8])) {
    let mut walker = Walker::new(text, f);
    let mut blocks = text.chunks_exact(BLOCK);
    let mut base = 0;
    for block in blocks.by_ref() {
        let block: &[u8; BLOCK] = block.try_into().expect("chunks_exact yields full blocks");
        walker.block(base, ascii_letter_mask(block));
        base += BLOCK;
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        // Zero padding is not a letter, so it ends a trailing word at `len`.
        let block = padded(rest);
        walker.block(base, ascii_letter_mask(&block));
    }
    walker.finish();
}

/// [`for_each_word`] in [`WordMode::Unicode`]: calls `f` once per maximal
/// run of Unicode letters (general category `L*`), in order. Ill-formed
/// UTF-8 separates words, as U+FFFD would.
pub fn for_each_word_unicode<'t>(text: &'t [u8], f: impl FnMut(&'t [u8])) {
    let mut walker = Walker::new(text, f);
    let mut pending = Pending::default();
    let mut blocks = text.chunks_exact(BLOCK);
    let mut base = 0;
    for block in blocks.by_ref() {
        let block: &[u8; BLOCK] = block.try_into().expect("chunks_exact yields full blocks");
        let mut mask = ascii_letter_mask(block);
        // A character carried over from the previous block has continuation
        // bytes here, so `pending` only matters when this test is true.
        if has_non_ascii(block) {
            mask = unicode_fixup(text, base, block, mask, &mut pending);
        }
        walker.block(base, mask);
        base += BLOCK;
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        let block = padded(rest);
        let mut mask = ascii_letter_mask(&block);
        if has_non_ascii(&block) {
            mask = unicode_fixup(text, base, &block, mask, &mut pending);
        }
        walker.block(base, mask);
    }
    walker.finish();
}

/// Bytes per block: one bit of a `u64` mask each.
const BLOCK: usize = 64;

/// Copies a short final block into a zero-padded full block.
#[inline]
fn padded(rest: &[u8]) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    block[..rest.len()].copy_from_slice(rest);
    block
}

/// `true` for `[A-Za-z]`. Bytes `>= 0x80` map to `>= 0xa0` and fail.
#[inline(always)]
const fn is_ascii_letter(b: u8) -> bool {
    (b | 0x20).wrapping_sub(b'a') < 26
}

/// Packs 64 bytes that are each 0 or 1 into a `u64`, byte `i` to bit `i`.
#[inline(always)]
fn pack_bits(flags: &[u8; BLOCK]) -> u64 {
    // Multiplying eight 0/1 bytes by this constant gathers byte k's bit into
    // bit 56 + k without carries (the classic "movemask by multiply").
    const GATHER: u64 = 0x0102_0408_1020_4080;
    let mut mask = 0u64;
    for (k, eight) in flags.chunks_exact(8).enumerate() {
        let word = u64::from_le_bytes(eight.try_into().expect("8 bytes"));
        mask |= (word.wrapping_mul(GATHER) >> 56) << (8 * k);
    }
    mask
}

/// Bit `i` set iff `block[i]` is an ASCII letter. Vectorizes to SSE2
/// compares plus eight `imul`s.
#[inline(always)]
fn ascii_letter_mask(block: &[u8; BLOCK]) -> u64 {
    let mut flags = [0u8; BLOCK];
    for (flag, &b) in flags.iter_mut().zip(block) {
        *flag = u8::from(is_ascii_letter(b));
    }
    pack_bits(&flags)
}

/// Bit `i` set iff `block[i] >= 0x80`.
#[inline(always)]
fn non_ascii_mask(block: &[u8; BLOCK]) -> u64 {
    let mut flags = [0u8; BLOCK];
    for (flag, &b) in flags.iter_mut().zip(block) {
        *flag = b >> 7;
    }
    pack_bits(&flags)
}

/// Whether any byte of the block is `>= 0x80` (an OR-reduction).
#[inline(always)]
fn has_non_ascii(block: &[u8; BLOCK]) -> bool {
    block.iter().fold(0u8, |acc, &b| acc | b) >= 0x80
}

/// A character that started in an earlier block and whose last bytes are
/// at the start of the next block.
#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    /// How many bytes of the next block belong to it (0 to 3).
    len: u32,
    /// Whether it is a letter.
    letter: bool,
}

/// Turns the ASCII letter mask of a block that has non-ASCII bytes into its
/// Unicode letter mask: the bytes of every letter character are marked.
///
/// `block` is the (possibly zero-padded) block at `text[base..]`; decoding
/// reads `text`, so characters may run past the end of the block, in which
/// case their remaining length is recorded in `pending`.
#[inline(never)]
fn unicode_fixup(text: &[u8], base: usize, block: &[u8; BLOCK], mut mask: u64, pending: &mut Pending) -> u64 {
    let mut todo = non_ascii_mask(block);
    if pending.len != 0 {
        let bits = (1u64 << pending.len) - 1;
        todo &= !bits;
        if pending.letter {
            mask |= bits;
        }
        *pending = Pending::default();
    }
    while todo != 0 {
        let at = todo.trailing_zeros() as usize;
        let (len, letter) = decode_at(text, base + at);
        let bits = ((1u64 << len) - 1) << at;
        todo &= !bits;
        if letter {
            mask |= bits;
        }
        if at + len > BLOCK {
            *pending = Pending { len: (at + len - BLOCK) as u32, letter };
        }
    }
    mask
}

/// Decodes the character starting at `text[i]` (a byte `>= 0x80`) as Go's
/// `utf8.DecodeRune` does and returns its length in bytes and whether it is
/// a letter. An ill-formed sequence is one byte long and not a letter.
#[inline]
fn decode_at(text: &[u8], i: usize) -> (usize, bool) {
    const INVALID: (usize, bool) = (1, false);
    let b0 = text[i];
    // Continuation byte `j` of the sequence, if present and in `lo..=hi`.
    let cont = |j: usize, lo: u8, hi: u8| -> Option<u32> {
        match text.get(i + j) {
            Some(&b) if (lo..=hi).contains(&b) => Some(u32::from(b & 0x3f)),
            _ => None,
        }
    };
    let (len, scalar) = match b0 {
        0xc2..=0xdf => {
            let Some(c1) = cont(1, 0x80, 0xbf) else {
                return INVALID;
            };
            (2, (u32::from(b0 & 0x1f) << 6) | c1)
        }
        0xe0..=0xef => {
            let (lo, hi) = match b0 {
                0xe0 => (0xa0, 0xbf), // no overlongs
                0xed => (0x80, 0x9f), // no surrogates
                _ => (0x80, 0xbf),
            };
            let (Some(c1), Some(c2)) = (cont(1, lo, hi), cont(2, 0x80, 0xbf)) else {
                return INVALID;
            };
            (3, (u32::from(b0 & 0x0f) << 12) | (c1 << 6) | c2)
        }
        0xf0..=0xf4 => {
            let (lo, hi) = match b0 {
                0xf0 => (0x90, 0xbf), // no overlongs
                0xf4 => (0x80, 0x8f), // nothing above U+10FFFF
                _ => (0x80, 0xbf),
            };
            let (Some(c1), Some(c2), Some(c3)) = (cont(1, lo, hi), cont(2, 0x80, 0xbf), cont(3, 0x80, 0xbf))
            else {
                return INVALID;
            };
            (4, (u32::from(b0 & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3)
        }
        // Continuation bytes, C0/C1 (overlong) and F5..FF never start a
        // character.
        _ => return INVALID,
    };
    (len, char::from_u32(scalar).is_some_and(is_letter))
}

/// Go's `unicode.IsLetter`: general category `Lu`, `Ll`, `Lt`, `Lm`, `Lo`.
#[inline]
fn is_letter(c: char) -> bool {
    matches!(
        get_general_category(c),
        GeneralCategory::UppercaseLetter
            | GeneralCategory::LowercaseLetter
            | GeneralCategory::TitlecaseLetter
            | GeneralCategory::ModifierLetter
            | GeneralCategory::OtherLetter
    )
}

/// Turns per-block word masks into word slices, carrying a word that runs
/// over a block boundary.
struct Walker<'t, F> {
    text: &'t [u8],
    f: F,
    /// Start of the word in progress when `carry == 1`.
    start: usize,
    /// 1 if the last byte of the previous block belongs to a word.
    carry: u64,
}

impl<'t, F: FnMut(&'t [u8])> Walker<'t, F> {
    #[inline(always)]
    fn new(text: &'t [u8], f: F) -> Self {
        Walker { text, f, start: 0, carry: 0 }
    }

    /// Emits the words ending in the block at `base` whose word-byte mask is
    /// `mask`, and remembers a word still open at its end.
    ///
    /// Word `k` ending in this block spans from the `k`-th start to the `k`-th
    /// end, where the start of a word carried over from the previous block
    /// comes first. Carry handling is done with selects rather than branches;
    /// the only unpredictable branch is the exit of the per-word loop.
    #[inline(always)]
    fn block(&mut self, base: usize, mask: u64) {
        // `| TOP` makes `trailing_zeros` see a nonzero value (plain `bsf`);
        // it only changes the result for an empty set, whose value is unused.
        const TOP: u64 = 1 << 63;
        let before = (mask << 1) | self.carry;
        let starts = mask & !before; // first byte of a word
        let mut ends = !mask & before; // first byte after a word
        let carried = self.carry != 0;
        let first = base + (starts | TOP).trailing_zeros() as usize;
        let mut start = if carried { self.start } else { first };
        let mut later = if carried { starts } else { starts & starts.wrapping_sub(1) };
        while ends != 0 {
            let end = base + ends.trailing_zeros() as usize;
            ends &= ends - 1;
            (self.f)(&self.text[start..end]);
            start = base + (later | TOP).trailing_zeros() as usize;
            later &= later.wrapping_sub(1);
        }
        // If a word is open at the end of the block, `start` is its start.
        self.start = start;
        self.carry = mask >> 63;
    }

    /// Emits the word still open at the end of the text, if any.
    #[inline(always)]
    fn finish(mut self) {
        if self.carry != 0 {
            (self.f)(&self.text[self.start..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Offset and bytes of each word, to check that slices are borrowed
    /// from the right place.
    type Words = Vec<(usize, Vec<u8>)>;

    fn offset_of(text: &[u8], word: &[u8]) -> usize {
        word.as_ptr() as usize - text.as_ptr() as usize
    }

    fn words(text: &[u8], mode: WordMode) -> Words {
        let mut out = Vec::new();
        for_each_word(text, mode, |w| out.push((offset_of(text, w), w.to_vec())));
        out
    }

    /// Obviously correct ASCII reference: a byte loop.
    fn reference_ascii(text: &[u8]) -> Words {
        let mut out = Vec::new();
        let mut start = None;
        for (i, &b) in text.iter().enumerate() {
            match (b.is_ascii_alphabetic(), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    out.push((s, text[s..i].to_vec()));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push((s, text[s..].to_vec()));
        }
        out
    }

    /// Obviously correct Unicode reference: std's UTF-8 validation splits
    /// the text into valid runs and ill-formed pieces (which separate, as
    /// U+FFFD would), and each valid run is split on non-letters.
    fn reference_unicode(text: &[u8]) -> Words {
        let mut out = Vec::new();
        for chunk in text.utf8_chunks() {
            let valid = chunk.valid();
            for word in valid.split(|c: char| !reference_is_letter(c)) {
                if !word.is_empty() {
                    out.push((offset_of(text, word.as_bytes()), word.as_bytes().to_vec()));
                }
            }
        }
        out
    }

    fn reference_is_letter(c: char) -> bool {
        get_general_category(c).abbreviation().starts_with('L')
    }

    fn check(text: &[u8]) {
        assert_eq!(words(text, WordMode::Ascii), reference_ascii(text), "ascii: {text:?}");
        assert_eq!(words(text, WordMode::Unicode), reference_unicode(text), "unicode: {text:?}");
    }

    fn strs(text: &[u8], mode: WordMode) -> Vec<String> {
        words(text, mode).into_iter().map(|(_, w)| String::from_utf8(w).expect("words are UTF-8")).collect()
    }

    #[test]
    fn empty_and_separators_only() {
        for text in [&b""[..], b" ", b"0123456789_", &[b' '; 200], &[0u8; 129]] {
            assert!(words(text, WordMode::Ascii).is_empty());
            assert!(words(text, WordMode::Unicode).is_empty());
            check(text);
        }
    }

    #[test]
    fn ascii_basics() {
        let text = b"Hello, world! it's 2024_x-ray\tfoo\nBAR";
        assert_eq!(strs(text, WordMode::Ascii), ["Hello", "world", "it", "s", "x", "ray", "foo", "BAR"]);
        assert_eq!(strs(text, WordMode::Unicode), strs(text, WordMode::Ascii));
        check(text);
        // Bytes adjacent to the letter ranges.
        let edges = b"@A Z[ `a z{ \x40\x5b\x60\x7b";
        assert_eq!(strs(edges, WordMode::Ascii), ["A", "Z", "a", "z"]);
        check(edges);
        check(b"a");
        check(b"ab cd");
    }

    #[test]
    fn words_at_every_block_offset() {
        let lens = (1..=9).chain([15, 16, 17, 31, 32, 33, 62, 63, 64, 65, 66, 127, 128, 129, 130]);
        for len in lens {
            for at in 0..=130 {
                let mut text = vec![b' '; at];
                text.extend(std::iter::repeat_n(b'w', len));
                // Also exercise a word ending exactly at the end of the text.
                check(&text);
                text.push(b'.');
                text.extend_from_slice(b"tail");
                check(&text);
            }
        }
        // Same with a non-ASCII letter (2, 3 and 4 bytes) straddling blocks.
        for letter in ["é", "中", "𐐷", "\u{301}", "\u{a0}"] {
            for at in 0..=130 {
                for rest in 0..=3 {
                    let mut text = "x".repeat(at);
                    text.push_str(letter);
                    text.push_str(&"y".repeat(rest));
                    check(text.as_bytes());
                    let mut text = " ".repeat(at);
                    text.push_str(letter);
                    text.push_str(&" ".repeat(rest));
                    check(text.as_bytes());
                }
            }
        }
    }

    #[test]
    fn unicode_letters() {
        let u = |s: &str| strs(s.as_bytes(), WordMode::Unicode);
        assert_eq!(u("Cæsar"), ["Cæsar"]);
        assert_eq!(u("naïve café"), ["naïve", "café"]);
        assert_eq!(u("Ἀριστοτέλης и Пушкин"), ["Ἀριστοτέλης", "и", "Пушкин"]);
        assert_eq!(u("東京は、日本の首都です。"), ["東京は", "日本の首都です"]);
        // Combining acute accent is Mn, not a letter: it splits.
        assert_eq!(u("e\u{301}te\u{301}"), ["e", "te"]);
        // Feminine/masculine ordinal indicators are Lo.
        assert_eq!(u("1ª 2º"), ["ª", "º"]);
        // Digits (also non-ASCII ones) and underscores separate.
        assert_eq!(u("a1b_c٣d"), ["a", "b", "c", "d"]);
        // Lt, Lm; Nl (Roman numeral) is not a letter.
        assert_eq!(u("ǅemal ʰx Ⅻy"), ["ǅemal", "ʰx", "y"]);
        // NBSP, em space, emoji, symbols separate.
        assert_eq!(u("a\u{a0}b\u{2003}c😀d€e"), ["a", "b", "c", "d", "e"]);
        // Supplementary-plane letters (Deseret, CJK ext. B).
        assert_eq!(u("𐐷𐐸 𠀀x"), ["𐐷𐐸", "𠀀x"]);
        for s in [
            "Cæsar",
            "naïve café",
            "Ἀριστοτέλης и Пушкин",
            "東京は、日本の首都です。",
            "e\u{301}",
            "ª º",
            "ǅemal ʰx Ⅻy",
            "𐐷𐐸 𠀀x",
        ] {
            check(s.as_bytes());
        }
        // ASCII mode keeps only ASCII letters.
        assert_eq!(strs("naïve café".as_bytes(), WordMode::Ascii), ["na", "ve", "caf"]);
    }

    #[test]
    fn invalid_utf8_separates() {
        let u = |b: &[u8]| strs(b, WordMode::Unicode);
        // Lone continuation bytes.
        assert_eq!(u(b"ab\x80cd\xbfe"), ["ab", "cd", "e"]);
        // Truncated sequences, in the middle and at the end.
        assert_eq!(u(b"a\xc3b\xe4\xb8c\xf0\x9f\x98"), ["a", "b", "c"]);
        assert_eq!(u(b"x\xc3"), ["x"]);
        assert_eq!(u(b"x\xe4\xb8"), ["x"]);
        // Overlong encodings ("/" as C0 AF, E0 80 AF, F0 80 80 AF; "A" as C1 81).
        assert_eq!(u(b"a\xc0\xafb\xe0\x80\xafc\xf0\x80\x80\xafd\xc1\x81"), ["a", "b", "c", "d"]);
        // UTF-8-encoded surrogates (U+D800, U+DFFF).
        assert_eq!(u(b"a\xed\xa0\x80b\xed\xbf\xbfc"), ["a", "b", "c"]);
        // Above U+10FFFF and bytes that never occur in UTF-8.
        assert_eq!(u(b"a\xf4\x90\x80\x80b\xf5\xf8\xfe\xffc"), ["a", "b", "c"]);
        // An invalid lead followed by a valid letter: the letter survives.
        assert_eq!(u("\u{ff}é".as_bytes()), ["ÿé"]);
        assert_eq!(u(b"\xe4\xc3\xa9x"), ["éx"]);
        assert_eq!(u(b"\xf0\xe4\xb8\xadz"), ["中z"]);
        let cases: [&[u8]; 10] = [
            b"ab\x80cd\xbfe",
            b"a\xc3b\xe4\xb8c\xf0\x9f\x98",
            b"x\xc3",
            b"x\xe4\xb8",
            b"x\xf0\x9f\x98",
            b"a\xc0\xafb\xe0\x80\xafc\xf0\x80\x80\xafd\xc1\x81",
            b"a\xed\xa0\x80b\xed\xbf\xbfc",
            b"a\xf4\x90\x80\x80b\xf5\xf8\xfe\xffc",
            b"\xe4\xc3\xa9x",
            b"\xf0\xe4\xb8\xadz",
        ];
        for text in cases {
            check(text);
            // And with every alignment against the block boundary.
            for at in 0..=70 {
                let mut padded = vec![b'q'; at];
                padded.extend_from_slice(text);
                check(&padded);
            }
        }
    }

    #[test]
    fn binary_garbage() {
        // Deterministic pseudo-random bytes (xorshift), biased and unbiased.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in [1, 63, 64, 65, 127, 128, 129, 1000, 4096] {
            for _ in 0..20 {
                let text: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                check(&text);
                let text: Vec<u8> = (0..len)
                    .map(|_| {
                        let r = next();
                        if r & 3 == 0 { 0x80 | (r >> 8) as u8 } else { b'a' + (r >> 8) as u8 % 26 }
                    })
                    .collect();
                check(&text);
            }
        }
    }

    /// The decoder against std on every scalar value and on every lead byte
    /// followed by every second byte and a spread of third/fourth bytes.
    #[test]
    fn decoder_matches_std() {
        for c in (0x80..=0x10ffff).filter_map(char::from_u32) {
            let mut buf = [0u8; 4];
            let encoded = c.encode_utf8(&mut buf).as_bytes();
            assert_eq!(decode_at(encoded, 0), (encoded.len(), reference_is_letter(c)), "{c:?}");
        }
        // Only the first continuation byte has lead-dependent bounds; later
        // ones are checked against 80..=BF, so their edges suffice.
        let spread = [0x41, 0x80, 0xbf, 0xc0];
        for b0 in 0x80..=0xffu8 {
            for b1 in 0..=0xffu8 {
                for b2 in spread {
                    for b3 in spread {
                        let bytes = [b0, b1, b2, b3];
                        // Go: a well-formed character, or one byte of U+FFFD.
                        let expected = match bytes.utf8_chunks().next().map(|c| c.valid()) {
                            Some(valid) if !valid.is_empty() => {
                                let c = valid.chars().next().expect("nonempty");
                                (c.len_utf8(), reference_is_letter(c))
                            }
                            _ => (1, false),
                        };
                        for len in 1..=4 {
                            // Truncated input too: never reads past the end.
                            let (got_len, got_letter) = decode_at(&bytes[..len], 0);
                            if expected.0 <= len {
                                assert_eq!((got_len, got_letter), expected, "{bytes:x?}");
                            } else {
                                assert_eq!((got_len, got_letter), (1, false), "{bytes:x?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn mode_dispatch() {
        let text = "Straße 7".as_bytes();
        let mut ascii = Vec::new();
        for_each_word_ascii(text, |w| ascii.push(w));
        let mut unicode = Vec::new();
        for_each_word_unicode(text, |w| unicode.push(w));
        assert_eq!(ascii, [&b"Stra"[..], b"e"]);
        assert_eq!(unicode, ["Straße".as_bytes()]);
    }

    /// Pieces that random texts are made of.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[a-zA-Z]{1,12}".prop_map(String::into_bytes),
            "[ .,;:!?0-9_\\-'\"\n\t]{1,4}".prop_map(String::into_bytes),
            // Letters and non-letters from many scripts and planes.
            "[àéïõüßæøÆŒǅʰªºαβγΩжЖщ中文字かなカナ한글אבגعربي𐐷𠀀]{1,6}".prop_map(String::into_bytes),
            "[\u{300}\u{301}\u{a0}\u{2003}€©½٣Ⅻ😀\u{200b}\u{feff}]{1,3}".prop_map(String::into_bytes),
            any::<char>().prop_map(|c| c.to_string().into_bytes()),
            // Ill-formed pieces.
            prop::sample::select(vec![
                &b"\x80"[..],
                b"\xbf",
                b"\xc3",
                b"\xe4\xb8",
                b"\xf0\x9f\x98",
                b"\xc0\xaf",
                b"\xc1\x81",
                b"\xe0\x80\xaf",
                b"\xf0\x80\x80\xaf",
                b"\xed\xa0\x80",
                b"\xed\xbf\xbf",
                b"\xf4\x90\x80\x80",
                b"\xf5",
                b"\xf8",
                b"\xfe",
                b"\xff",
            ])
            .prop_map(<[u8]>::to_vec),
            prop::collection::vec(any::<u8>(), 1..4),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn random_bytes_match_reference(text in prop::collection::vec(any::<u8>(), 0..300)) {
            check(&text);
        }

        #[test]
        fn random_high_bytes_match_reference(
            text in prop::collection::vec(prop_oneof![0x41u8..0x5b, 0x61u8..0x7b, 0x80u8..=0xff, Just(b' ')], 0..300)
        ) {
            check(&text);
        }

        #[test]
        fn random_mixes_match_reference(
            lead in 0usize..64,
            pieces in prop::collection::vec(piece(), 0..60),
        ) {
            let mut text = vec![b'k'; lead];
            for p in &pieces {
                text.extend_from_slice(p);
            }
            check(&text);
            // The same text behind a separator, shifting every alignment.
            text.insert(0, b' ');
            check(&text);
        }
    }
}
