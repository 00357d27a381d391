//! The journal reader ([`journal::parse`]) against damaged files: random valid journals, then
//! bit flips, truncations, insertions, and duplicated or swapped records. Whatever the damage,
//! `parse` returns without panicking; a damaged byte loses the records from the one that holds
//! it on (the records before it come back unchanged, and `stopped` says where), and records
//! that are whole but out of order are refused where a `Begin` is out of place.
//!
//! The coverage-guided side of the same checks is `shuffle/fuzz/` (`journal`, `journal_framed`).

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::sample::Index;
use spillway_engine::journal::{self, Begin, InputId, MAGIC, Parsed, Record, RunRef};

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "(spill|merge)-[0-9]{6}\\.run",
        "\\PC{0,12}", // any printable text: quotes, backslashes, non-ASCII
    ]
}

fn run_ref() -> impl Strategy<Value = RunRef> {
    (name(), any::<u64>()).prop_map(|(name, bytes)| RunRef { name, bytes })
}

fn input_id() -> impl Strategy<Value = InputId> {
    (name(), any::<u64>(), any::<(i64, i64)>(), any::<(u64, u64)>())
        .prop_map(|(path, bytes, mtime, file)| InputId { path: PathBuf::from(path), bytes, mtime, file })
}

fn begin() -> impl Strategy<Value = Record> {
    (
        prop::collection::vec((name(), any::<u64>()), 0..6),
        any::<u64>(),
        prop::collection::vec(input_id(), 0..4),
        any::<u64>(),
    )
        .prop_map(|(settings, fingerprint, inputs, splits)| {
            Record::Begin(Begin { version: 1, settings, fingerprint, inputs, splits })
        })
}

/// JSON like the job's metrics: numbers (integers and floats), text, lists and objects.
fn metrics() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (0.0..1e6f64).prop_map(serde_json::Value::from),
        name().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(name(), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn later_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        3 => (prop::collection::vec(any::<u32>(), 0..5), prop::collection::vec(run_ref(), 0..4))
            .prop_map(|(splits, runs)| Record::Committed { splits, runs }),
        2 => (prop::collection::vec(name(), 0..4), run_ref())
            .prop_map(|(inputs, output)| Record::Merged { inputs, output }),
        1 => (any::<(u64, u64)>(), metrics()).prop_map(|(output, metrics)| Record::Committing { output, metrics }),
    ]
}

/// A journal's records: `Begin`, then up to 8 others.
fn records() -> impl Strategy<Value = Vec<Record>> {
    (begin(), prop::collection::vec(later_record(), 0..8)).prop_map(|(first, rest)| {
        let mut records = vec![first];
        records.extend(rest);
        records
    })
}

/// The journal file of `records`, and where each record starts (then where the file ends).
fn journal(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = MAGIC.to_vec();
    let mut starts = Vec::with_capacity(records.len() + 1);
    for record in records {
        starts.push(bytes.len());
        bytes.extend(journal::encode(record));
    }
    starts.push(bytes.len());
    (bytes, starts)
}

/// How many records lie wholly before byte `at`.
fn whole_before(starts: &[usize], at: usize) -> usize {
    starts[1..].iter().take_while(|&&end| end <= at).count()
}

/// Damage to a journal file.
#[derive(Debug, Clone)]
enum Mutation {
    /// One bit of one byte flipped.
    Flip(Index, u8),
    /// The file cut short.
    Truncate(Index),
    /// Bytes inserted.
    Insert(Index, Vec<u8>),
    /// A whole record written twice in a row.
    Duplicate(Index),
    /// Two whole records in each other's place.
    Swap(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..24))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<Index>().prop_map(Mutation::Duplicate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
    ]
}

