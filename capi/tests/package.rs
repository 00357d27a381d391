//! Packaging: `examples/Makefile` builds the examples through pkg-config (`spillway.pc`,
//! from the template `spillway.pc.in`) and installs the library, header and `spillway.pc`
//! under a prefix; the programs it builds give `spillway wordcount`'s bytes.

mod common;

use std::process::Command;

use common::{crate_dir, engine_wordcount, gutenberg, lib_dir, run};

fn make(args: &[String]) -> String {
    let out = Command::new("make").arg("-C").arg(crate_dir().join("examples")).args(args).output().expect(
        "make is missing: install it with scripts/install-deps.sh (as root), or `apt-get install make`",
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "make {args:?} failed:\n{text}");
    text
}

#[test]
fn the_makefile_builds_through_pkg_config_and_installs() {
    let dir = tempfile::tempdir().unwrap();
    let build = dir.path().join("build");
    let libdir = lib_dir();
    let vars = [
        format!("BUILD={}", build.display()),
        format!("LIBDIR={}", libdir.display()),
        "CFLAGS=-O2 -Wall -Werror".into(),
    ];
    make(&vars);
    let pc = std::fs::read_to_string(build.join("spillway.pc")).unwrap();
    assert!(pc.contains("Version: 0.") && pc.contains(&libdir.display().to_string()), "{pc}");
    let out = dir.path().join("counts.tsv");
    let (code, stdout, stderr) = run(&build.join("wordcount"), [out.as_os_str(), gutenberg().as_os_str()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(std::fs::read(&out).unwrap() == engine_wordcount(dir.path()), "the Makefile's wordcount differs");

    // `make install` lays out lib/, include/ and lib/pkgconfig/spillway.pc under the prefix.
    let prefix = dir.path().join("prefix");
    let mut install = vars.to_vec();
    install.extend([format!("PREFIX={}", prefix.display()), "install".into()]);
    make(&install);
    for file in [
        "include/spillway.h",
        "lib/libspillway_capi.so",
        "lib/libspillway_capi.a",
        "lib/pkgconfig/spillway.pc",
    ] {
        assert!(prefix.join(file).exists(), "make install left no {file}");
    }
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "spillway"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("pkg-config is missing: install it with scripts/install-deps.sh");
    let flags = String::from_utf8_lossy(&flags.stdout).into_owned();
    assert!(flags.contains(&format!("-I{}/include", prefix.display())), "{flags}");
    assert!(flags.contains("-lspillway_capi"), "{flags}");
}
