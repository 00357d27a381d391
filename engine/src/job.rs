//! The job API: map a split, optionally combine values, reduce each key.

use std::io::Write;
use std::marker::PhantomData;

use spillway_shuffle::{ArchivedValue, Value, to_owned};

use crate::error::JobError;
use crate::input::{Split, SplitMode};

/// A MapReduce job.
///
/// `map` runs once per split (its local variables are the per-split state), emitting
/// `(key, value)` pairs; keys are byte strings and values any rkyv-archivable type. Whether
/// values of equal keys are combined is one explicit choice that every job states:
/// [`Job::Combiner`] is a [`Combiner`] (often the job itself) that [`Job::combiner`] returns,
/// folding values map-side, in merges and before reduce (associative and commutative), or
/// [`NoCombiner`]. `reduce` sees each key once, in byte order within its partition, with all
/// its remaining values, and writes output bytes.
///
/// ```
/// use spillway_engine::{Combiner, Emitter, Job, JobError, Split, Values};
///
/// struct Count;
///
/// impl Job for Count {
///     type Value = u64;
///     type Combiner = Self;
///
///     fn combiner(&self) -> Option<&Self> {
///         Some(self)
///     }
///
///     fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, u64>) -> Result<(), JobError> {
///         split.data.split(|b| *b == b' ').for_each(|w| emit.emit(w, 1));
///         Ok(())
///     }
///
///     fn reduce(&self, key: &[u8], values: Values<'_, '_, u64>, out: &mut dyn std::io::Write) -> Result<(), JobError> {
///         let total: u64 = values.map(|v| v.to_native()).sum();
///         writeln!(out, "{}\t{total}", String::from_utf8_lossy(key))?;
///         Ok(())
///     }
/// }
///
/// impl Combiner<u64> for Count {
///     fn combine(&self, acc: &mut u64, value: u64) {
///         *acc += value;
///     }
/// }
/// ```
///
/// A job that combines nothing says so: `type Combiner = NoCombiner;` and `fn combiner(&self)
/// -> Option<&NoCombiner> { None }`. Forgetting the choice does not compile:
///
/// ```compile_fail,E0046
/// use spillway_engine::{Emitter, Job, JobError, Split, Values};
///
/// struct Count;
///
/// impl Job for Count {
///     type Value = u64;
///     fn map(&self, _: &Split<'_>, _: &mut Emitter<'_, u64>) -> Result<(), JobError> { Ok(()) }
///     fn reduce(&self, _: &[u8], _: Values<'_, '_, u64>, _: &mut dyn std::io::Write) -> Result<(), JobError> { Ok(()) }
/// }
/// ```
///
/// and neither does a `combine` written on the job itself (once a method the engine called
/// only when a separate `COMBINER` flag was also set, and silently ignored otherwise):
///
/// ```compile_fail,E0407
/// use spillway_engine::{Emitter, Job, JobError, NoCombiner, Split, Values};
///
/// struct Count;
///
/// impl Job for Count {
///     type Value = u64;
///     type Combiner = NoCombiner;
///     fn combiner(&self) -> Option<&NoCombiner> { None }
///     fn map(&self, _: &Split<'_>, _: &mut Emitter<'_, u64>) -> Result<(), JobError> { Ok(()) }
///     fn combine(&self, acc: &mut u64, value: u64) { *acc += value }
///     fn reduce(&self, _: &[u8], _: Values<'_, '_, u64>, _: &mut dyn std::io::Write) -> Result<(), JobError> { Ok(()) }
/// }
/// ```
pub trait Job: Send + Sync {
    /// The value type.
    type Value: Value;

    /// What folds values of equal keys: a [`Combiner`] of [`Job::Value`]s (often `Self`), or
    /// [`NoCombiner`]. No default: every job chooses.
    type Combiner: Combiner<Self::Value>;

    /// The combiner the engine applies, or `None` for none (always `None` with
    /// [`NoCombiner`]). Asked once per map worker and per merge, not per value.
    fn combiner(&self) -> Option<&Self::Combiner>;

    /// How inputs are cut into splits. Defaults to lines.
    fn split_mode(&self) -> SplitMode {
        SplitMode::Lines
    }

