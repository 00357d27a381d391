//! The `spillway` binary end to end: outputs against references (`tr | sort | uniq -c`,
//! BTreeMap models, the spec's test vectors), exit codes, and clear errors for bad input.

use std::process::Command;

use spillway_tests::{
    gutenberg_files, messy_text, reference_grep, reference_index, reference_wordcount, spillway,
};

fn stdout_of(args: &[&str]) -> Vec<u8> {
    let out = spillway(args);
    assert!(out.status.success(), "spillway {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn strs(files: &[std::path::PathBuf]) -> Vec<String> {
    files.iter().map(|f| f.display().to_string()).collect()
}

/// `spillway wordcount --ascii` equals `tr -cs A-Za-z '\n' | LC_ALL=C sort | uniq -c`, in
/// every combination of threads, forced spills, F = 2 and partitions.
#[test]
fn ascii_wordcount_equals_tr_sort_uniq() {
    let files = gutenberg_files();
    let names = strs(&files);
    let script = format!("cat {} | tr -cs A-Za-z '\\n' | LC_ALL=C sort | uniq -c", names.join(" "));
    let out = Command::new("sh").arg("-c").arg(&script).env("LC_ALL", "C").output().unwrap();
    assert!(out.status.success());
    let mut expected = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (count, word) = line.trim_start().split_once(' ').unwrap_or((line.trim(), ""));
        if !word.is_empty() {
            expected.extend_from_slice(format!("{word}\t{count}\n").as_bytes());
        }
    }
    assert!(expected.len() > 100_000);
    let spill = tempfile::tempdir().unwrap();
    let spill_dir = spill.path().to_str().unwrap();
    for threads in ["1", "2"] {
        for extra in [
            &[][..],
            &["--memory", "1M", "--split-size", "64K"],
            &["--memory", "1M", "--split-size", "64K", "--max-open-runs", "2"],
        ] {
            for partitions in ["1", "7", "64"] {
                let mut args =
                    vec!["wordcount", "--ascii", "-q", "--threads", threads, "--partitions", partitions];
                args.extend_from_slice(&["--spill-dir", spill_dir]);
                args.extend_from_slice(extra);
                args.extend(names.iter().map(String::as_str));
                let got = stdout_of(&args);
                assert!(got == expected, "spillway {args:?} differs from tr | sort | uniq -c");
            }
        }
    }
    // Nothing left behind in the spill directory.
    assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0);
}

#[test]
fn unicode_wordcount_index_and_grep_match_the_models() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..3u64 {
        let path = dir.path().join(format!("doc{i}.txt"));
        std::fs::write(&path, messy_text(100 + i, 40_000)).unwrap();
        files.push(path);
    }
    // Binary input: every byte value, repeated.
    let binary = dir.path().join("binary.bin");
    std::fs::write(&binary, (0..=255u8).cycle().take(10_000).collect::<Vec<u8>>()).unwrap();
    files.push(binary);
    let names = strs(&files);
    let inputs: Vec<&str> = names.iter().map(String::as_str).collect();
    let common = ["-q", "--memory", "1M", "--split-size", "8K", "--max-open-runs", "3", "-r", "5"];

    let got = stdout_of(&[&["wordcount"][..], &common, &inputs].concat());
    assert!(got == reference_wordcount(&files, false), "unicode wordcount");
    let text = String::from_utf8(got).unwrap();
    assert!(text.contains("\nCæsar\t") && text.contains("\n日本語\t"), "non-ASCII words counted whole");

    let got = stdout_of(&[&["index"][..], &common, &inputs].concat());
    assert!(got == reference_index(&files, &names, false), "index");

    let pattern = r"Cæsar|^the|\d+ x";
    let got = stdout_of(&[&["grep"][..], &common, &[pattern], &inputs].concat());
    assert!(got == reference_grep(&files, &names, pattern), "grep");
}

#[test]
fn out_dir_commits_parts_and_success_with_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let files = strs(&gutenberg_files()[..2]);
    let mut args = vec!["wordcount", "-q", "-r", "4", "--out-dir", out.to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    assert!(spillway(&args).status.success());
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    for field in
        ["input_bytes", "map_records", "spills", "merge_steps", "max_fan_in", "peak_rss_bytes", "seconds"]
    {
        assert!(metrics.get(field).is_some(), "_SUCCESS lacks {field}: {metrics}");
    }
    assert_eq!(metrics["output_files"], 4);
    // No --memory: the budget comes from the machine, and the metrics say how.
    let source = metrics["memory_budget_source"].as_str().unwrap();
    assert!(source.starts_with("half of ") || source.starts_with("1 GiB: nothing known"), "{source}");
    assert!(metrics["memory_budget"].as_u64().unwrap() >= 64 << 10);
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 5, "4 parts and _SUCCESS, no temporary files: {names:?}");

    // A second run into the same directory is refused with exit status 3, output untouched.
    let before = std::fs::read(out.join("part-00000")).unwrap();
    let again = spillway(&args);
    assert_eq!(again.status.code(), Some(3));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.starts_with("spillway: error: ") && err.contains("already holds"), "{err}");
    assert_eq!(std::fs::read(out.join("part-00000")).unwrap(), before);
}

