"""The base and its two overlays (certs/: self-signed from `make certs`; manifests/cert-manager/)
render with `kubectl kustomize`, every object is valid, and each overlay gives the Deployment
its TLS Secret and the webhooks their CA bundle."""

from __future__ import annotations

import base64
import copy
import os
import subprocess

import jsonschema
import pytest
import yaml

from install import NAMESPACE, ROOT, Rendered, kubectl, kubernetes_validate, kustomize, rbac_violations

OVERLAYS = ["base", "certs", "cert-manager"]
WEBHOOK_KINDS = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]

# kubernetes-validate knows the built-in kinds only. PodOverride objects (podtailor.dev) are
# checked against the CRD's own schema in test_crd.py; cert-manager's kinds are defined by
# cert-manager's CRDs, which this repository does not carry, so they are checked below against
# the part of cert-manager's v1 API these manifests use (CERT_MANAGER_SCHEMA).
NOT_BUILT_IN = ("podtailor.dev/", "cert-manager.io/")


def built_in(objects):
    return [o for o in objects if not o["apiVersion"].startswith(NOT_BUILT_IN)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_built_in_object_passes_kubernetes_validate_strict(overlays, overlay):
    objects = built_in(overlays[overlay].objects)
    result = kubernetes_validate(objects)
    assert result.returncode == 0, result.stdout + result.stderr
    # every object was checked against a schema: none skipped as unknown
    assert "Couldn't find schema" not in result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(objects)


def test_kubernetes_validate_rejects_a_misspelt_field(base):
    # the check above can fail: one unknown field in the Deployment is an error
    objects = copy.deepcopy(built_in(base.objects))
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    assert kubernetes_validate(objects).returncode != 0


RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")


@pytest.mark.parametrize("overlay", ["certs", "cert-manager"])
def test_an_overlay_changes_no_grant(overlays, overlay):
    assert rbac_violations(overlays[overlay].objects) == []
    rbac = {name: [o for o in rendered.objects if o["kind"] in RBAC_KINDS] for name, rendered in overlays.items()}
    assert rbac[overlay] == rbac["base"]


@pytest.mark.parametrize("overlay", ["certs", "cert-manager"])
@pytest.mark.parametrize("kind", WEBHOOK_KINDS)
def test_an_overlay_changes_the_webhooks_by_their_ca_only(overlays, overlay, kind):
    def without_ca(rendered):
        hooks = copy.deepcopy(rendered.one(kind, "podtailor")["webhooks"])
        for hook in hooks:
            hook["clientConfig"].pop("caBundle", None)
        return hooks

    assert without_ca(overlays[overlay]) == without_ca(overlays["base"])


@pytest.mark.parametrize("overlay", ["certs", "cert-manager"])
def test_an_overlay_keeps_the_rest_of_the_base(overlays, overlay):
    base = {(o["kind"], o["metadata"]["name"]): o for o in overlays["base"].objects}
    other = {(o["kind"], o["metadata"]["name"]): o for o in overlays[overlay].objects}
    for key, obj in base.items():
        if key[0] in WEBHOOK_KINDS:
            continue
        assert other.get(key) == obj, f"{key[0]}/{key[1]} differs from the base"


# --- certs/: the self-signed overlay -------------------------------------------------------


def decoded(data: str) -> bytes:
    # kustomize folds long base64 values over several lines; the API server ignores the breaks
    return base64.b64decode("".join(data.split()), validate=True)


def test_the_certs_command_leaves_the_developers_certs_alone(certs):
    assert certs["after"] == certs["before"]


def test_the_certs_overlay_makes_the_tls_secret_the_deployment_mounts(certs):
    rendered, directory = certs["rendered"], certs["dir"]
    secret = rendered.one("Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == ("podtailor-tls", NAMESPACE)
    assert {key: decoded(value) for key, value in secret["data"].items()} == {
        name: (directory / name).read_bytes() for name in ("tls.crt", "tls.key", "ca.crt")
    }
    (volume,) = [v for v in rendered.deployment()["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]


@pytest.mark.parametrize("kind", WEBHOOK_KINDS)
def test_the_certs_overlay_sets_the_ca_bundle_to_the_ca(certs, kind):
    (hook,) = certs["rendered"].one(kind, "podtailor")["webhooks"]
    assert decoded(hook["clientConfig"]["caBundle"]) == (certs["dir"] / "ca.crt").read_bytes()


def test_the_certs_overlay_serves_a_certificate_the_ca_bundle_trusts_for_the_service(certs, tmp_path):
    # what the API server does: verify the served certificate against the caBundle, for the
    # name <service>.<namespace>.svc
    rendered = certs["rendered"]
    (hook,) = rendered.one("MutatingWebhookConfiguration", "podtailor")["webhooks"]
    service = hook["clientConfig"]["service"]
    (tmp_path / "bundle.crt").write_bytes(decoded(hook["clientConfig"]["caBundle"]))
    (tmp_path / "tls.crt").write_bytes(decoded(rendered.one("Secret")["data"]["tls.crt"]))
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", tmp_path / "bundle.crt", "-purpose", "sslserver", tmp_path / "tls.crt"],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    host = f"{service['name']}.{service['namespace']}.svc"
    check = subprocess.run(
        ["openssl", "x509", "-in", tmp_path / "tls.crt", "-noout", "-checkhost", host], capture_output=True, text=True
    )
    assert "does match" in check.stdout, check.stdout


def test_the_certs_overlay_needs_the_certificates(tmp_path):
    # without `make certs` the overlay does not render (so nothing half-made is applied)
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "kustomization.yaml").write_bytes((ROOT / "certs" / "kustomization.yaml").read_bytes())
    (tmp_path / "manifests").symlink_to(ROOT / "manifests")
    result = subprocess.run([kubectl(), "kustomize", str(tmp_path / "certs")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "tls.crt" in result.stderr


# --- manifests/cert-manager/ ---------------------------------------------------------------

DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"}
OBJECT_REF = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "kind": {"type": "string"}, "group": {"type": "string"}},
}
METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
}
# The fields of cert-manager.io/v1 Certificate and Issuer (spec level, as in cert-manager's API
# reference), typed where these manifests use them. An unknown or misspelt field, a wrong type
# or a value outside an enum is an error, as it would be for the API server with cert-manager's
# CRDs installed.
CERT_MANAGER_SCHEMA = {
    "Certificate": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "cert-manager.io/v1"},
            "kind": {"const": "Certificate"},
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["secretName", "issuerRef"],
                "additionalProperties": False,
                "properties": {
                    "additionalOutputFormats": {"type": "array"},
                    "commonName": {"type": "string", "maxLength": 64},
                    "dnsNames": {"type": "array", "items": {"type": "string"}},
                    "duration": DURATION,
                    "emailAddresses": {"type": "array", "items": {"type": "string"}},
                    "encodeUsagesInRequest": {"type": "boolean"},
                    "ipAddresses": {"type": "array", "items": {"type": "string"}},
                    "isCA": {"type": "boolean"},
                    "issuerRef": OBJECT_REF,
                    "keystores": {"type": "object"},
                    "literalSubject": {"type": "string"},
                    "nameConstraints": {"type": "object"},
                    "otherNames": {"type": "array"},
                    "privateKey": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                            "encoding": {"enum": ["PKCS1", "PKCS8"]},
                            "rotationPolicy": {"enum": ["Never", "Always"]},
                            "size": {"type": "integer"},
                        },
                    },
                    "renewBefore": DURATION,
                    "renewBeforePercentage": {"type": "integer"},
                    "revisionHistoryLimit": {"type": "integer"},
                    "secretName": {"type": "string", "minLength": 1},
                    "secretTemplate": {"type": "object"},
                    "signatureAlgorithm": {"type": "string"},
                    "subject": {"type": "object"},
                    "uris": {"type": "array", "items": {"type": "string"}},
                    "usages": {
                        "type": "array",
                        "items": {
                            "enum": [
                                "signing", "digital signature", "content commitment", "key encipherment",
                                "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
                                "decipher only", "any", "server auth", "client auth", "code signing",
                                "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
                                "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
                            ]
                        },
                    },
                },
            },
        },
    },
    "Issuer": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "cert-manager.io/v1"},
            "kind": {"const": "Issuer"},
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                # an Issuer is exactly one kind of issuer
                "minProperties": 1,
                "maxProperties": 1,
                "properties": {
                    "acme": {"type": "object"},
                    "ca": {
                        "type": "object",
                        "required": ["secretName"],
                        "additionalProperties": False,
                        "properties": {
                            "secretName": {"type": "string", "minLength": 1},
                            "crlDistributionPoints": {"type": "array"},
                            "issuingCertificateURLs": {"type": "array"},
                            "ocspServers": {"type": "array"},
                        },
                    },
                    "selfSigned": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"crlDistributionPoints": {"type": "array"}},
                    },
                    "vault": {"type": "object"},
                    "venafi": {"type": "object"},
                },
            },
        },
    },
}