    /// Everything besides the job's type and split mode that changes its output (a word
    /// mode, a pattern), as text. Ranks compare it before any work starts, so that ranks
    /// started with different settings refuse to run instead of writing mixed output.
    /// Defaults to nothing: override it when the job has settings.
    fn parameters(&self) -> String {
        String::new()
    }

    /// Maps one split.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming the split.
    fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, Self::Value>) -> Result<(), JobError>;

    /// Reduces one key.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming the partition.
    fn reduce(
        &self,
        key: &[u8],
        values: Values<'_, '_, Self::Value>,
        out: &mut dyn Write,
    ) -> Result<(), JobError>;
}

/// Folds values of one key: a job's combiner ([`Job::Combiner`]). It must be associative and
/// commutative: the engine applies it map-side as pairs are emitted, in merges of runs, and
/// before reduce, in any grouping.
pub trait Combiner<V: Value>: Send + Sync {
    /// Folds `value` into `acc`.
    fn combine(&self, acc: &mut V, value: V);

    /// Folds an archived value into `acc` (in merges). Defaults to deserializing it and calling
    /// [`Combiner::combine`]; override when the archived form can be folded directly.
    fn combine_archived(&self, acc: &mut V, value: &ArchivedValue<V>) {
        self.combine(acc, to_owned::<V>(value));
    }
}

/// The [`Job::Combiner`] of a job that combines nothing (it has no values: its
/// [`Job::combiner`] returns `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCombiner {}

impl<V: Value> Combiner<V> for NoCombiner {
    fn combine(&self, _: &mut V, _: V) {
        match *self {}
    }
}

/// The engine's view of a job's combiner: whether there is one, and folding through it.
pub(crate) trait Combining: Job {
    /// Whether the job has a combiner.
    fn combines(&self) -> bool {
        self.combiner().is_some()
    }

    /// Folds `value` into `acc` with the combiner (nothing without one).
    #[inline]
    fn combine(&self, acc: &mut Self::Value, value: Self::Value) {
        if let Some(c) = self.combiner() {
            c.combine(acc, value);
        }
    }

    /// Folds an archived value into `acc` with the combiner (nothing without one).
    #[inline]
    fn combine_archived(&self, acc: &mut Self::Value, value: &ArchivedValue<Self::Value>) {
        if let Some(c) = self.combiner() {
            c.combine_archived(acc, value);
        }
    }
}

impl<J: Job + ?Sized> Combining for J {}

thread_local! {
    static IN_JOB_CODE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is running the job's code under the engine's watch: a panic raised now
/// is caught by the engine, which retries the split or partition or fails the job with the
/// panic's message. A process-wide panic hook that ends the process (an MPI program's
/// `MPI_Abort`) should let such a panic pass.
pub fn in_job_code() -> bool {
    IN_JOB_CODE.with(std::cell::Cell::get)
}

/// Runs the job's code `f`, catching a panic: an error or a panic comes back as its message
/// (a panic's as `panicked: MESSAGE`). [`in_job_code`] is true meanwhile.
pub(crate) fn call(f: impl FnOnce() -> Result<(), JobError>) -> Result<(), String> {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_JOB_CODE.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(IN_JOB_CODE.with(|c| c.replace(true)));
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(panic_message(&*panic)),
    }
}

/// Runs `f`, which calls the job's code, catching a panic (its message comes back as
/// `panicked: MESSAGE`). [`in_job_code`] is true meanwhile.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let mut out = None;
    call(|| {
        out = Some(f());
        Ok(())
    })?;
    Ok(out.expect("ran"))
}

/// `panicked: MESSAGE` for a panic's payload, as the engine reports a panic in job code (for
/// front ends that catch panics themselves, such as the C ABI).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".into()
    }
}

/// The values of one key, as reduce sees them: archived values borrowed from the runs.
pub type Values<'i, 'a, V> = &'i mut dyn Iterator<Item = &'a ArchivedValue<V>>;

/// What a map call emits into: implemented by the map-side buffers of `buffer`.
pub(crate) trait MapBuffer<V: Value> {
    /// Adds one pair, spilling first when the pair would not fit.
    fn insert(&mut self, key: &[u8], value: V);

    /// Finishes every insert begun (a buffer may defer part of one, such as the combining of
    /// a value, to later inserts). Called at the end of each split, still under
    /// [`call`], since it may run the job's combiner.
    fn finish_inserts(&mut self) {}
}