/// What every parse promises, whatever the bytes: `valid_len` within them and the bytes up to
/// it reading back as the same records cleanly, `stopped` exactly when they are not all of the
/// file, a first record that is `Begin` and no other, and records that re-encode to the same.
fn check_promises(bytes: &[u8], parsed: &Parsed) {
    assert!(parsed.valid_len <= bytes.len() as u64);
    let whole = parsed.valid_len == bytes.len() as u64 && bytes.len() >= MAGIC.len();
    assert_eq!(parsed.stopped.is_none(), whole, "{:?}", parsed.stopped);
    if parsed.valid_len > 0 {
        let kept = journal::parse(&bytes[..parsed.valid_len as usize]);
        assert_eq!((&kept.records, &kept.stopped), (&parsed.records, &None));
    }
    if let Some((first, rest)) = parsed.records.split_first() {
        assert!(matches!(first, Record::Begin(_)), "first record {first:?}");
        assert!(!rest.iter().any(|r| matches!(r, Record::Begin(_))), "a second Begin");
    }
    let (again, _) = journal(&parsed.records);
    assert_eq!(journal::parse(&again).records, parsed.records, "re-encoded");
}

/// `parsed` stopped at byte `at`, for a reason starting with one of `why`.
fn stopped_at(parsed: &Parsed, at: usize, why: &[&str]) -> bool {
    let Some(stopped) = parsed.stopped.as_deref() else { return false };
    let here = format!(" at byte {at}");
    (stopped.ends_with(&here) || stopped.contains(&format!("{here} ")))
        && why.iter().any(|w| stopped.starts_with(w))
}

