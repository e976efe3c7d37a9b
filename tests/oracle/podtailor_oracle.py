"""Independent oracles for `podtailor render`.

Nothing here reads or imports the Rust engine. The expected desired pod is computed by chaining
`kubectl patch --local --type strategic` (the reference implementation of Kubernetes strategic
merge), with the podtailor-specific rules of shared/DESIGN.md layered on top:

1. the template's metadata.name / generateName / namespace are never copied;
2. a later layer's volume replaces the earlier volume's source (``$retainKeys``);
3. a later layer's env var replaces the earlier element entirely (delete, then merge);
4. an override = its ``spec.pod`` fragment, then ``spec.resources`` into the target container,
   then ``spec.secrets`` (Airflow's Secret: env with key, envFrom without key, volume);
5. ``envFrom`` merges by source (kind, name, prefix): a later entry replaces the entry of its
   source, others are appended, nothing twice; an override's ``{"$patch": "replace"}`` element
   replaces the list (kubectl replaces the list whole: it is handed the merged list);
6. the annotation ``podtailor.dev/applied`` is not compared.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ORACLE_DIR = Path(__file__).resolve().parent
REPO = ORACLE_DIR.parent.parent
CASES_DIR = ORACLE_DIR / "cases"

OVERRIDE_ANNOTATION = "podtailor.dev/override"
APPLIED_ANNOTATION = "podtailor.dev/applied"
K8S_VERSION = "1.33.0"
TEMP_TEMPLATE_NAME = "oracle-template-temporary-name"
SUBPROCESS_TIMEOUT = 60

# Keyed lists of the Pod API (strategic-merge keys): compared as sets, i.e. sorted by key.
KEYED_LISTS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "imagePullSecrets": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "ports": ("containerPort", "protocol"),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
    "schedulingGates": ("name",),
    "resourceClaims": ("name",),
}


class OracleError(AssertionError):
    """The oracle itself could not compute an expectation (bad case or missing tool)."""


# --------------------------------------------------------------------------------------------
# tools


def podtailor_bin() -> Path:
    return Path(os.environ.get("PODTAILOR_BIN") or REPO / "target" / "debug" / "podtailor")


def kubectl_bin() -> str | None:
    return os.environ.get("KUBECTL") or shutil.which("kubectl")


def run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


# --------------------------------------------------------------------------------------------
# comparisons


def canonical_json(value: Any) -> str:
    """Type-exact rendering: False != 0, 1 != 1.0, map key order ignored, list order kept."""
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)


def _sort_key(element: Any, keys: tuple[str, ...]) -> tuple:
    if not isinstance(element, dict):
        return (1, canonical_json(element))
    return (0,) + tuple(json.dumps(element.get(k), sort_keys=True) for k in keys)


def canonicalise(value: Any) -> Any:
    """Sort every keyed list by its merge key, recursively (atomic lists keep their order)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = canonicalise(v)
            if k in KEYED_LISTS and isinstance(v, list):
                v = sorted(v, key=lambda e, keys=KEYED_LISTS[k]: _sort_key(e, keys))
            out[k] = v
        return out
    if isinstance(value, list):
        return [canonicalise(v) for v in value]
    return value


# Fields the API server leaves out of a stored pod when they are empty or false: Go's
# encoding/json `omitempty` on non-pointer map and bool fields (every list field of the Pod API
# is omitempty too). Pointer fields (affinity, securityContext, automountServiceAccountToken...)
# keep their `{}` and `false`.
OMITEMPTY_MAPS = {"labels", "annotations", "nodeSelector", "overhead", "requests", "limits"}
OMITEMPTY_BOOLS = {"hostNetwork", "hostPID", "hostIPC", "stdin", "stdinOnce", "tty", "readOnly"}
QUANTITY_MAPS = {"requests", "limits", "overhead"}


