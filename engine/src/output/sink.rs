//! [`Sink`]: the caller receives each reduced key's output ([`OutputSpec::Sink`](crate::OutputSpec::Sink)).

use std::sync::{Arc, Mutex, PoisonError};

/// What receives each reduced key's output when the output is [`OutputSpec::Sink`](crate::OutputSpec::Sink): a closure
/// `FnMut(key, output) -> io::Result<()>` will do.
pub trait KeySink: Send {
    /// Receives `key` and the bytes reduce wrote for it (possibly none). Called once per key,
    /// in byte order of the keys, from one thread at a time, never concurrently.
    ///
    /// # Errors
    ///
    /// An error fails the job ([`Error::Output`](crate::Error::Output), with its message).
    fn accept(&mut self, key: &[u8], output: &[u8]) -> std::io::Result<()>;
}

impl<F: FnMut(&[u8], &[u8]) -> std::io::Result<()> + Send> KeySink for F {
    fn accept(&mut self, key: &[u8], output: &[u8]) -> std::io::Result<()> {
        self(key, output)
    }
}

/// The caller's receiver of a job's output ([`OutputSpec::Sink`](crate::OutputSpec::Sink)): a [`KeySink`] shared
/// behind a lock, so that an [`OutputSpec`](crate::OutputSpec) holding it stays `Clone`. Every key goes to it in
/// byte order, one at a time, from the thread running the final merge, as the bytes of one
/// output file would; a job runs with one partition then (as for [`OutputSpec::File`](crate::OutputSpec::File)). Under
/// MPI only rank 0's sink receives anything. Reduce is not retried into a sink (the keys it
/// received cannot be taken back).
///
/// ```
/// use spillway_engine::{Engine, Inputs, OutputSpec, Sink, jobs::WordCount, text::WordMode};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let inputs = Inputs::from_memory([("in.txt", b"b a b\n".as_slice())])?;
/// let (sink, collected) = Sink::collect();
/// let engine = Engine::builder().threads(2).build()?;
/// engine.run(&WordCount { mode: WordMode::Unicode }, &inputs, &OutputSpec::Sink(sink))?;
/// let pairs = collected.take();
/// assert_eq!(pairs, [(b"a".to_vec(), b"a\t1\n".to_vec()), (b"b".to_vec(), b"b\t2\n".to_vec())]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sink(Arc<Mutex<dyn KeySink>>);

impl Sink {
    /// A sink calling `sink` for each key.
    pub fn new(sink: impl KeySink + 'static) -> Self {
        Sink(Arc::new(Mutex::new(sink)))
    }

    /// A sink that collects `(key, output bytes)` pairs in key order, and the handle that
    /// takes them once the job has run.
    pub fn collect() -> (Self, Collected) {
        let collected = Collected::default();
        let pairs = Arc::clone(&collected.0);
        let sink = Sink::new(move |key: &[u8], output: &[u8]| {
            pairs.lock().unwrap_or_else(PoisonError::into_inner).push((key.to_vec(), output.to_vec()));
            Ok(())
        });
        (sink, collected)
    }

    /// Hands one key's output to the sink.
    pub(crate) fn accept(&self, key: &[u8], output: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).accept(key, output)
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The same on every rank: the ranks' agreement digests the output's `Debug` form.
        f.write_str("Sink")
    }
}

impl PartialEq for Sink {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Sink {}

/// The `(key, output bytes)` pairs a [`Sink::collect`] sink received, in key order.
#[derive(Debug, Clone, Default)]
pub struct Collected(Arc<Mutex<Vec<KeyOutput>>>);

/// A key and the output bytes reduce wrote for it.
pub type KeyOutput = (Vec<u8>, Vec<u8>);

impl Collected {
    /// Takes the pairs received so far (leaving none).
    pub fn take(&self) -> Vec<KeyOutput> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use crate::jobs::{InvertedIndex, WordCount};
    use crate::text::WordMode;
    use crate::{Engine, Inputs, OutputSpec, Sink};

    fn corpus(dir: &std::path::Path) -> Inputs {
        let mut text = String::new();
        for i in 0..20_000u32 {
            text.push_str(&format!("w{} x{} common\n", i % 997, i % 13));
        }
        std::fs::write(dir.join("a.txt"), &text).unwrap();
        std::fs::write(dir.join("b.txt"), text.to_uppercase()).unwrap();
        Inputs::new([dir.join("a.txt"), dir.join("b.txt")]).unwrap()
    }

    #[test]
    fn collected_pairs_equal_the_file_output() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = corpus(dir.path());
        // A small budget: the final merge reads many runs.
        let engine = Engine::builder().threads(3).memory_budget(256 << 10).build().unwrap();
        let job = WordCount { mode: WordMode::Unicode };
        let file = dir.path().join("out.tsv");
        engine.run(&job, &inputs, &OutputSpec::File(file.clone())).unwrap();
        let (sink, collected) = Sink::collect();
        let metrics = engine.run(&job, &inputs, &OutputSpec::Sink(sink)).unwrap();
        let pairs = collected.take();
        assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0), "keys in byte order");
        assert_eq!(metrics.output_keys, pairs.len() as u64);
        let bytes: Vec<u8> = pairs.iter().flat_map(|(_, out)| out.iter().copied()).collect();
        assert_eq!(bytes, std::fs::read(&file).unwrap());
        for (key, out) in &pairs {
            assert!(out.starts_with(key) && out[key.len()] == b'\t', "each key gets its own line");
        }
    }

    #[test]
    fn a_sink_is_called_from_one_thread_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = corpus(dir.path());
        let engine = Engine::builder().threads(4).build().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), Vec::<Vec<u8>>::new())));
        let record = std::sync::Arc::clone(&seen);
        let sink = Sink::new(move |key: &[u8], _: &[u8]| {
            let mut seen = record.lock().unwrap();
            seen.0.push(std::thread::current().id());
            seen.1.push(key.to_vec());
            Ok(())
        });
        let job = InvertedIndex::new(&inputs, WordMode::Unicode);
        engine.run(&job, &inputs, &OutputSpec::Sink(sink)).unwrap();
        let (threads, keys) = &*seen.lock().unwrap();
        assert!(!keys.is_empty());
        assert!(threads.iter().all(|t| *t == threads[0]), "one thread");
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "key order");
    }

    #[test]
    fn a_failing_sink_fails_the_job_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = corpus(dir.path());
        let engine = Engine::builder().threads(2).build().unwrap();
        let sink = Sink::new(|key: &[u8], _: &[u8]| match key {
            b"common" => Err(std::io::Error::other("no room for common")),
            _ => Ok(()),
        });
        let err =
            engine.run(&WordCount { mode: WordMode::Unicode }, &inputs, &OutputSpec::Sink(sink)).unwrap_err();
        assert!(matches!(err, crate::Error::Output { .. }), "{err:?}");
        assert!(err.to_string().contains("no room for common"), "{err}");
    }
}