def cert_manager_objects(rendered):
    return [o for o in rendered.objects if o["apiVersion"].startswith("cert-manager.io/")]


def test_the_cert_manager_objects_are_well_formed(cert_manager):
    objects = cert_manager_objects(cert_manager)
    assert sorted(o["kind"] for o in objects) == ["Certificate", "Certificate", "Issuer", "Issuer"]
    for o in objects:
        jsonschema.validate(o, CERT_MANAGER_SCHEMA[o["kind"]])
        assert o["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize(
    "path, value",
    [
        (("spec", "dnsName"), ["podtailor"]),
        (("spec", "privateKey", "algorithm"), "EC"),
        (("spec", "usages"), ["serving"]),
        (("spec", "duration"), "90d"),
        (("spec", "issuerRef"), {"kind": "Issuer"}),
    ],
    ids=["misspelt field", "unknown algorithm", "unknown usage", "duration in days", "issuer without a name"],
)
def test_the_cert_manager_schema_rejects_what_cert_manager_would(cert_manager, path, value):
    serving = copy.deepcopy(cert_manager.one("Certificate", "podtailor-serving"))
    target = serving
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(serving, CERT_MANAGER_SCHEMA["Certificate"])


@pytest.mark.parametrize("kind", WEBHOOK_KINDS)
def test_cert_manager_injects_the_ca_of_an_existing_certificate(cert_manager, kind):
    annotations = cert_manager.one(kind, "podtailor")["metadata"].get("annotations") or {}
    namespace, name = annotations["cert-manager.io/inject-ca-from"].split("/")
    assert cert_manager.find("Certificate", name, namespace), f"no Certificate {namespace}/{name}"


