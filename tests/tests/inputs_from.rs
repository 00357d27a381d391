//! Inputs that arrive while the job runs (`wordcount`, `index` and `grep --inputs-from LIST`):
//! a writer appends finished files to the list with pauses (each file written before its line),
//! and the output equals the job over the same files given up front and the `BTreeMap`
//! reference (`index` and `grep` name the files as the list lines do). Standard
//! input ends at its end of file, a regular list at `#end` or `spillway ctl --end-of-input`;
//! under mpirun (feature `mpi`) rank 0 reads the list and serves the splits to the others.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use spillway_tests::{
    messy_text, reference_grep, reference_index, reference_wordcount, spillway, spillway_bin,
};

/// Small splits and two threads.
const SETTINGS: [&str; 5] = ["-q", "-t", "2", "--split-size", "16K"];

/// Input files in `dir` named `in{i}.txt` (written by the caller at the right time).
fn contents() -> Vec<Vec<u8>> {
    (0..4u64).map(|i| messy_text(700 + i, 60_000 + 10_000 * i as usize)).collect()
}

fn wait_child(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the job did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Waits (against hangs only) until the status file says `ready`.
fn wait_for(path: &Path, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = read_json(path)
            && ready(&status)
        {
            return status;
        }
        assert!(Instant::now() < deadline, "status never got there: {:?}", read_json(path));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn append(list: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(list).unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// The same files given up front (and the reference agrees).
fn up_front(dir: &Path, files: &[PathBuf]) -> Vec<u8> {
    let out = dir.join("up-front.tsv");
    let mut args = vec!["wordcount".to_owned(), "-o".into(), out.display().to_string()];
    args.extend(SETTINGS.iter().map(|s| (*s).to_owned()));
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let done = spillway(&args);
    assert!(done.status.success(), "{}", text(&done));
    let bytes = std::fs::read(out).unwrap();
    assert_eq!(bytes, reference_wordcount(files, false));
    bytes
}

/// A regular list file appended by a writer with pauses (relative paths, from the job's
/// current directory): the status shows the splits known so far, the job waits for more
/// (no split is mapped twice or lost), and `#end` ends it.
#[test]
fn a_list_appended_with_pauses_gives_the_output_of_the_files_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let (list, status, out) =
        (dir.path().join("list"), dir.path().join("status.json"), dir.path().join("out.tsv"));
    std::fs::write(&list, "# inputs\n\n").unwrap();
    let child = Command::new(spillway_bin())
        .current_dir(dir.path())
        .args(["wordcount", "--inputs-from", "list", "--status", "status.json", "-o", "out.tsv"])
        .args(SETTINGS)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut files = Vec::new();
    for (i, content) in contents().iter().enumerate() {
        let name = format!("in{i}.txt");
        std::fs::write(dir.path().join(&name), content).unwrap(); // finished before its line
        files.push(dir.path().join(&name));
        append(&list, &name);
        // The job has taken the file in: its splits are known (and nothing more).
        let contents = contents();
        let bytes = contents[..=i].iter().map(|c| c.len() as u64).sum::<u64>();
        let seen = wait_for(&status, |s| s["bytes_total"].as_u64() == Some(bytes));
        assert_eq!(seen["state"], "running");
        assert!(seen["splits_total"].as_u64().unwrap() > i as u64, "{seen}");
        std::thread::sleep(Duration::from_millis(150));
    }
    let running = read_json(&status).unwrap();
    assert_eq!(running["state"], "running", "the job waits for the end of its inputs");
    append(&list, "#end");
    let done = wait_child(child);
    assert!(done.status.success(), "{}", text(&done));
    assert_eq!(std::fs::read(out).unwrap(), up_front(dir.path(), &files));
    let last = read_json(&status).unwrap();
    assert_eq!(last["state"], "succeeded");
    assert_eq!(last["splits_done"], last["splits_total"]);
}

/// `--inputs-from -`: paths written to standard input with pauses; its end of file ends the
/// inputs.
#[test]
fn standard_input_ends_at_its_end_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.tsv");
    let mut child = Command::new(spillway_bin())
        .args(["wordcount", "--inputs-from", "-", "-o", out.to_str().unwrap()])
        .args(SETTINGS)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut files = Vec::new();
    for (i, content) in contents().iter().enumerate() {
        let path = dir.path().join(format!("in{i}.txt"));
        std::fs::write(&path, content).unwrap();
        writeln!(stdin, "{}", path.display()).unwrap();
        stdin.flush().unwrap();
        files.push(path);
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(stdin);
    let done = wait_child(child);
    assert!(done.status.success(), "{}", text(&done));
    assert_eq!(std::fs::read(out).unwrap(), up_front(dir.path(), &files));
}

/// `spillway ctl STATUS --end-of-input` ends a regular list that has no `#end`: the files
/// listed before it are all mapped.
#[test]
fn ctl_end_of_input_ends_the_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (list, status, out) =
        (dir.path().join("list"), dir.path().join("status.json"), dir.path().join("out.tsv"));
    let mut files = Vec::new();
    for (i, content) in contents().iter().enumerate().take(2) {
        let path = dir.path().join(format!("in{i}.txt"));
        std::fs::write(&path, content).unwrap();
        files.push(path);
    }
    append(&list, &files[0].display().to_string());
    let child = Command::new(spillway_bin())
        .args(["wordcount", "--inputs-from", list.to_str().unwrap(), "--status", status.to_str().unwrap()])
        .args(["-o", out.to_str().unwrap()])
        .args(SETTINGS)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    append(&list, &files[1].display().to_string());
    let splits = |k: usize| files[..k].iter().map(|f| std::fs::metadata(f).unwrap().len()).sum::<u64>();
    // Both files are known (their bytes) and mapped before the end is said.
    wait_for(&status, |s| {
        s["bytes_total"].as_u64() == Some(splits(2)) && s["splits_done"] == s["splits_total"]
    });
    let ended = spillway(&["ctl", status.to_str().unwrap(), "--end-of-input"]);
    assert!(ended.status.success(), "{}", text(&ended));
    let done = wait_child(child);
    assert!(done.status.success(), "{}", text(&done));
    assert_eq!(std::fs::read(out).unwrap(), up_front(dir.path(), &files));
}

/// A listed file that does not exist fails the job (exit 3) naming it and its line; the
/// combination with --resume is refused as a usage error (also for `index` and `grep`).
#[test]
fn a_missing_listed_file_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let (list, out) = (dir.path().join("list"), dir.path().join("out.tsv"));
    let good = dir.path().join("good.txt");
    std::fs::write(&good, "some words\n").unwrap();
    std::fs::write(&list, format!("{}\n\n{}/missing.txt\n#end\n", good.display(), dir.path().display()))
        .unwrap();
    let failed =
        spillway(&["wordcount", "-q", "--inputs-from", list.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed));
    let message = text(&failed);
    assert!(
        message.contains("missing.txt")
            && message.contains(&format!("line 3 of --inputs-from {}", list.display())),
        "{message}"
    );
    assert!(!out.exists());
    let resumed = spillway(&["wordcount", "--resume", "--inputs-from", list.to_str().unwrap(), "-o", "x"]);
    assert_eq!(resumed.status.code(), Some(2), "{}", text(&resumed));
    assert!(text(&resumed).contains("--resume"), "{}", text(&resumed));
    for command in [&["index"][..], &["grep", "a"]] {
        let mut args = command.to_vec();
        args.extend(["--resume", "--inputs-from", list.to_str().unwrap(), "-o", "x"]);
        let refused = spillway(&args);
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
        assert!(text(&refused).contains("--resume"), "{}", text(&refused));
    }
    let failed = spillway(&["grep", "-q", "a", "--inputs-from", list.to_str().unwrap(), "-o", "x"]);
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed));
    assert!(text(&failed).contains("line 3 of --inputs-from"), "{}", text(&failed));
}

