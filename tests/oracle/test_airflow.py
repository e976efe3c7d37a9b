"""Airflow's own code as the oracle of the Airflow path (docs/airflow.md).

The seed scenario's two tasks (examples/airflow/dags.py) get their worker pods from
apache-airflow-providers-cncf-kubernetes exactly as the KubernetesExecutor builds them:
`PodGenerator.construct_pod` over Airflow's pod_template_file
(examples/airflow/pod_template_file.yaml) and the task's `executor_config["pod_override"]`.
The KubernetesPodOperator's pod comes from its own `build_pod_request_obj` (both built in
airflow_pods.py, which the control-plane tier uses too). Each pod, as the API
server would send it to the webhook, goes through `podtailor render` with the example template
and overrides; the result must hold the seed's resources or secret and everything Airflow set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest

import podtailor_oracle as po

# airflow_pods (tests/oracle/airflow_pods.py) gives Airflow a home of its own before importing it
import airflow_pods
from airflow_pods import NAMESPACE, RUN_ID, TEAM_IMAGE, TEMPLATE_IMAGE, as_dict, dags, executor_pod, operator_pod

from airflow.providers.cncf.kubernetes.secret import Secret  # noqa: E402

HALF_CPU_1GI = {"requests": {"cpu": "500m", "memory": "1024Mi"}, "limits": {"cpu": "500m", "memory": "1024Mi"}}
MY_SECRET = {"name": "MY_SECRET", "valueFrom": {"secretKeyRef": {"name": "infrared-photon-7780-env", "key": "MY_SECRET"}}}
# what podtailor's template gives every worker (examples/template.yaml)
TEMPLATE_ENV = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")


def render(pod: dict, overrides: Path = po.REPO / "examples" / "overrides") -> dict:
    """`podtailor render -o json` of the pod as the API server sends it to the webhook (what it
    does not store, like empty lists and `hostNetwork: false`, already gone)."""
    proc = subprocess.run(
        [
            str(po.podtailor_bin()),
            "render",
            "--template", str(po.REPO / "examples" / "template.yaml"),
            "--overrides", str(overrides),
            "-o", "json",
            "-",
        ],
        input=json.dumps(po.as_stored(pod)),
        capture_output=True,
        text=True,
        timeout=po.SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def base(pod: dict) -> dict:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "base")


def env(pod: dict) -> dict[str, dict]:
    return {e["name"]: e for e in base(pod).get("env") or []}


def assert_kept(airflow: dict, desired: dict) -> None:
    """Everything Airflow set is in the desired pod as Airflow set it: its labels and
    annotations (the override annotation aside, podtailor reads it), the base container's
    args, command and image, its env vars."""
    for field in ("labels", "annotations"):
        for key, value in (airflow["metadata"].get(field) or {}).items():
            assert desired["metadata"].get(field, {}).get(key) == value, f"metadata.{field}.{key}"
    assert desired["metadata"]["name"] == airflow["metadata"]["name"]
    assert desired["metadata"]["namespace"] == NAMESPACE
    for field in ("args", "command", "image"):
        if base(airflow).get(field):
            assert base(desired)[field] == base(airflow)[field], field
    for name, var in env(airflow).items():
        assert env(desired).get(name) == var, f"env {name}"


def assert_platform(desired: dict) -> None:
    """The template's platform settings: env vars, envFrom, volumes, service account."""
    for name in TEMPLATE_ENV:
        assert name in env(desired), name
    assert {"secretRef": {"name": "infrared-photon-7780-env"}} in base(desired)["envFrom"]
    assert {v["name"] for v in desired["spec"]["volumes"]} >= {"logs", "config"}
    assert desired["spec"]["serviceAccountName"] == "infrared-photon-7780-worker"
    assert desired["spec"]["restartPolicy"] == "Never"
    assert desired["spec"]["securityContext"] == {"runAsUser": 50000, "fsGroup": 50000}
    kubernetes_validate.validate(desired, po.K8S_VERSION, strict=True)


@pytest.fixture(scope="module", autouse=True)
def binary(podtailor):
    return podtailor


def test_the_dags_name_their_overrides_in_pod_override():
    for dag, task_id, names in (
        (dags.resources_dag, "bash_resource_requirements_override_example", "resource-requirements"),
        (dags.secret_dag, "read_my_secret", "secret-env"),
    ):
        override = dag.get_task(task_id).executor_config["pod_override"]
        assert override.metadata.annotations == {po.OVERRIDE_ANNOTATION: names}
        assert override.spec is None, "the task carries no resources or secrets itself"


