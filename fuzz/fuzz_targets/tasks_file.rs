//! The launcher's tasks file (`podtailor launch -f`): `checks::tasks_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podtailor_fuzz::{checks, hold, text};

fuzz_target!(|data: &[u8]| {
    if let Some(text) = text(data) {
        hold(checks::tasks_file(text));
    }
});
