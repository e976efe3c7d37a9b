"""What `make e2e` and `make e2e-local` rely on, checked without a cluster: the kind
configuration, the image tags and the overlay the scripts install, the local node's
configuration, and the names tests/e2e.rs looks for."""

from __future__ import annotations

import re
import subprocess

import yaml

from install import ROOT

SCRIPT = (ROOT / "scripts" / "e2e.sh").read_text()
LOCAL = (ROOT / "scripts" / "e2e-local.sh").read_text()
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
    assert f'const KIND_CONTEXT: &str = "kind-{name}";' in SUITE
    assert 'std::env::var("PODTAILOR_E2E_CONTEXT")' in SUITE


def test_the_local_script_writes_the_context_it_runs_the_suite_with():
    assert "current-context: e2e-local" in LOCAL and "- name: e2e-local" in LOCAL
    assert "PODTAILOR_E2E=1 PODTAILOR_E2E_CONTEXT=e2e-local" in LOCAL
    assert "cargo test --locked --offline --test e2e -- --ignored" in LOCAL
    assert 'apply -k "$root/certs"' in LOCAL


def test_the_image_the_script_builds_is_the_one_the_deployment_runs(base):
    (deployment,) = base.all("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    tag = re.search(r"readonly image=\$\{IMAGE:-([^}]+)\}", SCRIPT)
    assert tag and tag.group(1) == container["image"]
    assert container["imagePullPolicy"] == "IfNotPresent", "kind load puts the image on the nodes; nothing to pull"
    # e2e-local imports it into containerd as docker.io/library/NAME:TAG
    name, version = container["image"].split(":")
    assert f"image {name} {version} podtailor_rootfs" in LOCAL
    assert f"for image in busybox:1.36 pause:1 {container['image']}; do" in LOCAL


def test_the_local_node_runs_on_cgroup_v1_with_containerd_1_6_and_builds_its_images():
    kubelet = yaml.safe_load((ROOT / "tests" / "e2e-local" / "kubelet.yaml").read_text())
    assert kubelet["kind"] == "KubeletConfiguration"
    assert kubelet["failCgroupV1"] is False and kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    containerd = (ROOT / "tests" / "e2e-local" / "containerd.toml").read_text()
    assert "restrict_oom_score_adj = true" in containerd
    assert 'sandbox_image = "docker.io/library/pause:1"' in containerd
    assert "image pause 1 busybox_rootfs" in LOCAL


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
    tests = re.findall(
        r"#\[tokio::test\]\n#\[ignore = \"needs a cluster: make e2e or make e2e-local\"\]\nasync fn (\w+)", SUITE
    )
    assert len(tests) == SUITE.count("#[tokio::test]") >= 8


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_the_local_script_refuses_an_unknown_argument_and_explains_itself():
    bad = run("scripts/e2e-local.sh", "--kep")
    assert bad.returncode == 2, bad
    assert "usage: e2e-local.sh [--help]" in bad.stderr and not bad.stdout
    shown = run("scripts/e2e-local.sh", "--help")
    assert shown.returncode == 0, shown
    assert "make e2e-local" in shown.stdout and "KEEP=1" in shown.stdout


def test_envtest_bin_refuses_an_unknown_argument():
    bad = run("scripts/envtest-bin.sh", "--nodes")
    assert bad.returncode == 2, bad
    assert "usage: envtest-bin.sh [--node]" in bad.stderr
