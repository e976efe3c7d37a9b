"""The kustomize base in manifests/ (`kubectl kustomize manifests`): the objects it holds, and
that they fit together — the Service reaches the webhook port the container listens on, the
probes hit the admin port, the webhooks call that Service, RBAC reads PodOverrides and patches
their status only and is bound to the Deployment's service account, the template ConfigMap is
the example template."""

from __future__ import annotations

import re

import pytest
import yaml

from install import (
    NAMESPACE,
    PODTEMPLATES_RULE,
    READ_VERBS,
    STATUS_RULE,
    ROOT,
    container_port,
    flag,
    listen_port,
    rbac_violations,
    selects,
)

EXPECTED_OBJECTS = {
    ("Namespace", NAMESPACE),
    ("CustomResourceDefinition", "podoverrides.podtailor.dev"),
    ("ServiceAccount", "podtailor"),
    ("ClusterRole", "podtailor"),
    ("ClusterRoleBinding", "podtailor"),
    ("ConfigMap", "podtailor-template"),
    ("Deployment", "podtailor"),
    ("PodDisruptionBudget", "podtailor"),
    ("Service", "podtailor"),
    ("MutatingWebhookConfiguration", "podtailor"),
    ("ValidatingWebhookConfiguration", "podtailor"),
}
CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
}


def test_the_base_holds_exactly_the_install(base):
    found = [(o["kind"], o["metadata"]["name"]) for o in base.objects]
    assert sorted(found) == sorted(EXPECTED_OBJECTS)


def test_every_namespaced_object_is_in_podtailor_system(base):
    for o in base.objects:
        namespace = o["metadata"].get("namespace")
        if o["kind"] in CLUSTER_SCOPED:
            assert namespace is None, f"{o['kind']}/{o['metadata']['name']} is cluster-scoped"
        else:
            assert namespace == NAMESPACE, f"{o['kind']}/{o['metadata']['name']} is in {namespace}"


