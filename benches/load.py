#!/usr/bin/env python3
"""`make bench-load`: load on `podtailor serve` over HTTPS, HTTP/1.1 keep-alive, with oha.

Two reviews are POSTed to /mutate:
  floor   examples/review.json without the pod's podtailor.dev/override annotation: allowed,
          no patch (TLS, HTTP, parsing the review and the log line; no template work)
  mutate  examples/review.json: the opted-in pod, answered with its JSON patch
Closed loop at each connection count (every connection sends its next request when the answer
comes: the most the server can answer), then open loop at each fixed rate over the largest
count (oha -q, latency counted from when each request was due). Each round starts a fresh
server for each binary (two binaries alternate, the first one first in odd rounds); the report
gives each figure's median over the rounds: requests/s, p50 and p99 latency, failed requests,
the server's CPU per request and peak resident memory, and with --bin2 the ratios bin2/bin.
The server and oha are pinned to separate CPUs where this process may use two. Each review's
answer is checked once first (200, allowed, a patch for mutate only), and over each run the
server's outcome counters on /metrics may grow only by that review's outcome.
Standard library only; Linux (/proc).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # the only address this program sends to
CASES = {"floor": "unchanged", "mutate": "patched"}  # each review's outcome on /metrics
OVERRIDE_LINE = re.compile(r'^\s*"podtailor\.dev/override":.*\n', re.M)
TICKS = os.sysconf("SC_CLK_TCK")
PROG = "load.py"


class Problem(Exception):
    """A reason to stop with exit code 1."""


def numbers(low: int, high: int, zero_means_none: bool = False):
    """An argparse type: numbers from low to high, separated by spaces or commas."""

    def parse(text: str) -> list[int]:
        words = text.replace(",", " ").split()
        if zero_means_none and words == ["0"]:
            return []
        if not words or not all(w.isdigit() and low <= int(w) <= high for w in words):
            raise argparse.ArgumentTypeError(f"{text!r}: want numbers from {low} to {high}")
        return [int(w) for w in words]

    return parse


def number(low: int, high: int):
    def parse(text: str) -> int:
        if not (text.isdigit() and low <= int(text) <= high):
            raise argparse.ArgumentTypeError(f"{text!r}: want a number from {low} to {high}")
        return int(text)

    return parse


def arguments(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 done, 1 a problem (or failed requests, or wrong answers), 2 usage.",
    )
    p.add_argument("--bin", type=Path, metavar="PATH", help="serve this binary (default: build target/release/podtailor)")
    p.add_argument("--bin2", type=Path, metavar="PATH", help="a second binary, in the same rounds; adds the ratios bin2/bin")
    p.add_argument("--oha", type=Path, metavar="PATH", help="the load tool (default: target/tools/bin/oha, which make bench-load installs)")
    p.add_argument("--connections", type=numbers(1, 1024), default=[1, 16, 64], metavar="LIST", help='closed loop: connection counts (default: "1 16 64")')
    p.add_argument("--rate", type=numbers(1, 100000, zero_means_none=True), default=[2000, 6000], metavar="LIST", help='open loop: requests/s over the largest count (default: "2000 6000"; 0: none)')
    p.add_argument("--duration", type=number(1, 600), default=10, metavar="S", help="seconds a run (default: 10)")
    p.add_argument("--rounds", type=number(1, 9), default=3, metavar="N", help="rounds, for medians (default: 3)")
    p.add_argument("--warmup", type=number(0, 60), default=2, metavar="S", help="seconds of unreported mutate load before each server's runs (default: 2)")
    args = p.parse_args(argv)
    for name in ("bin", "bin2"):
        path = getattr(args, name)
        if path is not None and not (path.is_file() and os.access(path, os.X_OK)):
            p.error(f"--{name} {path}: not an executable file")
        setattr(args, name, path and path.resolve())
    args.oha = args.oha.resolve() if args.oha else REPO / "target/tools/bin/oha"
    return args


def floor_review(mutate: str) -> str:
    """The mutate review with its opt-in annotation's line taken out: the same pod, not opted in."""
    floor, taken = OVERRIDE_LINE.subn("", mutate)
    if taken != 1 or "podtailor.dev/override" in floor:
        raise Problem("cannot take the podtailor.dev/override line out of examples/review.json")
    json.loads(floor)  # the annotation stood alone, so no comma is left behind
    return floor


