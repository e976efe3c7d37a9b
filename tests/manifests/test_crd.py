"""The PodOverride CRD in manifests/base/: a valid Kubernetes object, and a schema that accepts the
example PodOverrides (and those of the oracle corpus) and rejects what the API server should
reject before podtailor's validating webhook is even called."""
import copy
import pathlib
import subprocess

import jsonschema
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD = ROOT / "manifests" / "base" / "crd.yaml"
VALIDATE = ROOT / "target" / "venv" / "bin" / "kubernetes-validate"


def crd():
    return yaml.safe_load(CRD.read_text())


def schema():
    (version,) = crd()["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def example_overrides():
    found = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples" / "overrides").glob("*.yaml"))]
    for case in sorted((ROOT / "tests" / "oracle" / "cases").glob("*.yaml")):
        found.extend(yaml.safe_load(case.read_text()).get("overrides") or [])
    return found


def test_the_crd_is_a_valid_kubernetes_object():
    result = subprocess.run([str(VALIDATE), "--strict", "-k", "1.33.0", str(CRD)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_crd_names_the_resource():
    spec = crd()["spec"]
    assert (spec["group"], spec["scope"]) == ("podtailor.dev", "Namespaced")
    assert spec["names"]["plural"] == "podoverrides"
    assert spec["names"]["kind"] == "PodOverride"
    # a short name that no built-in resource uses
    assert spec["names"]["shortNames"] == ["podov"]


@pytest.mark.parametrize("override", example_overrides(), ids=lambda o: o["metadata"]["name"])
def test_every_example_podoverride_validates_against_the_crd_schema(override):
    jsonschema.validate(override, schema())


@pytest.mark.parametrize(
    "path, value",
    [
        (("spec", "secrets", 0, "deployType"), "file"),
        (("spec", "secrets", 0, "secret"), 7),
        (("spec", "resources", "limits"), "lots"),
        (("spec", "pod"), "not an object"),
        (("spec",), "not an object"),
    ],
    ids=["unknown deployType", "secret not a string", "limits not a map", "pod not an object", "spec not an object"],
)
def test_the_crd_schema_rejects_what_cannot_be_a_podoverride(path, value):
    bad = copy.deepcopy(
        {
            "apiVersion": "podtailor.dev/v1alpha1",
            "kind": "PodOverride",
            "metadata": {"name": "o"},
            "spec": {"resources": {"limits": {"cpu": "1"}}, "secrets": [{"deployType": "env", "secret": "s"}]},
        }
    )
    target = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema())
