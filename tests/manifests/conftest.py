"""Fixtures of the install tests: the base and both overlays, each rendered once."""

from __future__ import annotations

import hashlib
import pathlib
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from install import ROOT, Rendered, kustomize  # noqa: E402


@pytest.fixture(scope="session")
def base() -> Rendered:
    return Rendered(kustomize(ROOT / "manifests"))


@pytest.fixture(scope="session")
def cert_manager() -> Rendered:
    return Rendered(kustomize(ROOT / "manifests" / "cert-manager"))


def snapshot(directory: pathlib.Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() + f" {p.stat().st_mtime_ns}"
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> dict:
    """The certs/ overlay rendered with fresh certificates from scripts/certs.sh, made in a
    temporary copy of the repository's manifests/ and certs/kustomization.yaml, so the
    developer's certs/ is never touched. Gives the overlay's directory, its rendering, and
    snapshots of the real certs/ before and after."""
    before = snapshot(ROOT / "certs")
    root = tmp_path_factory.mktemp("install")
    shutil.copytree(ROOT / "manifests", root / "manifests")
    (root / "certs").mkdir()
    shutil.copy(ROOT / "certs" / "kustomization.yaml", root / "certs")
    made = subprocess.run(
        [str(ROOT / "scripts" / "certs.sh"), "--out", str(root / "certs")], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    rendered = Rendered(kustomize(root / "certs"))
    return {"dir": root / "certs", "rendered": rendered, "before": before, "after": snapshot(ROOT / "certs")}


@pytest.fixture(scope="session")
def overlays(base, certs, cert_manager) -> dict[str, Rendered]:
    return {"base": base, "certs": certs["rendered"], "cert-manager": cert_manager}