def pinning() -> tuple[set[int] | None, set[int] | None, str]:
    """The CPUs for the server and for oha: one each where this process may use two."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None, f"server and oha share cpu {cpus[0]} (the only one this process may use)"
    return {cpus[0]}, {cpus[1]}, f"server pinned to cpu {cpus[0]}, oha to cpu {cpus[1]} ({len(cpus)} cpus usable)"


def pinned(cpus: set[int] | None):
    """A preexec_fn that pins the child (and so all its threads) to `cpus`."""
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def admin_get(port: int, path: str) -> tuple[int, str]:
    """A plain-HTTP GET on the admin port: status and body."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def proc_fields(pid: int) -> tuple[int, dict[str, int]]:
    """The process's user+system CPU ticks, and its /proc status fields in kB."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            status[key] = int(value.split()[0])
    return int(stat[11]) + int(stat[12]), status


def busy_ticks() -> int:
    """The ticks all CPUs spent busy (user, nice, system, irq, softirq, steal)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return f[0] + f[1] + f[2] + f[5] + f[6] + f[7]


def children_ticks() -> float:
    """CPU seconds of this process's finished children (oha runs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Server:
    """`podtailor serve` on free ports with the examples, pinned to `cpus`."""

    def __init__(self, binary: Path, cpus: set[int] | None, work: Path):
        self.log = work / "server.log"
        for _ in range(5):  # a port taken between free_port() and the bind: try others
            self.port, self.admin = free_port(), free_port()
            if self.port == self.admin:
                continue
            cmd = [str(binary), "serve", "--template", "examples/template.yaml", "--overrides", "examples/overrides",
                   "--tls-cert", "certs/tls.crt", "--tls-key", "certs/tls.key", "--log-format", "json",
                   "--listen", f"{HOST}:{self.port}", "--admin-listen", f"{HOST}:{self.admin}"]
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pinned(cpus))
            if self.wait_ready():
                return
            if "in use" not in self.log.read_text(errors="replace"):
                break
        raise Problem(f"{binary} serve did not become ready; its log ends:\n{self.tail()}")

    def wait_ready(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if admin_get(self.admin, "/readyz")[0] == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        return False

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])

    def outcomes(self) -> dict[str, float]:
        """podtailor_admission_requests_total of the mutate webhook, by outcome."""
        text = admin_get(self.admin, "/metrics")[1]
        found = re.findall(r'^podtailor_admission_requests_total\{webhook="mutate",outcome="(\w+)"\} (\S+)$', text, re.M)
        if not found:
            raise Problem("no podtailor_admission_requests_total on /metrics")
        return {outcome: float(n) for outcome, n in found}

    def check_answer(self, case: str, body: bytes) -> None:
        """One POST: 200, allowed, and a patch for mutate only."""
        tls = ssl.create_default_context(cafile=str(REPO / "certs/ca.crt"))
        conn = http.client.HTTPSConnection(HOST, self.port, context=tls, timeout=10)
        conn.request("POST", "/mutate", body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        text = answer.read().decode(errors="replace")
        conn.close()
        response = json.loads(text).get("response", {}) if answer.status == 200 else {}
        if answer.status != 200 or response.get("allowed") is not True or ("patch" in response) != (case == "mutate"):
            raise Problem(f"{case}: the answer is not 200, allowed, {'with' if case == 'mutate' else 'without'} a patch: "
                          f"HTTP {answer.status} {text[:300]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def oha_run(oha: Path, cpus: set[int] | None, server: Server, body: Path, conns: int, secs: int, rate: int | None) -> dict:
    """One oha run; its figures and the server's CPU, peak memory and outcomes over it."""
    cmd = [str(oha), "--no-tui", "--output-format", "json", "--http-version", "1.1", "--cacert", str(REPO / "certs/ca.crt"),
           "-c", str(conns), "-z", f"{secs}s", "--wait-ongoing-requests-after-deadline",
           "-m", "POST", "-T", "application/json", "-D", str(body)]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    cmd.append(f"https://{HOST}:{server.port}/mutate")
    try:  # VmHWM back to the current VmRSS, so the peak is this run's
        Path(f"/proc/{server.proc.pid}/clear_refs").write_text("5")
    except OSError:
        pass
    before = server.outcomes()
    srv0, oha0, busy0, wall0 = proc_fields(server.proc.pid)[0], children_ticks(), busy_ticks(), time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60, preexec_fn=pinned(cpus))
    srv1, status = proc_fields(server.proc.pid)
    oha1, busy1, wall = children_ticks(), busy_ticks(), time.monotonic() - wall0
    if done.returncode != 0:
        raise Problem(f"oha failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
    after = server.outcomes()
    report = json.loads(done.stdout)
    codes = {int(code): n for code, n in report["statusCodeDistribution"].items()}
    answered = sum(codes.values())
    srv_s = (srv1 - srv0) / TICKS
    return {
        "req/s": answered / report["summary"]["total"],
        "p50 ms": report["latencyPercentiles"]["p50"] * 1000,
        "p99 ms": report["latencyPercentiles"]["p99"] * 1000,
        "failed": sum(n for code, n in codes.items() if code >= 400) + sum(report["errorDistribution"].values()),
        "peak MiB": status["VmHWM"] / 1024,
        "µs/req": srv_s * 1e6 / max(answered, 1),
        "other%": max(0.0, (busy1 - busy0) / TICKS - srv_s - (oha1 - oha0)) / wall * 100,
        "wrong": {k: after[k] - before.get(k, 0) for k in after if after[k] > before.get(k, 0)},
    }


COLUMNS = {"req/s": "{:8.0f}", "p50 ms": "{:7.3f}", "p99 ms": "{:7.3f}", "failed": "{:6d}", "peak MiB": "{:8.1f}",
           "µs/req": "{:6.0f}", "other%": "{:6.0f}"}


def summary(runs: list[dict]) -> dict:
    """Medians over the rounds; failed summed, peak memory the largest."""
    s = {k: statistics.median(r[k] for r in runs) for k in COLUMNS}
    s["failed"] = sum(r["failed"] for r in runs)
    s["peak MiB"] = max(r["peak MiB"] for r in runs)
    return s


def main(argv: list[str]) -> int:
    args = arguments(argv)
    os.chdir(REPO)
    if not os.access(args.oha, os.X_OK):
        raise Problem(f"{args.oha}: no oha there; make bench-load installs it (or give --oha PATH)")
    if args.bin is None:
        print(f"{PROG}: cargo build --release --locked", file=sys.stderr)
        if subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"]).returncode != 0:
            raise Problem("the release build failed")
        args.bin = REPO / "target/release/podtailor"
    if not all(Path("certs", f).is_file() for f in ("ca.crt", "tls.crt", "tls.key")):
        if subprocess.run(["scripts/certs.sh"]).returncode != 0:
            raise Problem("scripts/certs.sh failed")
    binaries = {"bin": args.bin} | ({"bin2": args.bin2} if args.bin2 else {})
    server_cpus, oha_cpus, pin_note = pinning()
    top = max(args.connections)
    # (case, connections, rate or None): closed loop at each count, then open loop at each rate
    runs = [(c, n, None) for n in args.connections for c in CASES] + [(c, top, q) for q in args.rate for c in CASES]
    results = {(b, *run): [] for b in binaries for run in runs}
    wrong = []
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="podtailor-load.") as tmp:
        work = Path(tmp)
        mutate = Path("examples/review.json").read_text()
        bodies = {"mutate": work / "mutate.json", "floor": work / "floor.json"}
        bodies["mutate"].write_text(mutate)
        bodies["floor"].write_text(floor_review(mutate))
        for round_ in range(1, args.rounds + 1):
            order = list(binaries) if round_ % 2 else list(binaries)[::-1]
            for b in order:
                server = Server(binaries[b], server_cpus, work)
                try:
                    for case in CASES:
                        server.check_answer(case, bodies[case].read_bytes())
                    if args.warmup:
                        oha_run(args.oha, oha_cpus, server, bodies["mutate"], 16, args.warmup, None)
                    for case, conns, rate in runs:
                        how = f"{rate} req/s over {conns} connections" if rate else f"{conns} connection(s)"
                        print(f"{PROG}: round {round_}/{args.rounds}: {b} {case}, {how}, {args.duration} s", file=sys.stderr)
                        r = oha_run(args.oha, oha_cpus, server, bodies[case], conns, args.duration, rate)
                        if server.proc.poll() is not None:
                            raise Problem(f"the server exited during the run; its log ends:\n{server.tail()}")
                        if set(r["wrong"]) - {CASES[case]}:
                            wrong.append(f"round {round_} {b} {case} {how}: outcomes {r['wrong']}")
                        results[(b, case, conns, rate)].append(r)
                finally:
                    server.stop()

    print()
    for b, path in binaries.items():
        version = subprocess.run([str(path), "--version"], capture_output=True, text=True).stdout.strip()
        print(f"{b:4}  {path} ({version})")
    load_at_end = os.getloadavg()
    print(f"POST /mutate on https://{HOST}, HTTP/1.1 keep-alive, oha; {pin_note}")
    print(f"load average {load_at_start[0]:.2f} at the start, {load_at_end[0]:.2f} at the end; RUST_LOG {os.environ.get('RUST_LOG', 'unset')}")
    print(f"{args.duration} s a run; medians of {args.rounds} round(s); failed: the sum; peak MiB: the largest")
    print()
    header = f"{'binary':6} {'case':6} {'conns':>5} {'rate':>6} " + " ".join(f"{k:>{len(f.format(0))}}" for k, f in COLUMNS.items())
    print(header)
    medians = {}
    for b in binaries:
        for case, conns, rate in runs:
            m = medians[(b, case, conns, rate)] = summary(results[(b, case, conns, rate)])
            cells = " ".join(f.format(m[k]) for k, f in COLUMNS.items())
            print(f"{b:6} {case:6} {conns:5} {rate or 'closed':>6} {cells}")
    print()
    print("rate     closed: closed loop; a number: open loop at that many requests/s (latency from when each was due)")
    print("failed   HTTP status >= 400 and errors (connect, TLS, timeouts), as oha counts them")
    print("peak MiB the server's VmHWM over the run (reset through /proc/PID/clear_refs before it)")
    print("µs/req   the server's user+system CPU time per answered request")
    print("other%   CPU used by everything but the server and oha during the run, in % of one CPU")
    for b in binaries:
        line = " ".join(f"{medians[(b, 'mutate', n, None)]['req/s'] / medians[(b, 'floor', n, None)]['req/s']:.2f} ({n})"
                        for n in args.connections)
        print(f"{b}: mutate/floor throughput {line}")
    if args.bin2:
        def ratio(key: str, n: int) -> float:
            return medians[("bin2", "mutate", n, None)][key] / medians[("bin", "mutate", n, None)][key]

        print("bin2/bin, mutate, closed loop: throughput " + " ".join(f"{ratio('req/s', n):.3f} ({n})" for n in args.connections)
              + "; CPU per request " + " ".join(f"{ratio('µs/req', n):.3f} ({n})" for n in args.connections))
        each = "; ".join(" ".join(f"{b2['req/s'] / b1['req/s']:.3f}" for b1, b2 in
                                  zip(results[("bin", "mutate", n, None)], results[("bin2", "mutate", n, None)])) + f" ({n})"
                         for n in args.connections)
        print(f"bin2/bin mutate throughput in each round: {each}")
    failed = sum(m["failed"] for m in medians.values())
    for line in wrong:
        print(f"{PROG}: wrong answers: {line}", file=sys.stderr)
    if failed:
        print(f"{PROG}: {failed} failed request(s)", file=sys.stderr)
    return 1 if failed or wrong else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Problem as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
