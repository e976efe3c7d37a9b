//! The request body of `POST /mutate`, as the handler reads it, with the example
//! configuration: the answer is an AdmissionReview with the request's uid, and a patch gives
//! render's desired pod and a second pass nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podtailor::webhook::Hook;
use podtailor_fuzz::checks::{EXAMPLES, answer};
use podtailor_fuzz::hold;

fuzz_target!(|body: &[u8]| hold(answer(&EXAMPLES, body, Hook::Mutate)));
