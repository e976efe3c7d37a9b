#!/usr/bin/env python3
"""`make bench`: the criterion benchmark `render` run as alternating fresh processes (floor,
render, floor, render, ...), so neither inherits the other's heap and both see the same
machine; prints each run's median, the median of those medians and the ratio to the floor."""
import json
import pathlib
import statistics
import subprocess
import sys

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
GROUP = pathlib.Path("target/criterion/review")
BENCHES = {"floor": "floor: parse and re-serialise", "render": "render: parse, merge, serialise the patch"}


def median_of(name: str) -> float:
    for estimates in GROUP.glob("*/new/estimates.json"):
        if json.loads((estimates.parent / "benchmark.json").read_text())["function_id"] == name:
            return json.loads(estimates.read_text())["median"]["point_estimate"] / 1000.0
    sys.exit(f"no estimates for {name!r} under {GROUP}")


runs = {key: [] for key in BENCHES}
for round_ in range(ROUNDS):
    for key, name in BENCHES.items():
        subprocess.run(
            ["cargo", "bench", "--locked", "--bench", "render", "--", key,
             "--warm-up-time", "1", "--measurement-time", "3", "--noplot"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        runs[key].append(median_of(name))
        print(f"round {round_ + 1}: {name:45s} median {runs[key][-1]:8.2f} µs", flush=True)

floor = statistics.median(runs["floor"])
print()
for key, name in BENCHES.items():
    m = statistics.median(runs[key])
    print(f"{name:45s} median of {ROUNDS} medians {m:8.2f} µs   {m / floor:5.2f} x floor")
