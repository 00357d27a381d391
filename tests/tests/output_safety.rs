//! What the engine does to outputs that already exist or cannot be written: a failed job
//! leaves no part files, a dangling link is followed, a replaced file keeps its permissions,
//! and an output that cannot be written is refused before any work.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use spillway_engine::{Engine, Inputs, OutputSpec, from_fns, jobs::write_key_value};
use spillway_tests::spillway;

/// Word count through the closure API whose reduce fails on the key `boom`.
fn counting_job(fail_on_boom: bool) -> impl spillway_engine::Job<Value = u64> {
    from_fns(
        |text: &[u8], emit: &mut dyn FnMut(&[u8], u64)| {
            text.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).for_each(|w| emit(w, 1))
        },
        |acc: &mut u64, v: u64| *acc += v,
        move |key: &[u8], total: u64, out: &mut dyn std::io::Write| {
            if fail_on_boom && key == b"boom" {
                return Err(std::io::Error::other("reduce refuses boom"));
            }
            write_key_value(out, key, total)
        },
    )
}

fn parts(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_failed_reduce_leaves_no_part_files_and_the_rerun_succeeds() {
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("in.txt");
    let words: String = (0..2000).map(|i| format!("w{i} ")).collect();
    std::fs::write(&input, format!("{words}boom\n")).unwrap();
    let inputs = Inputs::new([&input]).unwrap();
    let engine = Engine::builder().threads(2).partitions(8).spill_dir(data.path()).build().unwrap();
    let out = data.path().join("out");

    let err = engine.run(&counting_job(true), &inputs, &OutputSpec::Dir(out.clone())).unwrap_err();
    assert!(err.to_string().contains("reduce refuses boom"), "{err}");
    // Neither the output directory nor its staging directory nor the spill directory.
    assert_eq!(parts(data.path()), ["in.txt"], "a failed job left files behind");

    let metrics = engine.run(&counting_job(false), &inputs, &OutputSpec::Dir(out.clone())).unwrap();
    assert_eq!(metrics.output_keys, 2001);
    let names = parts(&out);
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(names.iter().all(|n| n == "_SUCCESS" || n.starts_with("part-")), "{names:?}");
}

#[test]
fn out_follows_a_dangling_link_and_keeps_the_permissions_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "b a b\n").unwrap();

    for job in [&["wordcount", "-q"][..], &["sort", "-q", "--record-size", "2", "--key-size", "1"]] {
        let target = dir.path().join(format!("made-by-{}.out", job[0]));
        let link = dir.path().join(format!("link-{}.out", job[0]));
        std::os::unix::fs::symlink(target.file_name().unwrap(), &link).unwrap();
        let out = spillway(&[job, &["--out", &s(&link), &s(&input)]].concat());
        assert!(out.status.success(), "{job:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "{job:?}: link replaced");
        assert!(target.is_file(), "{job:?}: nothing written where the link points");

        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = spillway(&[job, &["--out", &s(&target), &s(&input)]].concat());
        assert!(out.status.success(), "{job:?}: {}", String::from_utf8_lossy(&out.stderr));
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{job:?}: the replaced output changed its permissions");
    }
}

#[test]
fn an_output_that_cannot_be_written_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "b a b\n").unwrap();
    let slash = format!("{}/", s(&dir.path().join("newout")));
    for job in [&["wordcount"][..], &["sort", "--record-size", "2", "--key-size", "1"]] {
        let out = spillway(&[job, &["-q", "--out", &slash, &s(&input)]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{job:?}: {err}");
        assert!(err.contains("ends with /"), "{job:?}: {err}");
    }
    assert!(!dir.path().join("newout").exists());

    // Without write permission on the directory (root ignores it: then there is nothing
    // to refuse).
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(locked.join("probe"), "").is_err() {
        let spill = dir.path().join("spill");
        std::fs::create_dir(&spill).unwrap();
        let out = spillway(&[
            "wordcount",
            "-q",
            "--spill-dir",
            &s(&spill),
            "--out",
            &s(&locked.join("counts.tsv")),
            &s(&input),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("cannot create files in"), "{err}");
        assert!(std::fs::read_dir(&spill).unwrap().next().is_none(), "work started before the check");
    }
}