def test_the_namespace_enforces_the_restricted_pod_security_standard(base):
    labels = base.one("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_committed_crd_is_the_one_in_the_base(base):
    committed = yaml.safe_load((ROOT / "manifests" / "base" / "crd.yaml").read_text())
    assert base.one("CustomResourceDefinition") == committed


# --- the template ConfigMap ---------------------------------------------------------------


def test_the_template_configmap_holds_the_example_template(base):
    configmap = base.one("ConfigMap", "podtailor-template")
    expected = (ROOT / "examples" / "template.yaml").read_text()
    assert configmap["data"] == {"template.yaml": expected}, (
        "manifests/base/template.yaml differs from examples/template.yaml: "
        "cp examples/template.yaml manifests/base/template.yaml"
    )


def test_the_template_configmap_name_is_stable(base):
    # no kustomize hash suffix: an edit updates the mounted file in place and podtailor
    # reloads it, instead of a new ConfigMap and a rollout
    assert base.one("ConfigMap")["metadata"]["name"] == "podtailor-template"
    (volume,) = [v for v in base.deployment()["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == "podtailor-template"


# --- the Deployment -----------------------------------------------------------------------


def pod_spec(base):
    return base.deployment()["spec"]["template"]["spec"]


def test_the_deployment_runs_two_replicas_spread_across_nodes(base):
    deployment = base.deployment()
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    spec = pod_spec(base)
    spread = [c for c in spec.get("topologySpreadConstraints") or [] if c["topologyKey"] == "kubernetes.io/hostname"]
    anti = (
        ((spec.get("affinity") or {}).get("podAntiAffinity") or {}).get(
            "preferredDuringSchedulingIgnoredDuringExecution"
        )
        or []
    )
    assert spread or anti, "nothing spreads the replicas across nodes"
    for constraint in spread:
        # a one-node cluster (kind) must still schedule both replicas
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert constraint["maxSkew"] == 1
        assert selects(constraint["labelSelector"]["matchLabels"], labels)
    # a required anti-affinity would leave the second replica pending on one node
    assert not ((spec.get("affinity") or {}).get("podAntiAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )


def test_a_rollout_keeps_both_replicas_serving(base):
    rolling = base.deployment()["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0


def test_a_stopping_replica_answers_until_the_endpoints_drop_it(base):
    spec, container = pod_spec(base), base.container()
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause >= 5
    # serve's default --shutdown-grace is 10 s; the kubelet kills the pod at the grace period
    grace = int(flag(container["args"], "--shutdown-grace") or 10)
    assert pause + grace < spec["terminationGracePeriodSeconds"]


def test_the_pdb_keeps_one_replica_through_disruptions(base):
    pdb = base.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert "maxUnavailable" not in pdb["spec"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], base.deployment()["spec"]["template"]["metadata"]["labels"])


def test_the_container_runs_serve_in_cluster_mode(base):
    container = base.container()
    assert "command" not in container, "the image's entrypoint is the podtailor binary"
    args = container["args"]
    assert args[:2] == ["serve", "--cluster"]
    assert flag(args, "--overrides") is None, "cluster mode takes PodOverrides from the API server"
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    assert env["PODTAILOR_LOG_FORMAT"] == "json"
    assert "PODTAILOR_OVERRIDES" not in env


def test_the_image_is_the_release_and_is_not_pulled_when_present(base):
    container = base.container()
    cargo_version = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    assert container["image"] == f"podtailor:{cargo_version}"
    assert container["imagePullPolicy"] == "IfNotPresent"


def mounted_file(spec: dict, container: dict, path: str) -> tuple[dict, str]:
    """The volume that holds `path` in the container, and the file's name inside the volume;
    the mount must be read-only."""
    mounts = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"{path} is not in exactly one mount"
    (mount,) = mounts
    assert mount.get("readOnly") is True, f"{mount['mountPath']} is not mounted read-only"
    assert "subPath" not in mount, "a subPath mount is never updated: hot reload needs the directory"
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    return volume, path[len(mount["mountPath"].rstrip("/")) + 1 :]


def test_the_template_flag_names_the_mounted_configmap_key(base):
    spec, container = pod_spec(base), base.container()
    volume, key = mounted_file(spec, container, flag(container["args"], "--template"))
    configmap = base.one("ConfigMap", volume["configMap"]["name"])
    assert key in configmap["data"]


@pytest.mark.parametrize("option, key", [("--tls-cert", "tls.crt"), ("--tls-key", "tls.key")])
def test_the_tls_flags_name_the_mounted_secret_keys(base, option, key):
    spec, container = pod_spec(base), base.container()
    volume, name = mounted_file(spec, container, flag(container["args"], option))
    assert volume["secret"]["secretName"] == "podtailor-tls"
    assert name == key  # the keys of a kubernetes.io/tls Secret


def effective_security(spec: dict, container: dict, key: str):
    """A container security setting, falling back to the pod's (as the kubelet does)."""
    value = (container.get("securityContext") or {}).get(key)
    return value if value is not None else (spec.get("securityContext") or {}).get(key)


def test_the_container_is_locked_down(base):
    spec, container = pod_spec(base), base.container()
    assert effective_security(spec, container, "runAsNonRoot") is True
    assert effective_security(spec, container, "runAsUser") == 65532
    assert effective_security(spec, container, "seccompProfile") == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security.get("privileged") in (None, False)
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(field)
    assert all("hostPath" not in v for v in spec["volumes"])


def test_the_user_is_the_images_user(base):
    # the Dockerfile's runtime stage runs as distroless's nonroot user
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime = dockerfile[dockerfile.rindex("FROM ") :]
    assert "distroless" in runtime.splitlines()[0]
    user = re.search(r"^USER (\d+)(?::(\d+))?$", runtime, re.M)
    assert user, "the runtime stage sets no numeric USER"
    spec, container = pod_spec(base), base.container()
    assert effective_security(spec, container, "runAsUser") == int(user.group(1))
    if user.group(2):
        assert effective_security(spec, container, "runAsGroup") == int(user.group(2))
    # args, not command: the image's entrypoint is the binary
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/podtailor"\]$', runtime, re.M)
    assert re.search(r"^COPY --from=build \S+/podtailor /usr/local/bin/podtailor$", runtime, re.M)


def test_the_container_has_requests_and_limits(base):
    resources = base.container()["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}, kind


def test_the_secret_volume_is_readable_by_the_group_only(base):
    # 0440 with fsGroup: the key is readable by the server's group, by no one else
    spec = pod_spec(base)
    (volume,) = [v for v in spec["volumes"] if "secret" in v]
    assert volume["secret"]["defaultMode"] == 0o440
    assert spec["securityContext"]["fsGroup"] == effective_security(spec, base.container(), "runAsGroup")


# --- ports: Service, container, args, probes ----------------------------------------------


def test_the_service_reaches_the_webhook_port_the_server_listens_on(base):
    service, container = base.one("Service", "podtailor"), base.container()
    assert selects(service["spec"]["selector"], base.deployment()["spec"]["template"]["metadata"]["labels"])
    (https,) = [p for p in service["spec"]["ports"] if p["port"] == 443]
    assert https["name"] == "https"
    target = container_port(container, https["targetPort"])
    assert target == listen_port(flag(container["args"], "--listen")) == 8443


def test_the_admin_port_is_not_the_webhook_port(base):
    args = base.container()["args"]
    # 8081, the binary's default: not 8080, where kubectl without a kubeconfig falls back to
    assert listen_port(flag(args, "--admin-listen")) == 8081
    assert listen_port(flag(args, "--admin-listen")) != listen_port(flag(args, "--listen"))


@pytest.mark.parametrize("probe, path", [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")])
def test_the_probes_hit_the_admin_port(base, probe, path):
    container = base.container()
    get = container[probe]["httpGet"]
    assert get["path"] == path
    assert get.get("scheme", "HTTP") == "HTTP"  # the admin port is plain HTTP
    assert container_port(container, get["port"]) == listen_port(flag(container["args"], "--admin-listen"))


# --- RBAC ---------------------------------------------------------------------------------


def test_rbac_grants_reading_podoverrides_and_patching_their_status_only(base):
    assert rbac_violations(base.objects) == []
    (role,) = [o for o in base.objects if o["kind"] in ("Role", "ClusterRole")]
    # the reflector lists and watches in every namespace: a ClusterRole with all three verbs;
    # the status writer applies each object's status, and that is the one write
    assert role["kind"] == "ClusterRole"
    read = [rule for rule in role["rules"] if rule not in (STATUS_RULE, PODTEMPLATES_RULE)]
    assert {v for rule in read for v in rule["verbs"]} == READ_VERBS
    assert [rule for rule in role["rules"] if rule == STATUS_RULE] == [STATUS_RULE]
    # the namespaces' PodTemplates, watched like the PodOverrides: read only
    assert [rule for rule in role["rules"] if rule == PODTEMPLATES_RULE] == [PODTEMPLATES_RULE]


@pytest.mark.parametrize(
    "rule",
    [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["podtemplates"], "verbs": ["get", "list", "watch", "update"]},
        {"apiGroups": [""], "resources": ["podtemplates", "pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["podtailor.dev"], "resources": ["podoverrides"], "verbs": ["*"]},
        {"apiGroups": ["podtailor.dev"], "resources": ["podoverrides"], "verbs": ["get", "update"]},
        {"apiGroups": ["podtailor.dev"], "resources": ["podoverrides"], "verbs": ["patch"]},
        {"apiGroups": ["*"], "resources": ["podoverrides"], "verbs": ["get"]},
        {"apiGroups": ["podtailor.dev"], "resources": ["*"], "verbs": ["get"]},
        {"apiGroups": ["podtailor.dev"], "resources": ["podoverrides", "podoverrides/status"], "verbs": ["get"]},
        {"apiGroups": ["podtailor.dev"], "resources": ["podoverrides/status"], "verbs": ["update"]},
        {"apiGroups": ["podtailor.dev"], "resources": ["podoverrides/status"], "verbs": ["patch", "update"]},
        {"apiGroups": ["podtailor.dev"], "resources": ["podoverrides/status"], "verbs": ["*"]},
        {"apiGroups": ["*"], "resources": ["podoverrides/status"], "verbs": ["patch"]},
        {"apiGroups": ["podtailor.dev"], "resources": ["podoverrides/*"], "verbs": ["patch"]},
        {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
    ],
    ids=[
        "secrets",
        "pods",
        "podtemplates writable",
        "podtemplates with pods",
        "all verbs",
        "update",
        "patch the objects",
        "all groups",
        "all resources",
        "status",
        "update the status",
        "patch and update the status",
        "all verbs on the status",
        "the status in all groups",
        "every subresource",
        "non-resource",
    ],
)
def test_the_rbac_check_catches_a_wider_grant(base, rule):
    objects = [dict(o) for o in base.objects]
    role = next(o for o in objects if o["kind"] == "ClusterRole")
    role["rules"] = role["rules"] + [rule]
    assert rbac_violations(objects)


def test_the_binding_binds_the_role_to_the_deployments_service_account(base):
    spec = pod_spec(base)
    account = spec["serviceAccountName"]
    assert spec.get("automountServiceAccountToken", True) is not False, "the watch needs the token"
    assert base.find("ServiceAccount", account, NAMESPACE)
    bindings = [o for o in base.objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert len(bindings) == 1
    (binding,) = bindings
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    ref = binding["roleRef"]
    assert ref["apiGroup"] == "rbac.authorization.k8s.io"
    assert base.find(ref["kind"], ref["name"]), f"the binding names a role the install lacks: {ref}"


# --- the webhook configurations -----------------------------------------------------------

MUTATE = {
    "name": "mutate.podtailor.dev",
    "admissionReviewVersions": ["v1"],
    "clientConfig": {"service": {"name": "podtailor", "namespace": NAMESPACE, "path": "/mutate", "port": 443}},
    "rules": [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE"],
            "scope": "Namespaced",
        }
    ],
    "matchConditions": [
        {
            "name": "opted-in",
            "expression": "has(object.metadata.annotations) && "
            "'podtailor.dev/override' in object.metadata.annotations",
        }
    ],
    "namespaceSelector": {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NAMESPACE]}
        ]
    },
    "failurePolicy": "Fail",
    "sideEffects": "None",
    "timeoutSeconds": 5,
    "reinvocationPolicy": "IfNeeded",
    "matchPolicy": "Equivalent",
}

VALIDATE = {
    "name": "validate.podtailor.dev",
    "admissionReviewVersions": ["v1"],
    "clientConfig": {"service": {"name": "podtailor", "namespace": NAMESPACE, "path": "/validate", "port": 443}},
    "rules": [
        {
            "apiGroups": ["podtailor.dev"],
            "apiVersions": ["v1alpha1"],
            "resources": ["podoverrides"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ],
    "failurePolicy": "Fail",
    "sideEffects": "None",
    "timeoutSeconds": 5,
    "matchPolicy": "Equivalent",
}


def webhook(rendered, kind):
    (hook,) = rendered.one(kind, "podtailor")["webhooks"]
    return hook


@pytest.mark.parametrize("field", list(MUTATE))
def test_the_mutating_webhook_setting(base, field):
    assert webhook(base, "MutatingWebhookConfiguration").get(field) == MUTATE[field]


@pytest.mark.parametrize("field", list(VALIDATE))
def test_the_validating_webhook_setting(base, field):
    assert webhook(base, "ValidatingWebhookConfiguration").get(field) == VALIDATE[field]


@pytest.mark.parametrize(
    "kind, expected", [("MutatingWebhookConfiguration", MUTATE), ("ValidatingWebhookConfiguration", VALIDATE)]
)
def test_the_webhooks_set_nothing_else(base, kind, expected):
    # one webhook each (webhook() unpacks exactly one), and no field beyond those asserted
    # above: no objectSelector, for instance
    assert set(webhook(base, kind)) == set(expected)


def test_the_mutating_webhook_never_calls_podtailor_for_its_own_namespace(base):
    (expression,) = webhook(base, "MutatingWebhookConfiguration")["namespaceSelector"]["matchExpressions"]
    assert base.deployment()["metadata"]["namespace"] in expression["values"]


@pytest.mark.parametrize("kind", ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"])
def test_the_webhooks_call_the_service_on_its_https_port(base, kind):
    ref = webhook(base, kind)["clientConfig"]["service"]
    service = base.find("Service", ref["name"], ref["namespace"])
    assert service, f"no Service {ref['namespace']}/{ref['name']}"
    assert ref["port"] in [p["port"] for p in service["spec"]["ports"] if p["name"] == "https"]


@pytest.mark.parametrize("kind", ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"])
def test_the_base_leaves_the_ca_bundle_to_an_overlay(base, kind):
    assert "caBundle" not in webhook(base, kind)["clientConfig"]