#[test]
fn errors_are_one_clear_line_with_distinct_exit_codes() {
    // Missing input: exit 3, names the path, no backtrace.
    let out = spillway(&["wordcount", "/no/such/file.txt"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/file.txt") && err.contains("No such file"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!err.contains("backtrace") && !err.contains("panicked"), "{err}");

    // Usage errors: exit 2.
    assert_eq!(spillway(&["wordcount"]).status.code(), Some(2));
    assert_eq!(spillway(&["wordcount", "--memory", "lots", "x"]).status.code(), Some(2));
    assert_eq!(spillway(&["frobnicate"]).status.code(), Some(2));
    let out = spillway(&["wordcount", "--out", "a", "--out-dir", "b", "x"]);
    assert_eq!(out.status.code(), Some(2));

    // Values out of range, and a pattern that does not parse: usage errors, exit 2.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "a\n").unwrap();
    let out = spillway(&["wordcount", "--max-open-runs", "1", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let out = spillway(&["grep", "(unclosed", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid pattern"));

    // A directory where a file should be written, or a file in a directory that does not
    // exist: exit 3 before any work, naming the path, and nothing left behind.
    let dir_str = dir.path().to_str().unwrap();
    let out = spillway(&["wordcount", "-q", "--out", dir_str, input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("output {dir_str}: is a directory")));
    let missing = dir.path().join("no-such-dir/counts.tsv");
    let out = spillway(&["wordcount", "-q", "--out", missing.to_str().unwrap(), input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-dir"));
    let (parent, name) = (dir.path().parent().unwrap(), dir.path().file_name().unwrap().to_string_lossy());
    let leftovers = std::fs::read_dir(parent)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(&format!(".{name}.")))
        .count();
    assert_eq!(leftovers, 0, "temporary output left in {}", parent.display());
}

/// `--out` through a symbolic link replaces the file it points to and keeps the link; `--out`
/// naming a FIFO (or a device) writes into it in place instead of renaming a file over it.
#[test]
fn out_follows_links_and_writes_into_fifos() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "b a b\n").unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    let target = dir.path().join("target.tsv");
    std::fs::write(&target, "old\n").unwrap();
    let link = dir.path().join("link.tsv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = spillway(&["wordcount", "-q", "--out", &s(&link), &s(&input)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "a\t1\nb\t2\n");

    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let reader = Command::new("cat").arg(&fifo).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let out = spillway(&["wordcount", "-q", "--out", &s(&fifo), &s(&input)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = reader.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(read.stdout).unwrap(), "a\t1\nb\t2\n");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
}

/// `sort --out` treats devices, FIFOs and links as the other jobs do: a FIFO receives the
/// sorted records in order and stays a FIFO, a full device fails the job (exit 1, naming it)
/// and stays a device, in memory and out of core; a link's target is replaced.
#[test]
fn sort_out_writes_into_fifos_and_devices() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let input = dir.path().join("records.dat");
    assert!(spillway(&["gen", "records", "20000", &s(&input)]).status.success());
    let sorted = dir.path().join("sorted.dat");
    assert!(spillway(&["sort", "-q", "--out", &s(&sorted), &s(&input)]).status.success());
    let expected = std::fs::read(&sorted).unwrap();

    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for memory in ["1G", "1M"] {
        // The reader writes to a file: a pipe back to this test would fill up and stall it.
        let read = dir.path().join(format!("read-{memory}"));
        let sink = std::fs::File::create(&read).unwrap();
        let mut reader = Command::new("cat").arg(&fifo).stdout(sink).spawn().unwrap();
        let out = spillway(&["sort", "-q", "--memory", memory, "--out", &s(&fifo), &s(&input)]);
        if !std::fs::metadata(&fifo).unwrap().file_type().is_fifo() {
            // Nobody will ever open the FIFO for writing: do not wait for the reader.
            let _ = reader.kill();
            panic!("--memory {memory}: the FIFO was replaced");
        }
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(reader.wait().unwrap().success());
        assert!(std::fs::read(&read).unwrap() == expected, "--memory {memory}: FIFO output differs");
    }

    let target = dir.path().join("target.dat");
    std::fs::write(&target, "old").unwrap();
    let link = dir.path().join("link.dat");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(spillway(&["sort", "-q", "--out", &s(&link), &s(&input)]).status.success());
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(std::fs::read(&target).unwrap() == expected);

    // A device node of our own (the real /dev/full would be lost to a regression), where
    // this machine lets us make one (root).
    let full = dir.path().join("full");
    if Command::new("mknod").arg(&full).args(["c", "1", "7"]).status().is_ok_and(|st| st.success()) {
        for memory in ["1G", "1M"] {
            let out = spillway(&["sort", "-q", "--memory", memory, "--out", &s(&full), &s(&input)]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "--memory {memory}: {err}");
            assert!(err.contains(&s(&full)) && err.contains("No space left"), "{err}");
            assert!(
                std::fs::metadata(&full).unwrap().file_type().is_char_device(),
                "the device was replaced"
            );
        }
    }
}

#[test]
fn broken_pipe_is_not_an_error() {
    let files = strs(&gutenberg_files());
    let script =
        format!("{} wordcount -q {} | head -1", spillway_tests::spillway_bin().display(), files.join(" "));
    let out = Command::new("bash").arg("-c").arg(format!("set -o pipefail; {script}")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn help_explains_every_flag() {
    let out = spillway(&["wordcount", "--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--threads",
        "--partitions",
        "--memory",
        "--max-open-runs",
        "--spill-dir",
        "--out-dir",
        "--out",
        "--split-size",
        "--io",
        "--read",
        "--metrics",
        "--quiet",
        "--ascii",
        "Exit status",
    ] {
        assert!(text.contains(flag), "wordcount --help lacks {flag}");
    }
    // The default budget is explained, with what it gives on this machine.
    for command in ["wordcount", "sort"] {
        let text = String::from_utf8(spillway(&[command, "--help"]).stdout).unwrap().replace('\n', " ");
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(text.contains("[default: half of the memory this process may use"), "{command}: {text}");
        assert!(text.contains("; here "), "{command} --help shows no computed default: {text}");
    }
    // --memory given: the metrics name it.
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("m.json");
    let file = gutenberg_files()[0].display().to_string();
    let out = spillway(&[
        "wordcount",
        "-q",
        "-m",
        "8M",
        "--metrics",
        metrics.to_str().unwrap(),
        "-o",
        "/dev/null",
        &file,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
    assert_eq!(
        (json["memory_budget"].as_u64(), json["memory_budget_source"].as_str()),
        (Some(8 << 20), Some("--memory"))
    );
}

#[test]
fn gen_records_matches_gensort_and_valsort_accepts_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recs");
    let f = file.to_str().unwrap();
    assert!(spillway(&["gen", "records", "--ascii", "1000", f]).status.success());
    let sha = Command::new("sha256sum").arg(&file).output().unwrap();
    assert!(
        String::from_utf8_lossy(&sha.stdout)
            .starts_with("6c26b26a61464dd78038f9c60907c851ac043c07584b12835fe065cbca31aad2")
    );
    assert!(spillway(&["gen", "records", "--start", "7", "1000", f]).status.success());
    let sha = Command::new("sha256sum").arg(&file).output().unwrap();
    assert!(
        String::from_utf8_lossy(&sha.stdout)
            .starts_with("f341a49b9b99a8e8aa1404ac7cad1887223a0ef930a292a65f19e4823ae4b0f8")
    );

    // Unsorted generator output: exit 1, valsort's report on standard error only.
    let out = spillway(&["valsort", f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        report.starts_with("First unordered record is record ") && report.contains("Records: 1000\n"),
        "{report}"
    );

    std::fs::write(&file, b"").unwrap();
    let out = spillway(&["valsort", f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("there must be at least one record to be validated")
    );
    std::fs::write(&file, [b'x'; 150]).unwrap();
    let out = spillway(&["valsort", f]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("partial record found at end"));
}

/// SIGINT or SIGTERM in the middle of a job that is spilling: exit status 128 + signal, the
/// job's spill directory removed, and no output file (final or temporary) left.
#[test]
fn interrupted_job_removes_its_spills_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    // About 25 MB of text: with a 1 MiB budget and F = 2 this spills and merges for seconds.
    let mut text = Vec::new();
    while text.len() < 25 << 20 {
        for file in gutenberg_files() {
            text.extend(std::fs::read(file).unwrap());
        }
    }
    let input = dir.path().join("big.txt");
    std::fs::write(&input, &text).unwrap();
    let (spill, out) = (dir.path().join("spill"), dir.path().join("out.tsv"));
    std::fs::create_dir(&spill).unwrap();
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let mut child = Command::new(spillway_tests::spillway_bin())
            .args(["wordcount", "-q", "-t", "1", "--memory", "1M", "--max-open-runs", "2", "--spill-dir"])
            .arg(&spill)
            .arg("--out")
            .arg(&out)
            .arg(&input)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the job has written spill runs.
        let started = std::time::Instant::now();
        let spilled = || {
            std::fs::read_dir(&spill)
                .unwrap()
                .filter_map(|e| std::fs::read_dir(e.unwrap().path()).ok())
                .any(|mut runs| runs.next().is_some())
        };
        while !spilled() {
            assert!(child.try_wait().unwrap().is_none(), "the job ended before it could be interrupted");
            assert!(started.elapsed().as_secs() < 120, "no spill run appeared");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let killed =
            Command::new("kill").args([format!("-{signal}"), child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        let result = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains(&format!("interrupted by SIG{signal}")), "{stderr}");
        assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0, "spill directory left behind");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        assert!(!out.exists() && names.iter().all(|n| !n.contains("out.tsv")), "output left: {names:?}");
    }
}