def as_stored(value: Any, key: str | None = None) -> Any:
    """The pod as the API server stores it: empty lists, empty map fields and false plain
    booleans left out, quantities as strings. podtailor's desired pod is what the API server
    will hold, so the kubectl chain is compared with it in this form."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = as_stored(v, k)
            if isinstance(v, list) and not v:
                continue
            if k in OMITEMPTY_MAPS and v == {}:
                continue
            if k in OMITEMPTY_BOOLS and v is False:
                continue
            out[k] = v
        if key in QUANTITY_MAPS:
            out = {k: str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for k, v in out.items()}
        return out
    if isinstance(value, list):
        return [as_stored(v) for v in value]
    return value


def without_applied(pod: dict) -> dict:
    pod = copy.deepcopy(pod)
    annotations = (pod.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(APPLIED_ANNOTATION, None)
    return pod


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def differing_paths(expected: Any, got: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Leaf-level differences (type-exact), as (JSON pointer, expected, got)."""
    if isinstance(expected, dict) and isinstance(got, dict):
        out = []
        for k in sorted(set(expected) | set(got)):
            sub = f"{path}/{str(k).replace('~', '~0').replace('/', '~1')}"
            out += differing_paths(expected.get(k, _ABSENT), got.get(k, _ABSENT), sub)
        return out
    if isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        out = []
        for i, (e, g) in enumerate(zip(expected, got)):
            out += differing_paths(e, g, f"{path}/{i}")
        return out
    if expected is _ABSENT or got is _ABSENT:
        return [] if expected is got else [(path or "/", expected, got)]
    if canonical_json(expected) != canonical_json(got):
        return [(path or "/", expected, got)]
    return []


def summary_text(expected: Any, got: Any, limit: int = 40) -> str:
    diffs = differing_paths(expected, got)
    def show(value: Any) -> str:
        return repr(value) if value is _ABSENT else json.dumps(value, sort_keys=True)[:120]

    lines = [f"  {p}: expected {show(e)}, got {show(g)}" for p, e, g in diffs[:limit]]
    if len(diffs) > limit:
        lines.append(f"  ... and {len(diffs) - limit} more")
    return f"{len(diffs)} differing path(s) (after canonicalisation):\n" + "\n".join(lines)


