//! A PodOverride file (YAML or JSON, one or more documents) as the store loads it:
//! `checks::override_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podtailor_fuzz::{checks, hold, text};

fuzz_target!(|data: &[u8]| {
    if let Some(text) = text(data) {
        hold(checks::override_file(text));
    }
});
