"""What `make e2e` relies on, checked without a cluster: the kind configuration, the image tag
and the overlay the script installs, and the names tests/e2e.rs looks for."""

from __future__ import annotations

import re

import yaml

from install import ROOT

SCRIPT = (ROOT / "scripts" / "e2e.sh").read_text()
SUITE = (ROOT / "tests" / "e2e.rs").read_text()


def kind_config() -> dict:
    return yaml.safe_load((ROOT / "tests" / "e2e" / "kind.yaml").read_text())


def test_kind_config_pins_one_node_image_by_digest_and_has_two_workers():
    config = kind_config()
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["name"] == "podtailor-e2e"
    roles = [n["role"] for n in config["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") == 2
    images = {n["image"] for n in config["nodes"]}
    assert len(images) == 1
    (image,) = images
    assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", image), image


def test_the_script_uses_the_cluster_the_suite_talks_to():
    name = kind_config()["name"]
    assert f"readonly cluster={name}" in SCRIPT
    assert f'const CONTEXT: &str = "kind-{name}";' in SUITE


def test_the_image_the_script_builds_is_the_one_the_deployment_runs(base):
    (deployment,) = base.all("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    tag = re.search(r"readonly image=\$\{IMAGE:-([^}]+)\}", SCRIPT)
    assert tag and tag.group(1) == container["image"]
    assert container["imagePullPolicy"] == "IfNotPresent", "kind load puts the image on the nodes; nothing to pull"


def test_the_script_installs_the_certs_overlay_and_runs_the_ignored_suite():
    assert "apply -k certs" in SCRIPT
    assert "PODTAILOR_E2E=1 cargo test --locked --test e2e -- --ignored" in SCRIPT
    assert (ROOT / "certs" / "kustomization.yaml").is_file()


def test_the_names_the_suite_uses_exist_in_the_install(certs, base):
    rendered = certs["rendered"]
    (secret,) = [s for s in rendered.all("Secret") if s["metadata"]["name"] == "podtailor-tls"]
    assert secret["metadata"]["namespace"] == "podtailor-system"
    assert '"podtailor-tls"' in SUITE
    (hook,) = base.all("MutatingWebhookConfiguration")
    assert f'hooks.get("{hook["metadata"]["name"]}")' in SUITE
    (deployment,) = base.all("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels.get("app.kubernetes.io/name") == "podtailor"
    assert '"app.kubernetes.io/name=podtailor"' in SUITE
    ports = {p["containerPort"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    assert 8081 in ports and ":8081/proxy/metrics" in SUITE


def test_every_e2e_scenario_is_ignored_outside_make_e2e():
    tests = re.findall(r"#\[tokio::test\]\n#\[ignore = \"needs a kind cluster: make e2e\"\]\nasync fn (\w+)", SUITE)
    assert len(tests) == SUITE.count("#[tokio::test]") >= 7
