//! The fuzz targets' checks (`fuzz/src/checks.rs`, included here) on the committed seeds and
//! on every input the fuzzer found breaking a property, so that `cargo test` keeps them fixed
//! without a fuzzer.

#[path = "../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;

use std::path::PathBuf;

use podtailor::webhook::Hook;

/// The committed seeds of `target`, as (file name, bytes).
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no seeds", dir.display());
    files.into_iter().map(|p| (p.display().to_string(), std::fs::read(&p).unwrap_or_else(|e| panic!("{e}")))).collect()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_seeds_hold_every_property() {
    for (name, body) in seeds("mutate_body") {
        assert_eq!(checks::answer(&checks::EXAMPLES, &body, Hook::Mutate), Ok(()), "{name}");
    }
    for (name, body) in seeds("validate_body") {
        assert_eq!(checks::answer(&checks::EXAMPLES, &body, Hook::Validate), Ok(()), "{name}");
    }
    for (target, check) in [
        ("template_file", checks::template_file as fn(&str) -> Result<(), String>),
        ("override_file", checks::override_file),
        ("tasks_file", checks::tasks_file),
    ] {
        for (name, bytes) in seeds(target) {
            assert_eq!(check(text(&bytes)), Ok(()), "{name}");
        }
    }
}
