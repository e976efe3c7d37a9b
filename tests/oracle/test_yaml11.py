"""PyYAML, the YAML 1.1 reader Airflow uses, as the oracle of every YAML podtailor prints.

An unquoted `2026-11-24` is a date to PyYAML, `yes`/`on`/`off` are booleans, `0755` is an octal
number and `12:30` a base-60 one. What podtailor prints as YAML must read back, through PyYAML,
as exactly what it prints as JSON: the same strings, keys included.
"""

from __future__ import annotations

import datetime
import json

import yaml

import podtailor_oracle as po

# Strings that YAML 1.1 resolves to another type when they are written plain.
RETYPED = [
    "2026-11-24", "2026-11-24T10:00:00Z", "2026-11-24 10:00:00", "yes", "No", "on", "OFF", "y", "n",
    "0755", "1e3", "0x1F", "1_000", "~", "null", "Null", ".inf", "-.Inf", ".nan", "12:30", "190:20:30.15",
    "true", "False", "42", "-7", "0.5", "=", "",
]

# those that are also label keys and values
LABELS = ["2026-11-24", "yes", "No", "on", "OFF", "y", "n", "0755", "1e3", "0x1F", "1_000", "null", "true", "42", "0.5"]


def podtailor(*args: str, stdin: str | None = None) -> str:
    proc = po.run([str(po.podtailor_bin()), *args], stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def launch_args(*extra: str) -> list[str]:
    args = ["launch", "--dry-run", "-n", "airflow", *extra, "--name", "etl"]
    for i, s in enumerate(RETYPED):
        args += ["--env", f"V{i}={s}"]
    for s in LABELS:
        args += ["--label", f"{s}={s}"]
    return [*args, "--", "airflow", "tasks", "run", *RETYPED]


def test_launch_dry_run_reads_back_as_its_json_and_carries_its_namespace():
    for extra in ([], ["--template", str(po.REPO / "examples" / "template.yaml"),
                       "--overrides", str(po.REPO / "examples" / "overrides")]):
        docs = list(yaml.safe_load_all(podtailor(*launch_args(*extra))))
        as_json = json.loads(podtailor(*launch_args(*extra, "-o", "json")))
        assert docs == (as_json["items"] if extra else [as_json])
        for pod in docs:
            assert pod["metadata"]["namespace"] == "airflow"
            assert pod["spec"]["containers"][0]["command"][3:] == RETYPED
            env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"] if "value" in e}
            assert [env[f"V{i}"] for i in range(len(RETYPED))] == RETYPED
            assert {k: v for k, v in pod["metadata"]["labels"].items() if k in LABELS} == {s: s for s in LABELS}


def test_render_yaml_reads_back_as_its_json_keys_included():
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "airflow",
                     "labels": {s or "empty": s for s in ("yes", "on", "off", "n", "0755", "1e3")},
                     "annotations": {"podtailor.dev/override": "", **{f"a/{s}": s for s in RETYPED}}},
        "spec": {"nodeSelector": {s: s for s in RETYPED if s},
                 "containers": [{"name": "base", "args": RETYPED}]},
    }
    args = ["render", "--template", str(po.REPO / "examples" / "template.yaml"), "-"]
    printed = podtailor(*args, stdin=json.dumps(pod))
    assert yaml.safe_load(printed) == json.loads(podtailor(*args, "-o", "json", stdin=json.dumps(pod)))
    assert yaml.safe_load(printed)["spec"]["containers"][0]["args"] == RETYPED


def only_strings_numbers_and_booleans(value, path="") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), f"{path}: key {k!r} is a {type(k).__name__}"
            only_strings_numbers_and_booleans(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            only_strings_numbers_and_booleans(v, f"{path}[{i}]")
    else:
        assert not isinstance(value, (datetime.date, float)), f"{path}: {value!r}"


def test_crd_reads_with_no_date_and_no_non_string_key():
    crd = yaml.safe_load(podtailor("crd"))
    assert crd["kind"] == "CustomResourceDefinition"
    only_strings_numbers_and_booleans(crd)
