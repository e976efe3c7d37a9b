//! The merge engine on generated templates, overrides and pods in the Pod schema's shape
//! (`podtailor_fuzz::shape`), through the webhook's answer: a patch gives render's desired
//! pod, and a second pass over the patched pod gives no patch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podtailor_fuzz::checks::merge;
use podtailor_fuzz::shape::Case;

fuzz_target!(|case: Case| {
    let (config, namespace, pod) = case.build();
    if let Err(broken) = merge(&config, &namespace, &pod) {
        panic!("{broken}\nnamespace: {namespace}\npod: {pod}\ntemplate: {}\ncase: {case:?}", config.template.pod());
    }
});