/// Writes the inputs of `contents()` into `dir` as the list lines `lines` name them (`in0.txt`,
/// and `sub`: a directory of two files), appending each line to LIST with a pause while
/// `command --inputs-from list` runs in `dir`; returns its output, and the files with their
/// names as given (a directory joined with the path inside it).
fn streamed(dir: &Path, command: &[&str]) -> (Vec<u8>, Vec<(PathBuf, String)>) {
    let list = dir.join("list");
    std::fs::write(&list, "").unwrap();
    let child = Command::new(spillway_bin())
        .current_dir(dir)
        .args(command)
        .args(["--inputs-from", "list", "-o", "streamed.out"])
        .args(SETTINGS)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let contents = contents();
    let mut files = Vec::new();
    for (i, content) in contents.iter().enumerate() {
        let line = if i == 2 {
            std::fs::create_dir(dir.join("sub")).unwrap();
            for (name, half) in
                [("x.txt", &content[..content.len() / 2]), ("y.txt", &content[content.len() / 2..])]
            {
                std::fs::write(dir.join("sub").join(name), half).unwrap();
                files.push((dir.join("sub").join(name), format!("sub/{name}")));
            }
            "sub".to_owned()
        } else {
            let name = format!("in{i}.txt");
            std::fs::write(dir.join(&name), content).unwrap();
            files.push((dir.join(&name), name.clone()));
            name
        };
        append(&list, &line);
        std::thread::sleep(Duration::from_millis(200));
    }
    append(&list, "#end");
    let done = wait_child(child);
    assert!(done.status.success(), "{}", text(&done));
    (std::fs::read(dir.join("streamed.out")).unwrap(), files)
}

/// `command` over `files` named as given, up front (relative paths from `dir`).
fn up_front_named(dir: &Path, command: &[&str], files: &[(PathBuf, String)]) -> Vec<u8> {
    let listed: Vec<&str> = files.iter().map(|(_, name)| name.as_str()).collect();
    let done = Command::new(spillway_bin())
        .current_dir(dir)
        .args(command)
        .args(["-o", "up-front.out"])
        .args(SETTINGS)
        .args(&listed)
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", text(&done));
    std::fs::read(dir.join("up-front.out")).unwrap()
}

