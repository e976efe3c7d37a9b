"""Helpers for the install tests: render a kustomization with `kubectl kustomize`, validate
objects with kubernetes-validate, find objects, resolve ports, and check RBAC rules."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
VALIDATE = ROOT / "target" / "venv" / "bin" / "kubernetes-validate"
# The Kubernetes version whose schemas the objects are validated against (as test_crd.py).
KUBE_VERSION = "1.33.0"
NAMESPACE = "podtailor-system"


def kubectl() -> str:
    path = os.environ.get("KUBECTL") or shutil.which("kubectl")
    assert path, "kubectl is not on PATH (set KUBECTL): the install tests run `kubectl kustomize`, offline"
    return path


def kustomize(directory: pathlib.Path) -> list[dict]:
    """The objects `kubectl kustomize DIRECTORY` renders; fails the test if it does not render."""
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True)
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class Rendered:
    """The objects of one rendering, looked up by kind and name."""

    def __init__(self, objects: list[dict]):
        self.objects = objects

    def all(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def find(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        found = [
            o
            for o in self.all(kind)
            if o["metadata"]["name"] == name and (namespace is None or o["metadata"].get("namespace") == namespace)
        ]
        assert len(found) <= 1, f"{len(found)} objects {kind}/{name}"
        return found[0] if found else None

    def one(self, kind: str, name: str | None = None) -> dict:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}{'/' + name if name else ''}, found {len(found)}"
        return found[0]

    def deployment(self) -> dict:
        return self.one("Deployment", "podtailor")

    def container(self) -> dict:
        (container,) = self.deployment()["spec"]["template"]["spec"]["containers"]
        return container


def kubernetes_validate(objects: list[dict]) -> subprocess.CompletedProcess:
    """kubernetes-validate --strict on the objects, written as one multi-document file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "objects.yaml"
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        return subprocess.run(
            [str(VALIDATE), "--strict", "-k", KUBE_VERSION, str(path)], capture_output=True, text=True
        )


def flag(args: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in a container's args; None if absent."""
    for i, arg in enumerate(args):
        if arg == name:
            assert i + 1 < len(args), f"{name} has no value"
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1 :]
    return None


def listen_port(address: str) -> int:
    """The port of a listen address: 0.0.0.0:8443, [::]:8443."""
    return int(address.rsplit(":", 1)[1])


def container_port(container: dict, port: int | str) -> int:
    """The number of a container port given by number or by name; fails if the container does
    not declare it."""
    ports = container.get("ports") or []
    if isinstance(port, int):
        assert any(p["containerPort"] == port for p in ports), f"the container declares no port {port}"
        return port
    named = [p["containerPort"] for p in ports if p.get("name") == port]
    assert len(named) == 1, f"the container declares no port named {port!r}"
    return named[0]


def selects(match_labels: dict, labels: dict) -> bool:
    """Whether non-empty matchLabels (or a Service's selector) select the labels."""
    return bool(match_labels) and all(labels.get(k) == v for k, v in match_labels.items())


READ_VERBS = {"get", "list", "watch"}
# the one write: each PodOverride's status (the Ready condition), by server-side apply
STATUS_RULE = {"apiGroups": ["podtailor.dev"], "resources": ["podoverrides/status"], "verbs": ["patch"]}
# the namespaces' own templates: PodTemplates (core/v1) read and watched, nothing more
PODTEMPLATES_RULE = {"apiGroups": [""], "resources": ["podtemplates"], "verbs": ["get", "list", "watch"]}


def rbac_violations(objects: list[dict]) -> list[str]:
    """Every grant of a Role or ClusterRole beyond get/list/watch on podtailor.dev podoverrides,
    patch on their status, and get/list/watch on core podtemplates."""
    problems = []
    for role in (o for o in objects if o["kind"] in ("Role", "ClusterRole")):
        where = f"{role['kind']}/{role['metadata']['name']}"
        if role.get("aggregationRule"):
            problems.append(f"{where}: aggregates other roles")
        for rule in role.get("rules") or []:
            if rule in (STATUS_RULE, PODTEMPLATES_RULE):
                continue
            if rule.get("nonResourceURLs"):
                problems.append(f"{where}: grants non-resource URLs {rule['nonResourceURLs']}")
            if rule.get("apiGroups") != ["podtailor.dev"]:
                problems.append(f"{where}: API groups {rule.get('apiGroups')}")
            if rule.get("resources") != ["podoverrides"]:
                problems.append(f"{where}: resources {rule.get('resources')}")
            extra = set(rule.get("verbs") or []) - READ_VERBS
            if extra:
                problems.append(f"{where}: verbs {sorted(extra)}")
    return problems


CHART = ROOT / "charts" / "podtailor"


def helm() -> str:
    path = os.environ.get("HELM") or shutil.which("helm")
    assert path, "helm is not on PATH (set HELM): `make helm-bin` builds it into target/tools/bin"
    return path


def helm_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm(), *args], capture_output=True, text=True)


def helm_template(*args: str, namespace: str = NAMESPACE) -> list[dict]:
    """The objects `helm template podtailor charts/podtailor -n NAMESPACE ARGS` renders; fails
    the test if it does not render."""
    result = helm_run("template", "podtailor", str(CHART), "--namespace", namespace, *args)
    assert result.returncode == 0, f"helm template {' '.join(args)} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
