"""Helpers to drive the real `foundry` command in-process (fast) or as a subprocess."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `foundry ARGS...` through the same `main()` the console script calls."""

    def run(*args: str, cwd: Path | None = None) -> CliResult:
        from foundry.cli import main

        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["foundry", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