/// `index --inputs-from`: the documents are named as the list lines name them (a listed
/// directory's files joined to it), as when given up front.
#[test]
fn index_names_streamed_documents_as_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (out, files) = streamed(dir.path(), &["index"]);
    let (paths, names): (Vec<PathBuf>, Vec<String>) = files.iter().cloned().unzip();
    assert_eq!(out, reference_index(&paths, &names, false));
    assert!(out.windows(9).any(|w| w == b"sub/x.txt"));
    assert_eq!(out, up_front_named(dir.path(), &["index"], &files));
}

/// `grep --inputs-from`: matches in list order, named as listed, numbered in their files.
#[test]
fn grep_names_streamed_files_as_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (out, files) = streamed(dir.path(), &["grep", "^[a-z]+ [a-z]"]);
    let (paths, names): (Vec<PathBuf>, Vec<String>) = files.iter().cloned().unzip();
    assert_eq!(out, reference_grep(&paths, &names, "^[a-z]+ [a-z]"));
    assert!(out.len() > 1000 && out.windows(9).any(|w| w == b"sub/y.txt"), "{}", out.len());
    assert_eq!(out, up_front_named(dir.path(), &["grep", "^[a-z]+ [a-z]"], &files));
}

/// Under mpirun: rank 0 reads the list while a writer appends to it with pauses, and serves
/// the splits (with their files' paths) to the other ranks, which wait for them; the output
/// is the single-process one over the same files up front.
#[cfg(feature = "mpi")]
#[test]
fn ranks_map_streamed_inputs_that_rank_0_serves() {
    use spillway_tests::ranks::{check_mpi_build, mpirun};
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let (list, out, metrics) =
        (dir.path().join("list"), dir.path().join("out"), dir.path().join("metrics.json"));
    std::fs::write(&list, "").unwrap();
    let child = mpirun()
        .args(["-n", "3"])
        .arg(spillway_bin())
        .args(["wordcount", "--inputs-from", list.to_str().unwrap(), "-r", "5"])
        .args(["--out-dir", out.to_str().unwrap(), "--metrics", metrics.to_str().unwrap()])
        .args(SETTINGS)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut files = Vec::new();
    for (i, content) in contents().iter().enumerate() {
        let path = dir.path().join(format!("in{i}.txt"));
        std::fs::write(&path, content).unwrap();
        append(&list, &path.display().to_string());
        files.push(path);
        std::thread::sleep(Duration::from_millis(300));
    }
    append(&list, "#end");
    let done = wait_child(child);
    assert!(done.status.success(), "{}", text(&done));
    let mut parts = Vec::new();
    for p in 0..5 {
        parts.extend(std::fs::read(out.join(format!("part-{p:05}"))).unwrap());
    }
    let mut lines: Vec<&[u8]> = parts.split_inclusive(|&b| b == b'\n').collect();
    lines.sort_unstable();
    assert_eq!(lines.concat(), up_front(dir.path(), &files));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(metrics).unwrap()).unwrap();
    assert_eq!(m["input_files"], 4, "{m}");
    let per_rank = m["per_rank"].as_array().unwrap();
    assert_eq!(
        per_rank.iter().map(|r| r["splits"].as_u64().unwrap()).sum::<u64>(),
        m["splits"].as_u64().unwrap()
    );
}

/// Under mpirun, `index`: a rank reduces words of documents whose splits other ranks mapped,
/// so every rank learns rank 0's list of names after the map phase; the output is the
/// single-process one over the same files up front, documents named as listed.
#[cfg(feature = "mpi")]
#[test]
fn ranks_index_streamed_documents_named_as_listed() {
    use spillway_tests::ranks::{check_mpi_build, mpirun};
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list");
    std::fs::write(&list, "").unwrap();
    let child = mpirun()
        .current_dir(dir.path())
        .args(["-n", "3"])
        .arg(spillway_bin())
        .args(["index", "--inputs-from", "list", "-r", "5", "--out-dir", "out"])
        .args(SETTINGS)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut files = Vec::new();
    for (i, content) in contents().iter().enumerate() {
        let name = format!("in{i}.txt");
        std::fs::write(dir.path().join(&name), content).unwrap();
        append(&list, &name);
        files.push((dir.path().join(&name), name));
        std::thread::sleep(Duration::from_millis(300));
    }
    append(&list, "#end");
    let done = wait_child(child);
    assert!(done.status.success(), "{}", text(&done));
    let mut parts = Vec::new();
    for p in 0..5 {
        parts.extend(std::fs::read(dir.path().join(format!("out/part-{p:05}"))).unwrap());
    }
    let mut lines: Vec<&[u8]> = parts.split_inclusive(|&b| b == b'\n').collect();
    lines.sort_unstable();
    assert_eq!(lines.concat(), up_front_named(dir.path(), &["index"], &files));
}
