//! What the fuzz targets share: the properties they check ([`checks`], one function a target)
//! and the pods they generate in the Pod schema's shape ([`shape`]).

pub mod checks;
pub mod shape;

/// Panics with what `check` found broken: the finding libFuzzer reports.
pub fn hold(check: Result<(), String>) {
    if let Err(broken) = check {
        panic!("{broken}");
    }
}

/// Input bytes as text, or `None` when they are not UTF-8 (files are read as UTF-8).
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
