#!/usr/bin/env python3
"""Prints the medians of a criterion group's benchmarks and their ratio to the floor."""
import json
import pathlib
import sys

group = pathlib.Path(sys.argv[1])
medians = {}
for estimates in sorted(group.glob("*/new/estimates.json")):
    bench = json.loads((estimates.parent / "benchmark.json").read_text())["function_id"]
    medians[bench] = json.loads(estimates.read_text())["median"]["point_estimate"]
floor = next((v for k, v in medians.items() if k.startswith("floor")), None)
if floor is None:
    sys.exit(f"no floor benchmark under {group}")
for name, median in medians.items():
    print(f"{name:45s} median {median / 1000:9.2f} µs   {median / floor:5.2f} x floor")
