"""The seed scenario's worker pods, built by Airflow's own code (docs/airflow.md).

The two tasks of examples/airflow/dags.py get their pods as the KubernetesExecutor builds them
(`PodGenerator.construct_pod` over examples/airflow/pod_template_file.yaml and the task's
`executor_config["pod_override"]`), and a KubernetesPodOperator's pod comes from its own
`build_pod_request_obj`. Each pod is the JSON Airflow's Kubernetes client sends to the API
server (`sanitize_for_serialization`).

Used by tests/oracle/test_airflow.py (through `podtailor render`) and by the control-plane tier
(tests/envtest/scenarios.rs, which creates the pods in a real API server):

    python tests/oracle/airflow_pods.py     # {"CASE": POD, ...} as JSON on stdout
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Run as a script: the pods alone on stdout, Airflow's own logging (it writes to stdout) on stderr.
_OUT = sys.stdout
if __name__ == "__main__":
    _OUT = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

# Airflow reads its configuration at import: a home of its own, never the developer's.
_HOME = tempfile.mkdtemp(prefix="podtailor-airflow-home-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = _HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from kubernetes.client import ApiClient  # noqa: E402
from kubernetes.client import models as k8s  # noqa: E402

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator  # noqa: E402
from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator  # noqa: E402

REPO = Path(__file__).resolve().parent.parent.parent
AIRFLOW_EXAMPLES = REPO / "examples" / "airflow"
sys.path.insert(0, str(AIRFLOW_EXAMPLES))

import dags  # noqa: E402  (examples/airflow/dags.py)

NAMESPACE = "airflow"
RUN_ID = "manual__2026-11-24T00:00:00+00:00"
OVERRIDE_ANNOTATION = "podtailor.dev/override"
TEMPLATE_IMAGE = "quay.io/astronomer/ap-airflow:2.10.5"
# [kubernetes_executor] worker_container_repository:tag, set for the secret task's pod
TEAM_IMAGE = "registry.example.com/airflow:2.10.5-team"


def as_dict(pod: k8s.V1Pod) -> dict:
    """The pod as Airflow's Kubernetes client sends it."""
    return ApiClient().sanitize_for_serialization(pod)


def executor_pod(dag, task_id: str, kube_image: str | None = None) -> dict:
    """The worker pod the KubernetesExecutor creates for `task_id` (kubernetes_executor_utils:
    construct_pod with the task's pod_override, the pod_template_file as the base)."""
    task = dag.get_task(task_id)
    pod = PodGenerator.construct_pod(
        dag_id=dag.dag_id,
        task_id=task_id,
        pod_id=f"{dag.dag_id}-{task_id}".replace("_", "-")[:60],
        try_number=1,
        kube_image=kube_image,  # None unless [kubernetes_executor] worker_container_repository is set
        date=None,
        args=["airflow", "tasks", "run", dag.dag_id, task_id, RUN_ID, "--local"],
        pod_override_object=task.executor_config["pod_override"],
        base_worker_pod=PodGenerator.deserialize_model_file(str(AIRFLOW_EXAMPLES / "pod_template_file.yaml")),
        namespace=NAMESPACE,
        scheduler_job_id="7",
        run_id=RUN_ID,
    )
    return as_dict(pod)


def operator_pod() -> dict:
    """A KubernetesPodOperator's pod naming both example PodOverrides."""
    op = KubernetesPodOperator(
        task_id="read_my_secret",
        namespace=NAMESPACE,
        image=TEMPLATE_IMAGE,
        cmds=["sh", "-c", 'test -n "$MY_SECRET"'],
        annotations={OVERRIDE_ANNOTATION: "secret-env,resource-requirements"},
        labels={"team": "data"},
        do_xcom_push=False,
    )
    return as_dict(op.build_pod_request_obj(dry_run=True))


def pods() -> dict[str, dict]:
    """Every pod, by case: the task asking half a CPU and 1024Mi, the task reading MY_SECRET
    (with Airflow's worker image set), the operator's pod."""
    return {
        "executor_resources": executor_pod(dags.resources_dag, "bash_resource_requirements_override_example"),
        "executor_secret": executor_pod(dags.secret_dag, "read_my_secret", kube_image=TEAM_IMAGE),
        "operator": operator_pod(),
    }


if __name__ == "__main__":
    json.dump(pods(), _OUT)
    _OUT.write("\n")
    _OUT.flush()