def diff_text(expected: Any, got: Any, expected_label: str, got_label: str) -> str:
    lines = difflib.unified_diff(
        canonical_json(expected).splitlines(),
        canonical_json(got).splitlines(),
        fromfile=expected_label,
        tofile=got_label,
        lineterm="",
        n=4,
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# podtailor rules that the oracle encodes on its own


def secret_volume_name(secret: str, key: str | None) -> str:
    base = secret.replace(".", "-")[:45].rstrip("-")
    digest = hashlib.sha256((secret + "\n" + (key or "")).encode("utf-8")).hexdigest()[:8]
    return f"secret-{base}-{digest}"


def override_names(pod: dict) -> list[str]:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(OVERRIDE_ANNOTATION)
    if value is None:
        raise OracleError(f"the case's pod has no {OVERRIDE_ANNOTATION} annotation")
    return [n.strip() for n in value.split(",") if n.strip()]


# --------------------------------------------------------------------------------------------
# the kubectl chain


class KubectlChain:
    """desired = template ⊲ pod ⊲ override₁ ⊲ … computed with kubectl strategic merge."""

    def __init__(self, workdir: Path, kubectl: str):
        self.workdir = workdir
        self.kubectl = kubectl
        self.calls = 0
        self.log: list[dict] = []  # the patches sent, for failure messages

    # one strategic merge step ---------------------------------------------------------------
    def patch(self, obj: dict, patch: dict) -> dict:
        self.calls += 1
        src = self.workdir / f"kubectl-step-{self.calls:03d}.json"
        src.write_text(json.dumps(obj))
        self.log.append(patch)
        proc = run(
            [
                self.kubectl,
                "patch",
                "--local",
                "-f",
                str(src),
                "--type",
                "strategic",
                "-p",
                json.dumps(patch),
                "-o",
                "json",
            ]
        )
        if proc.returncode != 0:
            raise OracleError(
                f"kubectl patch failed (exit {proc.returncode}) on step {self.calls}:\n"
                f"patch: {json.dumps(patch)}\nstderr: {proc.stderr}"
            )
        result = json.loads(proc.stdout)
        strip_retain_keys(result)
        return result

    # one layer with podtailor's env and volume rules ------------------------------------------
    def apply_layer(self, current: dict, layer: dict, patch: bool = True) -> dict:
        layer = with_env_from_merged(current, layer, patch)
        deletes = env_delete_patch(current, layer)
        if deletes is not None:
            current = self.patch(current, deletes)
        return self.patch(current, with_retain_keys(layer))

    # whole chain -------------------------------------------------------------------------------
    def desired(self, template: dict, pod: dict, overrides: list[dict], namespace: str | None):
        current = copy.deepcopy(template)
        current.setdefault("apiVersion", "v1")
        current.setdefault("kind", "Pod")
        meta = current.setdefault("metadata", {})
        for k in ("name", "generateName", "namespace"):
            meta.pop(k, None)
        meta["name"] = TEMP_TEMPLATE_NAME

        current = self.apply_layer(current, as_decoded(pod), patch=False)

        ns = namespace or (pod.get("metadata") or {}).get("namespace")
        by_name: dict[str, dict] = {}
        for ov in overrides:
            md = ov.get("metadata") or {}
            ov_ns = md.get("namespace")
            if ov_ns is not None and ns is None:
                raise OracleError("namespaced override in a case without a namespace: ambiguous")
            if ov_ns is not None and ov_ns != ns:
                continue  # another namespace's override: never applies here
            if md["name"] in by_name:
                raise OracleError(f"two overrides named {md['name']!r} apply here: ambiguous case")
            by_name[md["name"]] = ov
        for name in override_names(pod):
            if name not in by_name:
                raise OracleError(f"override {name!r} is not among the case's overrides for {ns!r}")
            current = self.apply_override(current, by_name[name], pod, template)

        pod_name = (pod.get("metadata") or {}).get("name")
        if pod_name:
            if current["metadata"].get("name") != pod_name:
                raise OracleError("kubectl result lost the pod's name")
        else:
            current["metadata"].pop("name", None)
        return current

    def apply_override(self, current: dict, override: dict, pod: dict, template: dict) -> dict:
        spec = override.get("spec") or {}
        fragment = spec.get("pod")
        if fragment:
            current = self.apply_layer(current, copy.deepcopy(fragment))

        needs_target = bool(spec.get("resources")) or bool(spec.get("secrets"))
        if not needs_target:
            return current
        target = target_container(current, override, pod, template)

        if spec.get("resources"):
            current = self.apply_layer(
                current,
                {"spec": {"containers": [{"name": target, "resources": copy.deepcopy(spec["resources"])}]}},
            )

        for secret in spec.get("secrets") or []:
            layer = secret_layer(current, target, secret)
            if layer is not None:
                current = self.apply_layer(current, layer)
        return current


# Go booleans of core/v1 without a pointer (`json:",omitempty"`): the API server decodes a
# request into its types before any webhook, so a `false` there never reaches one.
SPEC_FALSE_DROPPED = ("hostNetwork", "hostPID", "hostIPC")
CONTAINER_FALSE_DROPPED = ("stdin", "stdinOnce", "tty")


def as_decoded(pod: dict) -> dict:
    """The pod as the API server sends it to a webhook: its non-pointer `false` booleans gone."""
    pod = copy.deepcopy(pod)
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return pod
    for name in SPEC_FALSE_DROPPED:
        if spec.get(name) is False:
            del spec[name]
    for list_name in ("containers", "initContainers"):
        for c in spec.get(list_name) or []:
            if isinstance(c, dict):
                for name in CONTAINER_FALSE_DROPPED:
                    if c.get(name) is False:
                        del c[name]
    return pod


def strip_retain_keys(value: Any) -> None:
    """kubectl leaves `$retainKeys` in list elements that were newly added: drop it."""
    if isinstance(value, dict):
        value.pop("$retainKeys", None)
        for v in value.values():
            strip_retain_keys(v)
    elif isinstance(value, list):
        for v in value:
            strip_retain_keys(v)


def with_retain_keys(layer: dict) -> dict:
    layer = copy.deepcopy(layer)
    volumes = (layer.get("spec") or {}).get("volumes")
    if isinstance(volumes, list):
        for vol in volumes:
            if isinstance(vol, dict):
                vol["$retainKeys"] = sorted(k for k in vol if not k.startswith("$"))
    return layer


REPLACE_DIRECTIVE = {"$patch": "replace"}


def env_from_source(entry: Any) -> tuple | None:
    """(kind, name, prefix) of an envFrom entry; a missing name or prefix is ""."""
    if not isinstance(entry, dict):
        return None
    refs = [k for k in ("configMapRef", "secretRef") if k in entry]
    if len(refs) != 1:
        return None
    return (refs[0], (entry[refs[0]] or {}).get("name", ""), entry.get("prefix", ""))


def merged_env_from(current: list, layer: list, patch: bool) -> list:
    if patch and REPLACE_DIRECTIVE in layer:
        return [copy.deepcopy(e) for e in layer if e != REPLACE_DIRECTIVE]
    out = copy.deepcopy(current)
    for entry in layer:
        src = env_from_source(entry)
        same = [
            i for i, e in enumerate(out)
            if (src is not None and env_from_source(e) == src) or (src is None and e == entry)
        ]
        if same:
            out[same[0]] = copy.deepcopy(entry)
        else:
            out.append(copy.deepcopy(entry))
    return out


def with_env_from_merged(current: dict, layer: dict, patch: bool) -> dict:
    """The layer with each container's envFrom replaced by the merged list (kubectl has no key
    for envFrom and replaces it whole, so it is given the whole result)."""
    layer = copy.deepcopy(layer)
    cur_spec = current.get("spec") or {}
    for ckey in ("containers", "initContainers", "ephemeralContainers"):
        existing = {c.get("name"): c for c in cur_spec.get(ckey) or [] if isinstance(c, dict)}
        for c in (layer.get("spec") or {}).get(ckey) or []:
            if not isinstance(c, dict) or not isinstance(c.get("envFrom"), list):
                continue
            have = (existing.get(c.get("name")) or {}).get("envFrom") or []
            c["envFrom"] = merged_env_from(have, c["envFrom"], patch) or None
    return layer


def env_delete_patch(current: dict, layer: dict) -> dict | None:
    cur_spec = current.get("spec") or {}
    layer_spec = layer.get("spec") or {}
    out: dict[str, list] = {}
    for ckey in ("containers", "initContainers"):
        existing = {
            c.get("name"): c for c in cur_spec.get(ckey) or [] if isinstance(c, dict)
        }
        items = []
        for c in layer_spec.get(ckey) or []:
            if not isinstance(c, dict) or c.get("name") not in existing:
                continue
            have = {e.get("name") for e in existing[c["name"]].get("env") or []}
            dels = [
                {"name": e["name"], "$patch": "delete"}
                for e in c.get("env") or []
                if isinstance(e, dict) and e.get("name") in have
            ]
            if dels:
                items.append({"name": c["name"], "env": dels})
        if items:
            out[ckey] = items
    return {"spec": out} if out else None


def target_container(current: dict, override: dict, pod: dict, template: dict) -> str:
    containers = [c.get("name") for c in (current.get("spec") or {}).get("containers") or []]
    explicit = (override.get("spec") or {}).get("container")
    if explicit:
        if explicit not in containers:
            raise OracleError(f"override targets container {explicit!r}, absent from {containers}")
        return explicit
    if "base" in containers:
        return "base"
    # "the first container": make sure the case does not depend on what "first" means.
    candidates = {containers[0]} if containers else set()
    for src in (pod, template):
        names = [c.get("name") for c in (src.get("spec") or {}).get("containers") or []]
        if names:
            candidates.add(names[0])
    if len(candidates) != 1:
        raise OracleError(f"ambiguous first container in this case: {sorted(candidates)}")
    return candidates.pop()


def secret_layer(current: dict, target: str, secret: dict) -> dict | None:
    deploy_type = secret.get("deployType")
    deploy_target = secret.get("deployTarget")
    name = secret.get("secret")
    key = secret.get("key")
    if deploy_type == "env" and deploy_target and key:
        # Airflow's Secret upper-cases an env target (str.upper())
        env = {"name": deploy_target.upper(), "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
        return {"spec": {"containers": [{"name": target, "env": [env]}]}}
    if deploy_type == "env" and not deploy_target and not key:
        # merged by source by apply_layer, like any envFrom entry
        return {"spec": {"containers": [{"name": target, "envFrom": [{"secretRef": {"name": name}}]}]}}
    if deploy_type == "volume" and deploy_target:
        vol_name = secret_volume_name(name, key)
        source: dict[str, Any] = {"secretName": name}
        if key:
            source["items"] = [{"key": key, "path": key}]
        return {
            "spec": {
                "volumes": [{"name": vol_name, "secret": source}],
                "containers": [
                    {
                        "name": target,
                        "volumeMounts": [
                            {"name": vol_name, "mountPath": deploy_target, "readOnly": True}
                        ],
                    }
                ],
            }
        }
    raise OracleError(f"the oracle does not model this secret: {secret}")


# --------------------------------------------------------------------------------------------
# cases


def load_cases() -> list[tuple[str, dict]]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        with path.open() as fh:
            cases.append((path.stem, yaml.safe_load(fh)))
    return cases


def dump_yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True)


def admission_review(pod: dict, namespace: str | None, uid: str) -> dict:
    return {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace or "default",
            "operation": "CREATE",
            "userInfo": {"username": "oracle", "groups": ["system:authenticated"]},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


class CaseRun:
    """One case laid out on disk, with its renders and its oracle expectation (computed lazily)."""

    def __init__(self, case_id: str, case: dict, workdir: Path):
        self.id = case_id
        self.case = case
        self.workdir = workdir
        self.namespace = case.get("namespace")
        self.input_format = case.get("input", "yaml")
        self._cache: dict[str, Any] = {}
        self._future = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.template_path = workdir / "template.yaml"
        self.template_path.write_text(dump_yaml(case["template"]))
        self.overrides_dir = workdir / "overrides"
        self.overrides_dir.mkdir(exist_ok=True)
        for i, ov in enumerate(case.get("overrides") or []):
            (self.overrides_dir / f"{i:02d}-{ov['metadata']['name']}.yaml").write_text(dump_yaml(ov))
        if self.input_format == "yaml":
            self.input_path = workdir / "pod.yaml"
            self.input_path.write_text(dump_yaml(case["pod"]))
        elif self.input_format == "json":
            self.input_path = workdir / "pod.json"
            self.input_path.write_text(json.dumps(case["pod"], indent=2))
        elif self.input_format == "stdin":
            self.input_path = workdir / "pod.yaml"
            self.input_path.write_text(dump_yaml(case["pod"]))
        elif self.input_format == "review":
            self.input_path = workdir / "review.json"
            review = admission_review(case["pod"], self.namespace, f"oracle-{case_id}")
            self.input_path.write_text(json.dumps(review, indent=2))
        else:
            raise OracleError(f"unknown input format {self.input_format!r}")

    @property
    def pod(self) -> dict:
        return self.case["pod"]

    def render(self, output: str, input_path: Path | None = None) -> str:
        cmd = [
            str(podtailor_bin()),
            "render",
            "--template",
            str(self.template_path),
            "--overrides",
            str(self.overrides_dir),
        ]
        # An AdmissionReview carries its namespace; a pod file gets it from --namespace.
        if self.namespace and (input_path is not None or self.input_format != "review"):
            cmd += ["--namespace", self.namespace]
        stdin = None
        if input_path is None and self.input_format == "stdin":
            cmd += ["-o", output, "-"]
            stdin = self.input_path.read_text()
        else:
            cmd += ["-o", output, str(input_path or self.input_path)]
        proc = run(cmd, stdin=stdin)
        if proc.returncode != 0:
            raise AssertionError(
                f"[{self.id}] `{' '.join(cmd)}` exited {proc.returncode}\n"
                f"stderr:\n{proc.stderr}\nstdout:\n{proc.stdout[:2000]}"
            )
        return proc.stdout

    def desired(self) -> dict:
        if "desired" not in self._cache:
            out = self.render("json")
            try:
                self._cache["desired"] = json.loads(out)
            except json.JSONDecodeError as err:
                raise AssertionError(f"[{self.id}] render -o json is not JSON: {err}\n{out[:2000]}")
        return self._cache["desired"]

    def patch(self) -> list:
        if "patch" not in self._cache:
            out = self.render("patch")
            try:
                self._cache["patch"] = json.loads(out)
            except json.JSONDecodeError as err:
                raise AssertionError(f"[{self.id}] render -o patch is not JSON: {err}\n{out[:2000]}")
        return self._cache["patch"]

    def start_expected(self, executor, kubectl: str) -> None:
        """Compute the kubectl chain in the background (it is the slow part of the suite)."""
        self._future = executor.submit(self._compute_expected, kubectl)

    def expected(self, kubectl: str) -> tuple[dict, KubectlChain]:
        if "expected" not in self._cache:
            future = getattr(self, "_future", None)
            if future is not None:
                self._cache["expected"] = future.result()
            else:
                self._cache["expected"] = self._compute_expected(kubectl)
        return self._cache["expected"]

    def _compute_expected(self, kubectl: str) -> tuple[dict, KubectlChain]:
        chain_dir = self.workdir / "kubectl"
        chain_dir.mkdir(exist_ok=True)
        chain = KubectlChain(chain_dir, kubectl)
        result = chain.desired(
            self.case["template"], self.case["pod"], self.case.get("overrides") or [], self.namespace
        )
        return result, chain
