"""What docs/development.md says of `make bench-load` (benches/load.py), on what can be checked
without load: its usage errors (exit 2, before anything is built or started), its help, the
floor review it derives from the fixture, and the command make would run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOAD = REPO / "benches/load.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LOAD), *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def load_module():
    """benches/load.py as a module (no bytecode written beside it)."""
    spec = importlib.util.spec_from_file_location("load", LOAD)
    module = importlib.util.module_from_spec(spec)
    sys.dont_write_bytecode, before = True, sys.dont_write_bytecode
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = before
    return module


@pytest.mark.parametrize(
    "args, named",
    [
        (["--rounds", "0"], "--rounds"),
        (["--rounds", "ten"], "--rounds"),
        (["--duration", "601"], "--duration"),
        (["--connections", ""], "--connections"),
        (["--connections", "1 x 64"], "--connections"),
        (["--connections", "0"], "--connections"),
        (["--rate", "-5"], "--rate"),
        (["--bin", "/nonexistent/podtailor"], "--bin"),
        (["--bin2", str(REPO / "README.md")], "--bin2"),
        (["--no-such-flag"], "--no-such-flag"),
    ],
)
def test_usage_errors_exit_2_naming_the_argument(args, named):
    done = run(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in done.stderr.splitlines()[-1], done.stderr
    assert done.stdout == "", done.stdout


def test_help_names_the_options_and_exit_codes():
    done = run("--help")
    assert done.returncode == 0, done.stderr
    for word in ["--bin ", "--bin2", "--oha", "--connections", "--rate", "--duration", "--rounds", "--warmup",
                 "Exit codes: 0 done, 1 a problem", "2 usage"]:
        assert word in done.stdout, word


def test_lists_take_spaces_or_commas_and_rate_0_means_no_open_loop():
    args = load_module().arguments(["--connections", "1,16 64", "--rate", "0"])
    assert args.connections == [1, 16, 64] and args.rate == []


def test_the_floor_is_the_fixture_less_its_opt_in_line():
    module = load_module()
    mutate = (REPO / "examples/review.json").read_text()
    floor = module.floor_review(mutate)
    removed = [line for line in mutate.splitlines() if line not in floor.splitlines()]
    assert len(removed) == 1 and '"podtailor.dev/override"' in removed[0], removed
    assert len(floor.splitlines()) == len(mutate.splitlines()) - 1
    pod = json.loads(floor)["request"]["object"]
    assert "podtailor.dev/override" not in pod["metadata"].get("annotations", {})
    with pytest.raises(module.Problem):
        module.floor_review(floor)


def test_make_bench_load_runs_the_program_with_the_installed_oha():
    done = subprocess.run(["make", "--no-print-directory", "-n", "bench-load", "LOAD_ARGS=--rounds 1"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    lines = done.stdout.splitlines()
    assert lines[-1].endswith("benches/load.py --oha target/tools/bin/oha --rounds 1"), lines
