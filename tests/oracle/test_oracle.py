"""Independent oracles for `podtailor render`, one test id per case and per oracle.

- test_case_is_sound:   the case itself is well formed (valid template and pod, no API defaults).
- test_a_kubectl_chain: `render -o json` == the kubectl strategic-merge chain (keyed lists as sets).
- test_b_patch_applies: `render -o patch` applied by Python's jsonpatch to the input pod gives
                        exactly `render -o json`.
- test_c_valid_pod:     the desired pod passes kubernetes-validate --strict and every container
                        has an image.
- test_d_idempotent:    rendering the desired pod again gives the empty patch `[]`.
"""

from __future__ import annotations

import json

import jsonpatch
import kubernetes_validate
import pytest

import podtailor_oracle as po
CASES = po.load_cases()

MIN_CASES = 34

# Values that the API server fills in before a mutating webhook runs. The corpus pods are plain
# user pods: none of these may appear in them, or oracle (a) would be ambiguous.
API_DEFAULTED_SPEC = {
    "restartPolicy": "Always",
    "dnsPolicy": "ClusterFirst",
    "schedulerName": "default-scheduler",
    "terminationGracePeriodSeconds": 30,
    "securityContext": {},
    "serviceAccountName": "default",
    "enableServiceLinks": True,
    "preemptionPolicy": "PreemptLowerPriority",
}
API_DEFAULTED_SPEC_KEYS = ("serviceAccount", "priority")
API_DEFAULTED_CONTAINER_KEYS = ("terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy")
DEFAULT_TOLERATION_KEYS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def validate_pod(pod: dict) -> None:
    try:
        kubernetes_validate.validate(pod, po.K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        message = str(err).split("\n\nFailed validating")[0]
        path = "/".join(str(p) for p in getattr(err, "path", []) or [])
        raise AssertionError(f"kubernetes-validate --strict -k {po.K8S_VERSION}: {message} at /{path}")


def all_containers(pod: dict) -> list[dict]:
    spec = pod.get("spec") or {}
    return [c for k in ("initContainers", "containers") for c in spec.get(k) or []]


def test_corpus_size():
    assert len(CASES) >= MIN_CASES, f"only {len(CASES)} cases in tests/oracle/cases"


def test_case_is_sound(run_case):
    case = run_case.case
    assert set(case) <= {"description", "template", "pod", "overrides", "namespace", "input"}, set(case)
    assert case.get("input", "yaml") in ("yaml", "json", "stdin", "review")
    assert isinstance(case.get("description"), str) and case["description"].strip()
    for what in ("template", "pod"):
        obj = case[what]
        assert obj.get("apiVersion") == "v1" and obj.get("kind") == "Pod", what
        validate_pod(obj)
    pod = case["pod"]
    names = po.override_names(pod)  # raises if the annotation is missing
    meta = pod.get("metadata") or {}
    assert meta.get("name") or meta.get("generateName"), "the pod needs a name or a generateName"
    if case.get("namespace"):
        assert meta.get("namespace") == case["namespace"], "pod namespace must equal the case's"
    else:
        assert "namespace" not in meta, "a pod with a namespace needs the case's namespace too"
    defined = set()
    for ov in case.get("overrides") or []:
        assert ov.get("apiVersion") == "podtailor.dev/v1alpha1" and ov.get("kind") == "PodOverride"
        assert set(ov) <= {"apiVersion", "kind", "metadata", "spec"}, set(ov)
        assert set(ov.get("spec") or {}) <= {"container", "resources", "secrets", "pod"}
        defined.add(ov["metadata"]["name"])
    assert set(names) <= defined, f"annotation names {names}, overrides define {sorted(defined)}"

    spec = pod.get("spec") or {}
    for key, value in API_DEFAULTED_SPEC.items():
        assert spec.get(key, object()) != value, f"pod carries the API default {key}={value!r}"
    for key in API_DEFAULTED_SPEC_KEYS:
        assert key not in spec, f"pod carries the API-filled {key}"
    for tol in spec.get("tolerations") or []:
        assert tol.get("key") not in DEFAULT_TOLERATION_KEYS, "pod carries a default toleration"
    for vol in spec.get("volumes") or []:
        assert not vol["name"].startswith("kube-api-access-"), "pod carries the token volume"
    for c in all_containers(pod):
        for key in API_DEFAULTED_CONTAINER_KEYS:
            assert key not in c, f"pod container {c['name']} carries the API-filled {key}"
        assert c.get("resources", None) != {}, "pod container carries resources: {}"
    assert "kubernetes.io/limit-ranger" not in (meta.get("annotations") or {})


def test_a_kubectl_chain(run_case, kubectl, podtailor):
    expected, chain = run_case.expected(kubectl)
    got = run_case.desired()
    want_c = po.canonicalise(po.as_stored(po.without_applied(expected)))
    got_c = po.canonicalise(po.as_stored(po.without_applied(got)))
    if po.canonical_json(want_c) != po.canonical_json(got_c):
        pytest.fail(
            f"[{run_case.id}] render -o json differs from the kubectl strategic-merge chain "
            f"({chain.calls} kubectl steps; keyed lists sorted, {po.APPLIED_ANNOTATION} dropped):\n"
            + po.summary_text(want_c, got_c)
            + "\n"
            + po.diff_text(want_c, got_c, "expected (kubectl chain)", "got (podtailor render)"),
            pytrace=False,
        )


def test_b_patch_applies(run_case, podtailor):
    patch = run_case.patch()
    desired = run_case.desired()
    assert isinstance(patch, list), f"-o patch must print a JSON array, got {type(patch).__name__}"
    for i, op in enumerate(patch):
        assert isinstance(op, dict), f"op {i} is not an object: {op!r}"
        assert op.get("op") in ("add", "remove", "replace"), f"op {i}: unexpected op {op!r}"
        assert isinstance(op.get("path"), str) and op["path"].startswith("/"), f"op {i}: bad path {op!r}"
    try:
        applied = jsonpatch.apply_patch(run_case.pod, patch, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as err:
        pytest.fail(f"[{run_case.id}] jsonpatch cannot apply the patch: {err}\n{json.dumps(patch, indent=1)}",
                    pytrace=False)
    if po.canonical_json(applied) != po.canonical_json(desired):
        pytest.fail(
            f"[{run_case.id}] input pod + render -o patch != render -o json (exact, list order kept):\n"
            + po.diff_text(desired, applied, "render -o json", "input + patch"),
            pytrace=False,
        )


def test_c_valid_pod(run_case, podtailor):
    desired = run_case.desired()
    validate_pod(desired)
    for c in all_containers(desired):
        assert isinstance(c.get("image"), str) and c["image"], f"container {c.get('name')} has no image"


def test_d_idempotent(run_case, podtailor):
    desired = run_case.desired()
    again = run_case.workdir / "desired.json"
    again.write_text(json.dumps(desired, indent=2))
    out = run_case.render("patch", input_path=again)
    patch = json.loads(out)
    assert patch == [], f"rendering the desired pod again is not a no-op:\n{json.dumps(patch, indent=1)}"
