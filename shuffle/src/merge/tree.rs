//! The loser tree every merge of the workspace runs on, generic over its sources.
//!
//! A [`MergeSource`] is a cursor on a sorted stream: it shows its current head's key prefix,
//! compares its head with another source's, and advances. [`LoserTree`] merges up to F of
//! them; each instantiation is monomorphized, so a source's prefix, comparison and advance are
//! inlined into the replay. The sources are [`Merge`](super::Merge)'s partition iterators
//! (8-byte key prefixes, prefetching from fan-in 8) and [`RecordCursor`](super::RecordCursor)
//! (fixed-size records, 16-byte prefixes).

use std::cmp::Ordering;

/// From this fan-in on, [`LoserTree`] calls [`MergeSource::prefetch`] after advancing a source
/// whose [`MergeSource::PREFETCH`] is set. Below it the few interleaved streams are left to
/// the hardware prefetchers, and prefetching only costs time; from 8 on it pays (measurements
/// in `bench/README.md`).
pub const PREFETCH_MIN_FAN_IN: usize = 8;

/// A sorted stream that a [`LoserTree`] merges: a cursor on its current record (its *head*).
///
/// The tree keeps each source's [`prefix`](MergeSource::prefix) in its nodes and decides most
/// matches by comparing two prefixes; only equal prefixes look at the sources
/// ([`is_exhausted`](MergeSource::is_exhausted), then [`cmp_heads`](MergeSource::cmp_heads)).
/// Equal heads are won by the source with the lower index, so merges are deterministic.
pub trait MergeSource {
    /// An order-preserving summary of a head (the first bytes of its key, big-endian): a
    /// smaller prefix means a smaller head, and a smaller or equal head means a smaller or
    /// equal prefix. Equal prefixes decide nothing.
    type Prefix: Copy + Ord;
    /// What [`advance`](MergeSource::advance) can fail with
    /// ([`Infallible`](std::convert::Infallible) for sources already in memory).
    type Error;
    /// The prefix of an exhausted source: the largest, so that it loses on prefixes. A real
    /// head may have it too; the tree then asks [`is_exhausted`](MergeSource::is_exhausted).
    const EXHAUSTED: Self::Prefix;
    /// Whether the tree calls [`prefetch`](MergeSource::prefetch) (from fan-in
    /// [`PREFETCH_MIN_FAN_IN`] on).
    const PREFETCH: bool = false;

    /// The prefix of the head; [`EXHAUSTED`](MergeSource::EXHAUSTED) once the source is
    /// exhausted.
    fn prefix(&self) -> Self::Prefix;

    /// Whether the source has no head left.
    fn is_exhausted(&self) -> bool;

    /// Compares the heads of two sources that are not exhausted and whose prefixes are equal
    /// (the part of the heads that the prefix does not cover).
    fn cmp_heads(&self, other: &Self) -> Ordering;

    /// Moves to the next head (the source is not exhausted).
    ///
    /// # Errors
    ///
    /// The source could not read its next head; the merge stops.
    fn advance(&mut self) -> Result<(), Self::Error>;

    /// Hints the CPU to load the data of the next heads (only called when
    /// [`PREFETCH`](MergeSource::PREFETCH) is set).
    #[inline(always)]
    fn prefetch(&self) {}
}

/// One contestant in the loser tree: a source and the prefix of its head.
#[derive(Clone, Copy, Debug)]
struct Node<P> {
    prefix: P,
    source: usize,
}

/// A loser tree merging sorted [`MergeSource`]s: k sources at leaves `k..2k`, each internal
/// node holding the loser of the match between its subtrees, `tree[0]` the overall winner.
/// Taking a head replays only the winner's path (`ceil(log2 k)` matches), without a
/// data-dependent branch.
pub struct LoserTree<S: MergeSource> {
    sources: Vec<S>,
    /// `tree[0]` is the current winner; `tree[1..k]` hold the loser of each match, each with
    /// the prefix of its source's head.
    tree: Vec<Node<S::Prefix>>,
    /// Prefetch the winner's next heads after advancing it (`S::PREFETCH`, fan-in ≥
    /// [`PREFETCH_MIN_FAN_IN`]).
    prefetch: bool,
}

impl<S: MergeSource> std::fmt::Debug for LoserTree<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoserTree").field("fan_in", &self.sources.len()).finish_non_exhaustive()
    }
}

