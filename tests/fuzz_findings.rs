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

/// Finding (mutate_body): a byte that is not UTF-8 in a field the webhook skips
/// (`requestKind` here) still gets an answer with the request's uid; in the pod itself, the
/// body is not an AdmissionReview (400). Both answers hold the properties.
#[test]
fn bytes_that_are_not_utf8_in_a_review() {
    let review = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/review.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let with_byte = |after: &str| {
        let text = String::from_utf8(review.clone()).unwrap_or_else(|e| panic!("{e}"));
        let at = text.find(after).unwrap_or_else(|| panic!("{after} not in the review")) + after.len();
        let mut body = review.clone();
        body.insert(at, 0x87);
        body
    };
    for body in [with_byte("\"requestKind\": {\n      \""), with_byte("\"generateName\": \"")] {
        assert_eq!(checks::answer(&checks::EXAMPLES, &body, Hook::Mutate), Ok(()));
    }
    let body = with_byte("\"requestKind\": {\n      \"");
    let mut facts = podtailor::webhook::admission::Facts::default();
    let (status, _, answer) = podtailor::webhook::answer_body(&checks::EXAMPLES, &body, Hook::Mutate, &mut facts);
    assert_eq!((status.as_u16(), answer.response.uid.as_str()), (200, "b7a3c1f0-5d2e-4c8a-9f61-2e4b7d9a1c33"));
}

/// A template finding now refused when it loads: its error starts with `error`, it holds
/// the properties (a template that does not load is no finding), and `fixed` (the same text
/// with the mistake mended, if given) loads and holds them too.
fn refused_template(text: &str, error: &str, fixed: Option<String>) {
    let err = podtailor::store::files::parse_template(text).err().unwrap_or_default();
    assert!(err.starts_with(error), "{err}\nwanted {error}");
    assert!(err.ends_with("such an element would be added again at every pass"), "{err}");
    assert_eq!(checks::template_file(text), Ok(()));
    if let Some(fixed) = fixed {
        assert!(podtailor::store::files::parse_template(&fixed).is_ok());
        assert_eq!(checks::template_file(&fixed), Ok(()));
    }
}

/// Finding (template_file): a template whose volumeMount has no `mountPath` (its merge key)
/// added that mount again at every pass: the second pass over the patched pod was a patch. A
/// keyed-list element without its key is now refused when the template loads (and in a
/// PodOverride's pod fragment), naming the element.
#[test]
fn a_template_mount_without_its_merge_key_is_refused() {
    let text = include_str!("../fuzz/findings/template_file-mount-without-mountpath.yaml");
    let error =
        "spec.containers[0].volumeMounts[0].mountPath: is required: the elements of this list merge by mountPath;";
    refused_template(text, error, Some(text.replace("mountPaht:", "mountPath:")));
}

/// Finding (template_file): `- name:ow-config` (no space) is a string, not an object: an
/// imagePullSecrets element the merge cannot match by name, added again at every pass.
#[test]
fn a_template_pull_secret_that_is_not_an_object_is_refused() {
    let text = include_str!("../fuzz/findings/template_file-pull-secret-not-an-object.yaml");
    let error = "spec.imagePullSecrets[0]: must be an object (the elements of this list merge by name);";
    refused_template(text, error, Some(text.replace("- name:ow-config", "- name: ow-config")));
}

/// Finding (template_file): a template with two containers named `base`. Two elements with one
/// merge key cannot both be matched (the second pass was a patch).
#[test]
fn a_template_with_two_containers_of_one_name_is_refused() {
    let text = include_str!("../fuzz/findings/template_file-two-containers-named-base.yaml");
    refused_template(text, "spec.containers[1].name: \"base\" is element 0's too", None);
}

/// Finding (mutate_body): a review whose pod has a container named `bsae` whose
/// `imagePullPolicy` key was garbled (so it had none) beside nothing defaulted of its own: the
/// first pass added the template's `base`, whose policy equals the API default; the second
/// pass then took the pod for a defaulted one and gave `bsae` a policy it never had. A
/// container now keeps lacking the defaulted fields it came without.
#[test]
fn a_container_that_came_without_its_pull_policy_does_not_gain_it_on_a_second_pass() {
    let body = include_bytes!("../fuzz/findings/mutate_body-a-container-defaulted-in-part.json");
    assert_eq!(checks::answer(&checks::EXAMPLES, body, Hook::Mutate), Ok(()));
}

/// Finding (merge): a number in the template that serde_json's fast float parser reads one
/// unit in the last place off (8.665336675761172e+127): the patch, written as text and read
/// back, gave 8.66533667576117e+127 where the desired pod had the template's value. Numbers
/// are now read exactly (serde_json's `float_roundtrip`).
#[test]
fn a_float_in_the_template_reaches_the_pod_unchanged() {
    use std::sync::Arc;
    let template = podtailor::merge::Template::new(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {}, "spec": {"restartPolicy": "~0", "automountServiceAccountToken": true,
        "dnsPolicy": 8.665336675761172e+127}}));
    let config = podtailor::store::Config::new(Arc::new(template), podtailor::store::Overrides::default());
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "other", "name": "task-1",
        "annotations": {"podtailor.dev/override": ""}}, "spec": {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler", "terminationGracePeriodSeconds": 30, "securityContext": {},
        "serviceAccountName": "default", "enableServiceLinks": true, "priority": 0,
        "preemptionPolicy": "PreemptLowerPriority"}});
    assert_eq!(checks::merge(&config, "other", &pod), Ok(()));
}
