"""Fixtures of the independent-oracle harness: tools, the case corpus, one work dir per case."""

from __future__ import annotations

import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import podtailor_oracle as po  # noqa: E402

CASES = po.load_cases()
CHAIN_CASES = pytest.StashKey[list]()
CASE_IDS = [case_id for case_id, _ in CASES]


def pytest_generate_tests(metafunc):
    if "case_id" in metafunc.fixturenames:
        metafunc.parametrize("case_id", CASE_IDS, ids=CASE_IDS)


def pytest_report_header(config):
    return [
        f"podtailor oracle: {len(CASES)} cases, binary {po.podtailor_bin()}, "
        f"kubectl {po.kubectl_bin() or 'MISSING'}, kubernetes schema {po.K8S_VERSION}"
    ]


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = po.kubectl_bin()
    if not path:
        pytest.fail(
            "kubectl is not on PATH (set KUBECTL=/path/to/kubectl): the strategic-merge oracle "
            "needs it (used offline only, `kubectl patch --local`)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def podtailor() -> Path:
    path = po.podtailor_bin()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"podtailor binary not found at {path}: run `cargo build` first "
            "or set PODTAILOR_BIN",
            pytrace=False,
        )
    return path


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    # After -k/-m deselection: the cases whose kubectl chain will be needed.
    config.stash[CHAIN_CASES] = [
        item.callspec.params["case_id"]
        for item in items
        if getattr(item, "originalname", None) == "test_a_kubectl_chain"
    ]


@pytest.fixture(scope="session")
def case_runs(request):
    # A private temporary directory, not pytest's rotating basetemp: two suites running at the
    # same time (a developer's and `make test`) must not clean up each other's files.
    with tempfile.TemporaryDirectory(prefix="podtailor-oracle-") as tmp:
        yield from _case_runs(Path(tmp), request)


def _case_runs(root: Path, request):
    runs = {case_id: po.CaseRun(case_id, case, root / case_id) for case_id, case in CASES}
    kubectl = po.kubectl_bin()
    wanted = request.config.stash.get(CHAIN_CASES, [])
    if not (kubectl and wanted):
        yield runs
        return
    # kubectl is a subprocess per merge step: run the chains of the selected cases in the
    # background while the tests run the engine.
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="kubectl-chain") as pool:
        for case_id in wanted:
            runs[case_id].start_expected(pool, kubectl)
        yield runs
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def run_case(case_id, case_runs) -> po.CaseRun:
    return case_runs[case_id]
