"""The console blocks of README.md and docs/*.md, run: what they show is what the commands print.

A ```console block holds commands (`$ ` lines; a line ending in `\\` continues on the next) each
followed by its expected output, standard error and standard output together. In the output:

- a line `...` stands for any number of lines (zero or more), and says that output was left
  out;
- nothing else is loose: every other line must be printed as written (trailing spaces aside).

A block that cannot run here (it needs a cluster, or `make run` in another terminal) is marked
on the line before its fence with `<!-- console: not run: REASON -->`; the marker must give a
reason. `podtailor` is the binary under test (PODTAILOR_BIN, else target/debug/podtailor), run
in the repository with no PODTAILOR_* or RUST_LOG variable set.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ELIDED = "..."
NOT_RUN = re.compile(r"^<!-- console: not run: (?P<reason>.*\S.*) -->$")


@dataclass
class Block:
    where: str  # file:line of the fence
    commands: list[tuple[str, list[str]]]  # (command, expected output lines)
    not_run: str | None


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]


def blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].strip() != "```console":
            i += 1
            continue
        start = i
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.match(before)
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        found.append(
            Block(f"{path.relative_to(REPO)}:{start + 1}", parse(body), marker.group("reason") if marker else None)
        )
        i += 1
    return found


def parse(body: list[str]) -> list[tuple[str, list[str]]]:
    commands: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(body):
        line = body[i]
        if not line.startswith("$ "):
            if not commands:
                raise ValueError(f"output before any command: {line!r}")
            commands[-1][1].append(line.rstrip())
            i += 1
            continue
        command = line[2:]
        while command.endswith("\\") and i + 1 < len(body):
            i += 1
            command = command + "\n" + body[i]  # bash reads the backslash-newline as a space
        commands.append((command, []))
        i += 1
    return commands


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether `actual` is `expected` with each `...` line standing for zero or more lines."""
    if not expected:
        return not actual
    if expected[0] == ELIDED:
        return any(matches(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and actual[0] == expected[0] and matches(expected[1:], actual[1:])


def binary() -> Path:
    return Path(os.environ.get("PODTAILOR_BIN", REPO / "target/debug/podtailor")).resolve()


def run(command: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODTAILOR_") and k != "RUST_LOG"}
    env["PATH"] = f"{binary().parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    return [line.rstrip() for line in done.stdout.splitlines()]


ALL = [block for path in documents() for block in blocks(path)]


def test_there_are_blocks_to_check():
    assert sum(1 for b in ALL if b.not_run is None) >= 5


@pytest.mark.parametrize("block", ALL, ids=[b.where for b in ALL])
def test_console_block(block: Block):
    assert block.commands, f"{block.where}: a console block without a `$ ` command"
    if block.not_run is not None:
        pytest.skip(f"not run: {block.not_run}")
    assert binary().exists(), f"{binary()} is missing: build it (cargo build) or set PODTAILOR_BIN"
    for command, expected in block.commands:
        actual = run(command)
        assert matches(expected, actual), (
            f"{block.where}: `{command}` printed:\n" + "\n".join(actual) + "\n--- the block shows:\n" + "\n".join(expected)
        )


@pytest.mark.parametrize(
    "expected, actual, want",
    [
        (["a", "b"], ["a", "b"], True),
        (["a", "b"], ["a", "c"], False),
        (["a"], ["a", "b"], False),
        (["a", "...", "d"], ["a", "b", "c", "d"], True),
        (["a", "...", "d"], ["a", "d"], True),
        (["a", "...", "d"], ["a", "b", "c"], False),
        (["..."], [], True),
        ([], ["x"], False),
    ],
)
def test_an_elision_stands_for_any_lines_and_nothing_else_is_loose(expected, actual, want):
    assert matches(expected, actual) is want


def test_commands_continue_after_a_backslash_and_markers_need_a_reason():
    assert parse(["$ a \\", "  b", "out", "$ c"]) == [("a \\\n  b", ["out"]), ("c", [])]
    assert run("echo a \\\n  b") == ["a b"]
    assert NOT_RUN.match("<!-- console: not run: needs a cluster -->")
    assert not NOT_RUN.match("<!-- console: not run:  -->")
