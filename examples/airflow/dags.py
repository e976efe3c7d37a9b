"""The seed scenario's two DAGs, as a team writes them for the KubernetesExecutor with podtailor:
each task names the PodOverrides it needs in its pod_override, and carries no resources and
no secret itself. tests/oracle/test_airflow.py builds these tasks' worker pods with Airflow's
own code and renders them."""

from __future__ import annotations

import datetime

from kubernetes.client import models as k8s

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG


def podtailor(*overrides: str) -> dict:
    """executor_config naming PodOverrides (in the workers' namespace), applied in order."""
    return {"pod_override": k8s.V1Pod(metadata=k8s.V1ObjectMeta(
        annotations={"podtailor.dev/override": ",".join(overrides)}))}


with DAG("example_kubernetes_executor_pod_override_sources", schedule=None,
         start_date=datetime.datetime(2026, 11, 24)) as resources_dag:
    # half a CPU and 1024Mi, requests equal to limits (examples/overrides/resource-requirements.yaml)
    BashOperator(task_id="bash_resource_requirements_override_example", bash_command="echo hi",
                 executor_config=podtailor("resource-requirements"))

with DAG("test-secret", schedule=None, start_date=datetime.datetime(2026, 11, 24)) as secret_dag:
    # MY_SECRET from the deployment's secret (examples/overrides/secret-env.yaml)
    BashOperator(task_id="read_my_secret", bash_command='test -n "$MY_SECRET"',
                 executor_config=podtailor("secret-env"))