def test_executor_pod_asking_half_a_cpu_and_1024mi():
    airflow = executor_pod(dags.resources_dag, "bash_resource_requirements_override_example")
    # what Airflow built: its labels, args and env, the override annotation, no image
    assert airflow["metadata"]["labels"]["dag_id"] == "example_kubernetes_executor_pod_override_sources"
    assert airflow["metadata"]["labels"]["task_id"] == "bash_resource_requirements_override_example"
    assert airflow["metadata"]["labels"]["try_number"] == "1"
    assert airflow["metadata"]["annotations"][po.OVERRIDE_ANNOTATION] == "resource-requirements"
    assert env(airflow)["AIRFLOW_IS_K8S_EXECUTOR_POD"] == {"name": "AIRFLOW_IS_K8S_EXECUTOR_POD", "value": "True"}
    assert "image" not in base(airflow)

    desired = render(airflow)
    assert base(desired)["resources"] == HALF_CPU_1GI
    assert "MY_SECRET" not in env(desired)
    assert base(desired)["image"] == TEMPLATE_IMAGE
    assert base(desired)["args"] == [
        "airflow", "tasks", "run", "example_kubernetes_executor_pod_override_sources",
        "bash_resource_requirements_override_example", RUN_ID, "--local",
    ]
    assert_kept(airflow, desired)
    assert_platform(desired)


def test_executor_pod_reading_my_secret():
    # with worker_container_repository set, Airflow's image is the pod's own and beats the template's
    airflow = executor_pod(dags.secret_dag, "read_my_secret", kube_image=TEAM_IMAGE)
    assert airflow["metadata"]["labels"]["dag_id"] == "test-secret"
    assert airflow["metadata"]["labels"]["task_id"] == "read_my_secret"

    desired = render(airflow)
    assert env(desired)["MY_SECRET"] == MY_SECRET
    # the template's resources: the task asked for none
    assert base(desired)["resources"] == {"requests": {"cpu": "100m", "memory": "384Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    assert base(desired)["image"] == TEAM_IMAGE
    assert base(desired)["args"][:4] == ["airflow", "tasks", "run", "test-secret"]
    assert_kept(airflow, desired)
    assert_platform(desired)


def test_kubernetes_pod_operator_pod_reading_my_secret():
    airflow = operator_pod()
    desired = render(airflow)
    assert env(desired)["MY_SECRET"] == MY_SECRET
    assert base(desired)["resources"] == HALF_CPU_1GI
    assert base(desired)["command"] == ["sh", "-c", 'test -n "$MY_SECRET"']
    assert desired["metadata"]["labels"]["team"] == "data"
    assert_kept(airflow, desired)
    assert_platform(desired)


def test_secrets_expose_what_airflows_secret_exposes(tmp_path):
    """A PodOverride's secrets against Airflow's Secret with the same arguments: the same env
    var (its name upper-cased by Airflow) and the same envFrom entry."""
    secrets = [("env", "my_token", "api-credentials", "token"), ("env", None, "team-env", None)]
    (tmp_path / "airflow-secrets.yaml").write_text(po.dump_yaml({
        "apiVersion": "podtailor.dev/v1alpha1", "kind": "PodOverride",
        "metadata": {"name": "airflow-secrets", "namespace": NAMESPACE},
        "spec": {"secrets": [
            {k: v for k, v in (("deployType", t), ("deployTarget", target), ("secret", name), ("key", key)) if v}
            for t, target, name, key in secrets
        ]},
    }))
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": NAMESPACE, "annotations": {po.OVERRIDE_ANNOTATION: "airflow-secrets"}},
           "spec": {"containers": [{"name": "base"}]}}
    desired = render(pod, tmp_path)
    by_airflow = as_dict(Secret("env", "my_token", "api-credentials", "token").to_env_secret())
    assert by_airflow["name"] == "MY_TOKEN"
    assert env(desired)["MY_TOKEN"] == by_airflow
    assert as_dict(Secret("env", None, "team-env").to_env_from_secret()) in base(desired)["envFrom"]


def test_airflow_pods_py_prints_the_same_pods():
    """`python tests/oracle/airflow_pods.py`, which the control-plane tier runs, prints the pods
    these tests render (the operator's name has a random suffix)."""
    proc = subprocess.run(
        [sys.executable, str(Path(airflow_pods.__file__))],
        capture_output=True, text=True, timeout=po.SUBPROCESS_TIMEOUT, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert sorted(printed) == ["executor_resources", "executor_secret", "operator"]
    assert printed["executor_resources"] == executor_pod(dags.resources_dag, "bash_resource_requirements_override_example")
    assert printed["executor_secret"] == executor_pod(dags.secret_dag, "read_my_secret", kube_image=TEAM_IMAGE)
    ours = operator_pod()
    assert printed["operator"]["spec"] == ours["spec"]
    assert printed["operator"]["metadata"]["annotations"] == ours["metadata"]["annotations"]
