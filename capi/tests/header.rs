//! The checked-in header `include/spillway.h` is what cbindgen makes of the crate today.
//! `SPILLWAY_BLESS=1 cargo test -p spillway-capi --test header` rewrites it.

use std::path::Path;

#[test]
fn header_is_up_to_date() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("reading cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");
    let path = crate_dir.join("include/spillway.h");
    if std::env::var_os("SPILLWAY_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("writing include/spillway.h");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "capi/include/spillway.h is out of date with capi/src/lib.rs: run \
         `SPILLWAY_BLESS=1 cargo test -p spillway-capi --test header` and commit the header"
    );
}