/// Does `a` come before `b`? Decided by the prefixes when they differ, otherwise by
/// [`before_slow`].
#[inline(always)]
fn before<S: MergeSource>(sources: &[S], a: Node<S::Prefix>, b: Node<S::Prefix>) -> bool {
    if a.prefix != b.prefix { a.prefix < b.prefix } else { before_slow(sources, a.source, b.source) }
}

/// Does source `a` come before source `b`, their prefixes being equal? Compares the heads;
/// exhausted sources come last; equal heads go in source order.
#[cold]
#[inline(never)]
fn before_slow<S: MergeSource>(sources: &[S], a: usize, b: usize) -> bool {
    let (x, y) = (&sources[a], &sources[b]);
    match (x.is_exhausted(), y.is_exhausted()) {
        (false, false) => match x.cmp_heads(y) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => a < b,
        },
        (false, true) => true,
        (true, false) => false,
        (true, true) => a < b,
    }
}

impl<S: MergeSource> LoserTree<S> {
    /// Merges `sources`, each sorted; ties go to the lower index.
    pub fn new(sources: Vec<S>) -> Self {
        let k = sources.len();
        let mut tree = LoserTree {
            prefetch: S::PREFETCH && k >= PREFETCH_MIN_FAN_IN,
            tree: vec![Node { prefix: S::EXHAUSTED, source: 0 }; k.max(1)],
            sources,
        };
        if k > 0 {
            tree.tree[0] = tree.build(1);
        }
        tree
    }

    /// Plays the matches below `node`, storing losers; returns the winner.
    fn build(&mut self, node: usize) -> Node<S::Prefix> {
        let k = self.sources.len();
        if node >= k {
            let source = node - k;
            return Node { prefix: self.sources[source].prefix(), source };
        }
        let left = self.build(2 * node);
        let right = self.build(2 * node + 1);
        let (winner, loser) = if before(&self.sources, left, right) { (left, right) } else { (right, left) };
        self.tree[node] = loser;
        winner
    }

    /// Number of merged sources.
    #[inline]
    pub fn fan_in(&self) -> usize {
        self.sources.len()
    }

    /// The source whose head comes next, `None` once every source is exhausted.
    #[inline(always)]
    pub fn peek(&self) -> Option<&S> {
        let source = self.sources.get(self.tree[0].source)?;
        if source.is_exhausted() { None } else { Some(source) }
    }

    /// The prefix of the head that comes next ([`MergeSource::EXHAUSTED`] when none does):
    /// kept in the tree, so reading it loads no source.
    #[inline(always)]
    pub fn peek_prefix(&self) -> S::Prefix {
        self.tree[0].prefix
    }

    /// Advances the source of the head that comes next and replays its path to the root.
    /// Call it only when [`peek`](Self::peek) gives a source.
    ///
    /// # Errors
    ///
    /// The source's [`advance`](MergeSource::advance) failed; the tree must not be used any
    /// further.
    // Always inlined into the caller's loop: the replay keeps the tree's and the sources'
    // pointers in registers.
    #[inline(always)]
    pub fn advance(&mut self) -> Result<(), S::Error> {
        // Borrow the fields apart: with the tree and sources as local slices, their pointers
        // stay in registers through the replay instead of being reloaded after every store.
        let LoserTree { sources, tree, prefetch } = self;
        let k = sources.len();
        let winner = tree[0].source;
        let source = &mut sources[winner];
        source.advance()?;
        if S::PREFETCH && *prefetch {
            source.prefetch();
        }
        let mut champion = Node { prefix: source.prefix(), source: winner };
        let (sources, tree) = (&sources[..], &mut tree[..]);
        let mut node = (winner + k) / 2;
        while node > 0 {
            let rival = tree[node];
            // Select by indexing a pair rather than with `if`, so that the replay has no
            // data-dependent branch (mispredicted about half the time on random keys).
            let rival_wins = usize::from(before(sources, rival, champion));
            let pair = [champion, rival];
            tree[node] = pair[rival_wins ^ 1];
            champion = pair[rival_wins];
            node /= 2;
        }
        tree[0] = champion;
        Ok(())
    }

    /// The sources, in their order.
    pub fn sources(&self) -> &[S] {
        &self.sources
    }

    /// Gives the sources back (to reuse their buffers).
    pub fn into_sources(self) -> Vec<S> {
        self.sources
    }
}
