//! A template file (YAML or JSON) as the store loads it: `checks::template_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podtailor_fuzz::{checks, hold, text};

fuzz_target!(|data: &[u8]| {
    if let Some(text) = text(data) {
        hold(checks::template_file(text));
    }
});