/// Found by the property tests below: serde_json without `float_roundtrip` read this float
/// back one unit in the last place off, so a `Committing` record's metrics (whose phase times
/// are floats) did not read back as written.
#[test]
fn floats_in_the_metrics_read_back_exactly() {
    let metrics = serde_json::json!({"times": [973109.1098622425, 0.1 + 0.2, 1e-300, f64::MAX]});
    let records = vec![
        Record::Begin(Begin {
            version: 1,
            settings: Vec::new(),
            fingerprint: 0,
            inputs: Vec::new(),
            splits: 0,
        }),
        Record::Committing { output: (1, 2), metrics },
    ];
    let (bytes, _) = journal(&records);
    assert_eq!(journal::parse(&bytes).records, records);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Valid journals read back whole; one mutation gives exactly what the damage leaves.
    #[test]
    fn one_mutation_gives_what_the_damage_leaves(records in records(), mutation in mutation()) {
        let (bytes, starts) = journal(&records);
        let parsed = journal::parse(&bytes);
        prop_assert_eq!(&parsed, &Parsed { records: records.clone(), valid_len: bytes.len() as u64, stopped: None });

        let mut bad = bytes.clone();
        let n = records.len();
        // The records `parse` must return, and where and why it must stop (`None`: it reads
        // the whole file).
        let (expected, stop): (Vec<Record>, Option<(usize, &[&str])>) = match &mutation {
            Mutation::Flip(at, bit) => {
                let at = at.index(bad.len());
                bad[at] ^= 1 << bit;
                if at < MAGIC.len() {
                    (Vec::new(), Some((0, &["not a Spillway journal"][..])))
                } else {
                    // The header or payload of record k is damaged: its checksum (or length) fails.
                    let k = whole_before(&starts, at);
                    let why = &["record checksum mismatch", "torn record", "record length"][..];
                    (records[..k].to_vec(), Some((starts[k], why)))
                }
            }
            Mutation::Truncate(at) => {
                let at = at.index(bad.len());
                bad.truncate(at);
                if at < MAGIC.len() {
                    (Vec::new(), Some((0, &["not a Spillway journal"][..])))
                } else {
                    let k = whole_before(&starts, at);
                    let stop = (starts[k] != at).then_some((starts[k], &["torn record"][..]));
                    (records[..k].to_vec(), stop)
                }
            }
            Mutation::Insert(at, inserted) => {
                let at = at.index(bad.len() + 1);
                bad.splice(at..at, inserted.iter().copied());
                if at < MAGIC.len() && bad[..MAGIC.len()] != MAGIC[..] {
                    (Vec::new(), Some((0, &["not a Spillway journal"][..])))
                } else {
                    // Inserted into (or just before) record k: the records before it stay.
                    let k = if at < MAGIC.len() { 0 } else { whole_before(&starts, at) };
                    let why = &["record checksum mismatch", "torn record", "record length", "unreadable record"][..];
                    (records[..k].to_vec(), Some((starts[k], why)))
                }
            }
            Mutation::Duplicate(i) => {
                let i = i.index(n);
                bad.splice(starts[i + 1]..starts[i + 1], bytes[starts[i]..starts[i + 1]].iter().copied());
                if i == 0 {
                    // A second Begin: the journal is read up to it.
                    (records[..1].to_vec(), Some((starts[1], &["record out of place"][..])))
                } else {
                    let mut expected = records.clone();
                    expected.insert(i, records[i].clone());
                    (expected, None)
                }
            }
            Mutation::Swap(i, j) => {
                let (i, j) = (i.index(n).min(j.index(n)), i.index(n).max(j.index(n)));
                let mut swapped = records.clone();
                swapped.swap(i, j);
                let (rebuilt, _) = journal(&swapped);
                bad = rebuilt;
                if i == 0 && j != 0 {
                    // Another record first: nothing before it, and it is out of place.
                    (Vec::new(), Some((MAGIC.len(), &["record out of place"][..])))
                } else {
                    (swapped, None)
                }
            }
        };
        let parsed = journal::parse(&bad);
        check_promises(&bad, &parsed);
        prop_assert_eq!(&parsed.records, &expected, "{:?}: {:?}", mutation, parsed.stopped);
        match stop {
            None => prop_assert_eq!(parsed.stopped, None),
            Some((at, why)) => {
                prop_assert!(stopped_at(&parsed, at, why), "{:?}: expected a stop at byte {} ({:?}), got {:?}", mutation, at, why, parsed.stopped);
                prop_assert_eq!(parsed.valid_len, if at == 0 { 0 } else { at as u64 });
            }
        }
    }

    /// Any number of flips, truncations and insertions: what `parse` returns is a prefix of
    /// the original records, and short of all of them it says why it stopped, unless the
    /// damage left a shorter journal that ends cleanly after a record.
    #[test]
    fn damaged_bytes_give_a_prefix_of_the_records(
        records in records(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let (mut bad, _) = journal(&records);
        for mutation in &mutations {
            match mutation {
                Mutation::Flip(at, bit) => {
                    if !bad.is_empty() {
                        let at = at.index(bad.len());
                        bad[at] ^= 1 << bit;
                    }
                }
                Mutation::Truncate(at) => bad.truncate(at.index(bad.len() + 1)),
                Mutation::Insert(at, inserted) => {
                    let at = at.index(bad.len() + 1);
                    bad.splice(at..at, inserted.iter().copied());
                }
                // Whole-record moves are the other test's; here only bytes are damaged.
                Mutation::Duplicate(_) | Mutation::Swap(..) => {}
            }
        }
        let parsed = journal::parse(&bad);
        check_promises(&bad, &parsed);
        let got = parsed.records.len();
        prop_assert!(got <= records.len() && parsed.records[..] == records[..got], "{:?}: not a prefix", mutations);
        if got < records.len() {
            prop_assert!(
                parsed.stopped.is_some() || parsed.valid_len == bad.len() as u64,
                "{:?}: {} of {} records, no reason", mutations, got, records.len()
            );
        }
    }

    /// Arbitrary bytes after the magic never panic the reader, and keep its promises.
    #[test]
    fn arbitrary_bytes_keep_the_promises(tail in prop::collection::vec(any::<u8>(), 0..512), magic in any::<bool>()) {
        let bytes = if magic { [&MAGIC[..], &tail].concat() } else { tail };
        let parsed = journal::parse(&bytes);
        check_promises(&bytes, &parsed);
    }
}
