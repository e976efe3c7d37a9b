//! The request body of `POST /validate` (PodOverride objects), as the handler reads it: the
//! answer is an AdmissionReview with the request's uid, allowed or refused with a status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podtailor::webhook::Hook;
use podtailor_fuzz::checks::{EXAMPLES, answer};
use podtailor_fuzz::hold;

fuzz_target!(|body: &[u8]| hold(answer(&EXAMPLES, body, Hook::Validate)));
