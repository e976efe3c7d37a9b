"""What the README says of `make run` and `make render`: checked on the commands make would run
(`make -n`: nothing is built or served), and on `make run` against a port in use (nothing built,
no certificate written; serve stops at once)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def planned(*args: str) -> str:
    """The recipe lines `make ARGS` would run."""
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def serve_line(text: str) -> str:
    """The line that runs serve (not the one that echoes it)."""
    lines = text.replace("\\\n", " ").splitlines()
    return next(line for line in lines if " serve " in line and not line.startswith("echo "))


def test_make_run_listens_where_it_is_told():
    line = serve_line(planned("run", "LISTEN=127.0.0.1:9443", "ADMIN_LISTEN=127.0.0.1:9081"))
    assert "--listen 127.0.0.1:9443" in line and "--admin-listen 127.0.0.1:9081" in line, line


def test_make_run_keeps_off_the_port_kubectl_falls_back_to():
    line = serve_line(planned("run"))
    assert "--listen 127.0.0.1:8443" in line and "--admin-listen 127.0.0.1:8081" in line, line
    assert ":8080" not in line, line


def test_make_render_prints_the_patch_of_the_review():
    render = next(line for line in planned("render").splitlines() if " render " in line)
    assert "-o patch" in render and render.endswith("examples/review.json"), render


def test_make_run_says_how_to_pick_other_addresses_when_serve_fails():
    binary = Path(os.environ.get("PODTAILOR_BIN", REPO / "target/debug/podtailor")).resolve()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # -o: build and certs are taken as done (nothing built, no certificate written)
        done = subprocess.run(
            ["make", "--no-print-directory", "-o", "build", "-o", "certs", "run", f"BIN={binary}",
             f"LISTEN=127.0.0.1:{port}", "ADMIN_LISTEN=127.0.0.1:0"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )
    assert done.returncode != 0, done.stdout + done.stderr
    want = f"make run: other addresses: make run LISTEN=HOST:PORT ADMIN_LISTEN=HOST:PORT (now LISTEN=127.0.0.1:{port} ADMIN_LISTEN=127.0.0.1:0)"
    assert want in done.stderr.splitlines(), done.stderr