/// Where `map` sends its pairs: the worker thread's map-side buffer, which combines, and
/// spills to a run when its share of the memory budget is used.
pub struct Emitter<'b, V: Value> {
    pub(crate) buffer: &'b mut dyn MapBuffer<V>,
    pub(crate) records: u64,
}

impl<V: Value> std::fmt::Debug for Emitter<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter").field("records", &self.records).finish_non_exhaustive()
    }
}

impl<V: Value> Emitter<'_, V> {
    /// Emits one pair.
    #[inline]
    pub fn emit(&mut self, key: &[u8], value: V) {
        self.records += 1;
        self.buffer.insert(key, value);
    }

    /// Pairs emitted so far in this split.
    pub fn records(&self) -> u64 {
        self.records
    }
}

/// A job built from closures: see [`from_fns`].
pub struct FnJob<V, M, C, R> {
    map: M,
    combine: C,
    reduce: R,
    _value: PhantomData<fn() -> V>,
}

impl<V, M, C, R> std::fmt::Debug for FnJob<V, M, C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnJob").finish_non_exhaustive()
    }
}

/// A job from three closures: `map(split_bytes, emit)`, an associative and commutative
/// `combine(acc, value)`, and `reduce(key, values, out)`.
///
/// ```
/// use spillway_engine::{Engine, Inputs, OutputSpec, jobs::write_key_value, from_fns};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("in.txt"), "b a b\nc b\n")?;
/// let job = from_fns(
///     |text: &[u8], emit: &mut dyn FnMut(&[u8], u64)| {
///         text.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).for_each(|w| emit(w, 1))
///     },
///     |acc: &mut u64, v: u64| *acc += v,
///     |key: &[u8], total: u64, out: &mut dyn std::io::Write| write_key_value(out, key, total),
/// );
/// let out = dir.path().join("counts.tsv");
/// let engine = Engine::builder().threads(2).partitions(4).build()?;
/// engine.run(&job, &Inputs::new([dir.path().join("in.txt")])?, &OutputSpec::File(out.clone()))?;
/// assert_eq!(std::fs::read_to_string(out)?, "a\t1\nb\t3\nc\t1\n");
/// # Ok(()) }
/// ```
pub fn from_fns<V, M, C, R>(map: M, combine: C, reduce: R) -> FnJob<V, M, C, R>
where
    V: Value,
    M: Fn(&[u8], &mut dyn FnMut(&[u8], V)) + Send + Sync,
    C: Fn(&mut V, V) + Send + Sync,
    R: Fn(&[u8], V, &mut dyn Write) -> std::io::Result<()> + Send + Sync,
{
    FnJob { map, combine, reduce, _value: PhantomData }
}

impl<V, M, C, R> Job for FnJob<V, M, C, R>
where
    V: Value,
    M: Fn(&[u8], &mut dyn FnMut(&[u8], V)) + Send + Sync,
    C: Fn(&mut V, V) + Send + Sync,
    R: Fn(&[u8], V, &mut dyn Write) -> std::io::Result<()> + Send + Sync,
{
    type Value = V;
    type Combiner = Self;

    fn combiner(&self) -> Option<&Self> {
        Some(self)
    }

    fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, V>) -> Result<(), JobError> {
        (self.map)(split.data, &mut |key, value| emit.emit(key, value));
        Ok(())
    }

    fn reduce(&self, key: &[u8], values: Values<'_, '_, V>, out: &mut dyn Write) -> Result<(), JobError> {
        let mut values = values.map(to_owned::<V>);
        let mut acc = values.next().expect("reduce sees at least one value");
        for v in values {
            (self.combine)(&mut acc, v);
        }
        (self.reduce)(key, acc, out)?;
        Ok(())
    }
}

impl<V, M, C, R> Combiner<V> for FnJob<V, M, C, R>
where
    V: Value,
    M: Fn(&[u8], &mut dyn FnMut(&[u8], V)) + Send + Sync,
    C: Fn(&mut V, V) + Send + Sync,
    R: Fn(&[u8], V, &mut dyn Write) -> std::io::Result<()> + Send + Sync,
{
    fn combine(&self, acc: &mut V, value: V) {
        (self.combine)(acc, value);
    }
}