def test_the_cert_manager_serving_certificate_is_the_deployments_secret(cert_manager):
    annotations = cert_manager.one("MutatingWebhookConfiguration", "podtailor")["metadata"]["annotations"]
    namespace, name = annotations["cert-manager.io/inject-ca-from"].split("/")
    serving = cert_manager.find("Certificate", name, namespace)
    (volume,) = [v for v in cert_manager.deployment()["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert serving["spec"]["secretName"] == volume["secret"]["secretName"]
    assert "server auth" in serving["spec"]["usages"]
    assert not serving["spec"].get("isCA")
    # the name the API server checks for a service reference, and the others of certs.sh
    service = cert_manager.one("Service", "podtailor")["metadata"]
    svc = f"{service['name']}.{service['namespace']}.svc"
    assert set(serving["spec"]["dnsNames"]) == {
        service["name"], f"{service['name']}.{service['namespace']}", svc, f"{svc}.cluster.local"
    }
    # cert-manager makes the Secret: the overlay must not carry one
    assert cert_manager.all("Secret") == []


def test_the_cert_manager_chain_is_self_signed_ca_then_ca_issuer(cert_manager):
    serving = cert_manager.one("Certificate", "podtailor-serving")
    ca_issuer = cert_manager.find("Issuer", serving["spec"]["issuerRef"]["name"], NAMESPACE)
    assert ca_issuer and serving["spec"]["issuerRef"].get("kind", "Issuer") == "Issuer"
    ca_secret = ca_issuer["spec"]["ca"]["secretName"]
    (ca,) = [c for c in cert_manager.all("Certificate") if c["spec"]["secretName"] == ca_secret]
    assert ca["spec"]["isCA"] is True
    root = cert_manager.find("Issuer", ca["spec"]["issuerRef"]["name"], NAMESPACE)
    assert root and root["spec"] == {"selfSigned": {}}


# --- an overlay of one's own -------------------------------------------------------------


def test_an_overlay_of_ones_own_sets_the_image_and_the_template(tmp_path):
    # what the README tells users to do for their own registry and their platform's template
    template = (ROOT / "examples" / "template.yaml").read_text().replace("LocalExecutor", "CeleryExecutor")
    (tmp_path / "template.yaml").write_text(template)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes relative paths only
                "resources": [os.path.relpath(ROOT / "manifests" / "cert-manager", tmp_path)],
                "images": [{"name": "podtailor", "newName": "registry.example.com/podtailor", "newTag": "0.1.1"}],
                "configMapGenerator": [
                    {
                        "name": "podtailor-template",
                        "namespace": NAMESPACE,
                        "behavior": "replace",
                        "files": ["template.yaml"],
                        "options": {"disableNameSuffixHash": True},
                    }
                ],
            }
        )
    )
    rendered = Rendered(kustomize(tmp_path))
    assert rendered.container()["image"] == "registry.example.com/podtailor:0.1.1"
    assert rendered.one("ConfigMap", "podtailor-template")["data"] == {"template.yaml": template}
    (volume,) = [v for v in rendered.deployment()["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == "podtailor-template"


def test_the_narrowing_overlay_of_the_operations_page_renders_as_it_says(tmp_path):
    # docs/operations.md: the MutatingWebhookConfiguration narrowed to the airflow namespace and
    # Airflow's worker pods, the opt-in condition kept
    page = (ROOT / "docs" / "operations.md").read_text()
    (block,) = [b.split("```")[0] for b in page.split("```yaml\n")[1:] if "objectSelector" in b.split("```")[0]]
    overlay = yaml.safe_load(block)
    overlay["resources"] = [os.path.relpath(ROOT / "manifests" / "cert-manager", tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    rendered = Rendered(kustomize(tmp_path))
    (hook,) = rendered.one("MutatingWebhookConfiguration", "podtailor")["webhooks"]
    assert hook["namespaceSelector"] == {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["airflow"]}]
    }
    assert hook["objectSelector"] == {"matchLabels": {"kubernetes_executor": "True"}}
    assert [c["name"] for c in hook["matchConditions"]] == ["opted-in"]
