"""The README runs as written: its marked blocks, in order, in a scratch copy of the
repository's examples, with `foundry` and `python` on the PATH.

A block is marked by an HTML comment on the line before its fence:

    <!-- readme-test: run -->          bash, run to completion; any failing line fails
    <!-- readme-test: background -->   bash, a server: started, and the next blocks run
                                       once /readyz answers (stopped at the end)
    <!-- readme-test: python -->       Python, run with the same interpreter

Port 8000 in a block is replaced by a free port. Unmarked blocks are not run (they need
data, time or machines a test does not have).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from foundry.serve.loadtest import Server, free_port

ROOT = Path(__file__).resolve().parents[1]
MARKED = re.compile(
    r"<!-- readme-test: (run|background|python) -->\n```(\w+)\n(.*?)\n```", re.DOTALL
)


def marked_blocks(text: str) -> list[tuple[str, str]]:
    """(kind, code) of every marked block, in order."""
    return [(kind, code) for kind, _lang, code in MARKED.findall(text)]


def test_the_markers_are_found():
    text = (ROOT / "README.md").read_text()
    blocks = marked_blocks(text)
    assert text.count("<!-- readme-test:") == len(blocks), "a marker without a fenced block"
    assert [kind for kind, _ in blocks].count("background") >= 1
    assert any("foundry init" in code for _, code in blocks)


@pytest.fixture
def scratch(tmp_path):
    """A scratch 'checkout': examples/ copied, a bin/ with `foundry` and `python`."""
    shutil.copytree(
        ROOT / "examples",
        tmp_path / "examples",
        ignore=shutil.ignore_patterns("data", "runs", ".foundry", "__pycache__"),
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # scripts, not symlinks: a link to a venv's python would lose the venv
    for name, run in (("python", ""), ("foundry", " -m foundry")):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}"{run} "$@"\n')
        (bin_dir / name).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "FOUNDRY_HOME": str(tmp_path / ".foundry"),
        "FOUNDRY_PROGRESS": "0",
    }
    env.pop("FOUNDRY_DATABASE_URL", None)
    return tmp_path, env


@pytest.mark.slow
def test_every_marked_readme_block_runs(scratch):
    work, env = scratch
    port = str(free_port())
    servers: list[Server] = []
    try:
        for i, (kind, code) in enumerate(marked_blocks((ROOT / "README.md").read_text())):
            code = code.replace("8000", port)
            if kind == "background":
                server = Server(
                    ["bash", "-euo", "pipefail", "-c", code],
                    env=env,
                    log=work / f"block-{i}.log",
                    port=int(port),
                    cwd=work,
                )
                server.start()
                servers.append(server)
                server.wait_ready()
                continue
            command = (
                [sys.executable, "-c", code]
                if kind == "python"
                else ["bash", "-euo", "pipefail", "-c", code]
            )
            done = subprocess.run(
                command, cwd=work, env=env, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, f"block {i}:\n{code}\n---\n{done.stderr[-3000:]}"
            if "/predict" in code:  # curl -s prints the error body instead of failing
                assert '"predictions"' in done.stdout, done.stdout
    finally:
        for server in servers:
            server.stop()
