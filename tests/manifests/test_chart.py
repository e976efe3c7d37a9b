"""The Helm chart (charts/podtailor): `helm lint` passes; with default values it renders the
objects of the kustomize base exactly, so the two installs cannot drift (and every check of
test_base.py holds for it); its objects are valid like the kustomize output; each value takes
effect; a bad value fails with a message that names it (values.schema.json)."""

from __future__ import annotations

import base64
import copy
import json
import re

import jsonschema
import pytest
import yaml

from install import CHART, NAMESPACE, ROOT, Rendered, helm_run, helm_template, kubernetes_validate, rbac_violations
from test_overlays import CERT_MANAGER_SCHEMA, WEBHOOK_KINDS, built_in

# The chart adds no label or annotation of Helm's own (`helm install` adds
# app.kubernetes.io/managed-by and the meta.helm.sh/release-* annotations itself), so nothing
# is normalised: the comparison is of the objects as rendered.


@pytest.fixture(scope="module")
def chart() -> Rendered:
    return Rendered(helm_template())


def key(o: dict) -> tuple:
    return (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))


def differences(a, b, path="") -> list[str]:
    """Where two objects differ, field by field."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: {'only in the chart' if k in a else 'only in the base'}")
            else:
                out.extend(differences(a[k], b[k], f"{path}.{k}"))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: chart {a!r}, base {b!r}"]


# --- helm lint, and the objects' validity --------------------------------------------------


@pytest.mark.parametrize("values", [[], ["--set", "certificates.mode=certManager"]], ids=["default", "cert-manager"])
def test_helm_lint_passes(values):
    result = helm_run("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    "values",
    [[], ["--set", "certificates.mode=certManager"], ["--set", "certificates.caBundle=" + base64.b64encode(b"x").decode()]],
    ids=["default", "cert-manager", "ca-bundle"],
)
def test_every_built_in_object_passes_kubernetes_validate_strict(values):
    objects = built_in(helm_template(*values))
    result = kubernetes_validate(objects)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Couldn't find schema" not in result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(objects)


def test_the_cert_manager_objects_are_well_formed():
    objects = [o for o in helm_template("--set", "certificates.mode=certManager") if o["apiVersion"].startswith("cert-manager.io/")]
    assert sorted(o["kind"] for o in objects) == ["Certificate", "Certificate", "Issuer", "Issuer"]
    for o in objects:
        jsonschema.validate(o, CERT_MANAGER_SCHEMA[o["kind"]])


def test_the_chart_grants_what_the_base_grants(chart):
    assert rbac_violations(chart.objects) == []


# --- the drift test: default values give the kustomize base --------------------------------


def test_the_default_rendering_holds_the_objects_of_the_base(chart, base):
    assert sorted(map(key, chart.objects)) == sorted(map(key, base.objects))


def test_the_default_rendering_equals_the_base_object_by_object_field_by_field(chart, base):
    ours = {key(o): o for o in chart.objects}
    problems = [f"{k[0]}/{k[1]}{d}" for k, o in ((key(o), o) for o in base.objects) for d in differences(ours.get(k, {}), o)]
    assert problems == []


def test_the_drift_test_catches_a_changed_field(chart, base):
    # the comparison above can fail: one field of the Deployment changed is a difference
    changed = copy.deepcopy(chart.deployment())
    changed["spec"]["template"]["spec"]["containers"][0]["args"].append("--reload-interval=5")
    assert differences(changed, base.deployment())


def test_the_chart_carries_the_committed_crd_and_the_example_template():
    # the copies the chart reads (.Files.Get): a stale one would fail the drift test too, but
    # this says which file to copy
    assert (CHART / "files" / "crd.yaml").read_text() == (ROOT / "manifests/base/crd.yaml").read_text(), "make crd"
    assert (CHART / "files" / "template.yaml").read_text() == (ROOT / "examples/template.yaml").read_text(), (
        "cp examples/template.yaml charts/podtailor/files/template.yaml"
    )


def test_the_app_version_is_the_crates():
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    cargo_version = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    assert chart_yaml["appVersion"] == cargo_version


def test_another_release_namespace_moves_every_namespaced_object_and_its_references():
    rendered = Rendered(helm_template(namespace="platform"))
    assert rendered.one("Namespace")["metadata"]["name"] == "platform"
    for o in rendered.objects:
        assert o["metadata"].get("namespace") in (None, "platform"), key(o)
    (subject,) = rendered.one("ClusterRoleBinding")["subjects"]
    assert subject["namespace"] == "platform"
    for kind in WEBHOOK_KINDS:
        (hook,) = rendered.one(kind, "podtailor")["webhooks"]
        assert hook["clientConfig"]["service"]["namespace"] == "platform"
    (hook,) = rendered.one("MutatingWebhookConfiguration")["webhooks"]
    # its own namespace stays out of the mutating webhook's reach
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", "platform"]


# --- values take effect ----------------------------------------------------------------------


def test_image_replicas_and_resources():
    resources = {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    rendered = Rendered(
        helm_template(
            "--set", "image.repository=registry.example.com/platform/podtailor", "--set", "image.tag=0.1.1",
            "--set", "image.pullPolicy=Always", "--set", "replicas=3",
            "--set-json", "resources=" + json.dumps(resources),
            # Helm merges maps into the defaults: null removes the default limit on cpu
            "--set", "resources.limits.cpu=null",
        )
    )
    container = rendered.container()
    assert container["image"] == "registry.example.com/platform/podtailor:0.1.1"
    assert container["imagePullPolicy"] == "Always"
    assert rendered.deployment()["spec"]["replicas"] == 3
    assert container["resources"] == resources


@pytest.mark.parametrize("policy", ["Fail", "Ignore"])
def test_the_failure_policy_reaches_both_webhooks(policy):
    rendered = Rendered(helm_template("--set", f"webhook.failurePolicy={policy}"))
    for kind in WEBHOOK_KINDS:
        (hook,) = rendered.one(kind, "podtailor")["webhooks"]
        assert hook["failurePolicy"] == policy


def test_the_namespace_selector():
    selector = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["airflow"]}]}
    rendered = Rendered(helm_template("--set-json", "webhook.namespaceSelector=" + json.dumps(selector)))
    (hook,) = rendered.one("MutatingWebhookConfiguration")["webhooks"]
    assert hook["namespaceSelector"] == selector
    # the validating webhook has none, as in the base
    (hook,) = rendered.one("ValidatingWebhookConfiguration")["webhooks"]
    assert "namespaceSelector" not in hook


def test_the_template_reaches_the_configmap_unchanged(tmp_path):
    # a template of one's own, with podtailor's {{namespace}}: not a Helm template, passed on as written
    template = (ROOT / "examples" / "template-every-release.yaml").read_text()
    assert "{{namespace}}" in template
    (tmp_path / "template.yaml").write_text(template)
    rendered = Rendered(helm_template("--set-file", f"template={tmp_path / 'template.yaml'}"))
    assert rendered.one("ConfigMap", "podtailor-template")["data"] == {"template.yaml": template}


def test_namespace_create_false_leaves_the_namespace_out():
    rendered = Rendered(helm_template("--set", "namespace.create=false"))
    assert rendered.all("Namespace") == []
    assert rendered.deployment()["metadata"]["namespace"] == NAMESPACE


def test_crd_keep_annotates_the_crd_only():
    kept, plain = Rendered(helm_template("--set", "crd.keep=true")), Rendered(helm_template())
    crd = kept.one("CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    del crd["metadata"]["annotations"]
    assert crd == plain.one("CustomResourceDefinition")


def test_the_secret_mode_sets_the_ca_bundle_and_the_secret_name():
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    rendered = Rendered(helm_template("--set", f"certificates.caBundle={ca}", "--set", "certificates.secretName=webhook-tls"))
    for kind in WEBHOOK_KINDS:
        (hook,) = rendered.one(kind, "podtailor")["webhooks"]
        assert hook["clientConfig"]["caBundle"] == ca
        assert "annotations" not in rendered.one(kind, "podtailor")["metadata"]
    (volume,) = [v for v in rendered.deployment()["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "webhook-tls"
    assert rendered.all("Secret") == [] and [o for o in rendered.objects if o["apiVersion"].startswith("cert-manager.io/")] == []


def test_the_cert_manager_mode_renders_the_overlays_objects_and_annotation(cert_manager):
    rendered = Rendered(helm_template("--set", "certificates.mode=certManager"))
    # exactly manifests/cert-manager: its Issuers and Certificates, the injector's annotation
    assert sorted(map(key, rendered.objects)) == sorted(map(key, cert_manager.objects))
    ours = {key(o): o for o in rendered.objects}
    problems = [f"{k[0]}/{k[1]}{d}" for k, o in ((key(o), o) for o in cert_manager.objects) for d in differences(ours[k], o)]
    assert problems == []
    for kind in WEBHOOK_KINDS:
        annotations = rendered.one(kind, "podtailor")["metadata"]["annotations"]
        assert annotations == {"cert-manager.io/inject-ca-from": f"{NAMESPACE}/podtailor-serving"}
        (hook,) = rendered.one(kind, "podtailor")["webhooks"]
        assert "caBundle" not in hook["clientConfig"]


def test_the_cert_manager_mode_with_an_issuer_of_ones_own():
    rendered = Rendered(
        helm_template(
            "--set", "certificates.mode=certManager",
            "--set-json", 'certificates.certManager.issuerRef={"name": "platform-ca", "kind": "ClusterIssuer"}',
            "--set", "certificates.certManager.duration=720h", "--set", "certificates.certManager.renewBefore=240h",
        )
    )
    assert rendered.all("Issuer") == []
    (serving,) = rendered.all("Certificate")
    assert serving["spec"]["issuerRef"] == {"name": "platform-ca", "kind": "ClusterIssuer"}
    assert (serving["spec"]["duration"], serving["spec"]["renewBefore"]) == ("720h", "240h")
    jsonschema.validate(serving, CERT_MANAGER_SCHEMA["Certificate"])


# --- bad values fail, naming the value --------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "replicas=two"], "at '/replicas': got string, want integer"),
        (["--set", "replicas=0"], "at '/replicas'"),
        (["--set", "webhook.failurePolicy=Never"], "at '/webhook/failurePolicy': value must be one of 'Fail', 'Ignore'"),
        (["--set", "certificates.mode=selfSigned"], "at '/certificates/mode'"),
        (["--set", "replica=3"], "additional properties 'replica' not allowed"),
        (["--set", "certificates.caBundle=not base64!"], "at '/certificates/caBundle'"),
        (["--set-json", 'webhook.namespaceSelector={"matchExpressions": [{"key": "a", "operator": "in"}]}'],
         "at '/webhook/namespaceSelector/matchExpressions/0/operator'"),
        (["--set", "certificates.certManager.duration=90d"], "at '/certificates/certManager/duration'"),
        (["--set", "resources.requests.cpu=lots"], "at '/resources/requests/cpu'"),
        (["--set", "certificates.mode=certManager", "--set", "certificates.caBundle=QUJD"],
         "certificates.caBundle is for certificates.mode=secret"),
        (["--set", "template=kind: Deployment"], "template: must be a Pod manifest"),
        (["--set-string", "template=a: ["], "template: not YAML"),
    ],
    ids=["replicas a string", "no replica", "unknown failure policy", "unknown mode", "misspelt value",
         "ca bundle not base64", "operator in lower case", "duration in days", "cpu not a quantity",
         "ca bundle with cert-manager", "template not a pod", "template not yaml"],
)
def test_a_bad_value_fails_naming_it(args, message):
    result = helm_run("template", "podtailor", str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_the_schema_allows_every_default_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)
