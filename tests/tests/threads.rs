//! Changing a running job's worker threads through the library (`Progress::set_threads_wanted`,
//! what `spillway ctl --threads` calls), deterministically: the job's own code changes the
//! count at chosen points of the map phase and reduce (and of the planned merges, when the
//! background merges of the map phase left more than F runs), and the output is the bytes of
//! a run without changes. (`merge_plan`'s unit tests change the count between merge steps.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spillway_engine::jobs::WordCount;
use spillway_engine::text::WordMode;
use spillway_engine::{
    ArchivedValue, Combiner, Emitter, Engine, Inputs, Job, JobError, OutputSpec, Phase, Progress, Split,
    Values,
};

/// Word count that asks for other thread counts as it goes: at its 300th split (6, then it
/// waits until more than the engine's 2 workers are active), its 900th (1) and 1500th (3);
/// at the 2000th combine of the planned merges (5) and the 50000th (1); at the 1000th key
/// reduced (4) and the 20000th (1). It records each change with the phase it was made in.
struct Changing {
    inner: WordCount,
    progress: Arc<Progress>,
    splits: AtomicU64,
    combines: AtomicU64,
    keys: AtomicU64,
    changes: Mutex<Vec<(Phase, usize)>>,
}

impl Changing {
    fn change(&self, n: usize) {
        self.progress.set_threads_wanted(n);
        self.changes.lock().unwrap().push((self.progress.phase(), n));
    }
}

impl Job for Changing {
    type Value = u64;
    type Combiner = Self;

    fn combiner(&self) -> Option<&Self> {
        Some(self)
    }

    fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, u64>) -> Result<(), JobError> {
        match self.splits.fetch_add(1, Ordering::SeqCst) + 1 {
            300 => {
                self.change(6);
                // More workers than the engine started are mapping (a guard against a hang,
                // not a timing assumption).
                let deadline = Instant::now() + Duration::from_secs(300);
                while self.progress.threads_active.load(Ordering::SeqCst) <= 2 {
                    assert!(Instant::now() < deadline, "no third worker started");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            900 => self.change(1),
            1500 => self.change(3),
            _ => {}
        }
        self.inner.map(split, emit)
    }

    fn reduce(
        &self,
        key: &[u8],
        values: Values<'_, '_, u64>,
        out: &mut dyn std::io::Write,
    ) -> Result<(), JobError> {
        match self.keys.fetch_add(1, Ordering::SeqCst) + 1 {
            1000 => self.change(4),
            20000 => self.change(1),
            _ => {}
        }
        self.inner.reduce(key, values, out)
    }
}

impl Combiner<u64> for Changing {
    fn combine(&self, acc: &mut u64, value: u64) {
        self.inner.combine(acc, value);
    }

    fn combine_archived(&self, acc: &mut u64, value: &ArchivedValue<u64>) {
        if self.progress.phase() == Phase::Merge {
            match self.combines.fetch_add(1, Ordering::SeqCst) + 1 {
                2000 => self.change(5),
                50000 => self.change(1),
                _ => {}
            }
        }
        self.inner.combine_archived(acc, value);
    }
}

#[test]
fn threads_change_in_every_phase_and_the_output_stays() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("text.txt");
    std::fs::write(&input, spillway_tests::messy_text(91, 8 << 20)).unwrap();
    let inputs = Inputs::new([&input]).unwrap();
    let engine = |progress: Arc<Progress>| {
        Engine::builder()
            .threads(2)
            .partitions(16)
            .memory_budget(1 << 20)
            .max_open_runs(2)
            .split_size(4 << 10)
            .spill_dir(dir.path())
            .progress(progress)
            .build()
            .unwrap()
    };
    let clean = dir.path().join("clean");
    let word_count = WordCount { mode: WordMode::Unicode };
    engine(Arc::default()).run(&word_count, &inputs, &OutputSpec::Dir(clean.clone())).unwrap();

    let progress = Arc::new(Progress::default());
    let job = Changing {
        inner: word_count,
        progress: Arc::clone(&progress),
        splits: AtomicU64::new(0),
        combines: AtomicU64::new(0),
        keys: AtomicU64::new(0),
        changes: Mutex::new(Vec::new()),
    };
    let out = dir.path().join("out");
    let metrics = engine(Arc::clone(&progress)).run(&job, &inputs, &OutputSpec::Dir(out.clone())).unwrap();
    assert_eq!(spillway_tests::read_parts(&out), spillway_tests::read_parts(&clean));
    let changes = job.changes.into_inner().unwrap();
    for phase in [Phase::Map, Phase::Reduce] {
        assert!(
            changes.iter().filter(|(p, _)| *p == phase).count() >= 2,
            "{phase:?}: {changes:?} ({metrics:?})"
        );
    }
    eprintln!("changes: {changes:?}");
    assert!(progress.threads_max.load(Ordering::SeqCst) >= 6);
    assert_eq!(progress.threads_active.load(Ordering::SeqCst), 0);
}
