"""Run foundry's CLI as if no optional extra were installed (a core install).

    python tests/without_extras.py batch COMMANDS.json RESULTS.json
    python tests/without_extras.py cli serve adult --port 8000

Every top-level module of `foundry.extras.EXTRAS` (and matplotlib, which captum brings)
is hidden by wrapping each finder of `sys.meta_path`: an import of one raises
ModuleNotFoundError and `importlib.util.find_spec` returns None, exactly as when the
package is absent (torch probes for onnx that way). `batch` runs many commands in this
one process (importing torch once; a subprocess each would cost seconds apiece): each
command is {"args": [...], "env": {...}}, and its exit code, stdout and stderr go to
RESULTS.json. `cli` runs one command as `foundry` would (a server).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


class _Hidden:
    """A meta-path finder that finds nothing for hidden modules, delegating the rest."""

    def __init__(self, finder: object, hidden: set[str]) -> None:
        self.finder = finder
        self.hidden = hidden

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name.partition(".")[0] in self.hidden:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr: str) -> object:
        return getattr(self.finder, attr)


def hide_extras() -> set[str]:
    sys.path.insert(0, str(SRC))
    from foundry.extras import EXTRAS

    hidden = {module for modules in EXTRAS.values() for module in modules} | {"matplotlib"}
    leaked = sorted(m for m in sys.modules if m.partition(".")[0] in hidden)
    assert not leaked, f"imported before hiding: {leaked}"
    sys.meta_path[:] = [_Hidden(finder, hidden) for finder in sys.meta_path]
    return hidden


def run_cli(args: list[str], env: dict[str, str]) -> dict[str, object]:
    """One `foundry ARGS` in this process: exit code, stdout, stderr."""
    from foundry.cli import main

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sys.argv = ["foundry", *args]
    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as done:
        code = done.code or 0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"args": args, "code": code, "out": out.getvalue(), "err": err.getvalue()}


def main() -> None:
    hide_extras()
    mode, *rest = sys.argv[1:]
    if mode == "cli":
        from foundry.cli import main as foundry

        sys.argv = ["foundry", *rest]
        foundry()
    elif mode == "batch":
        commands = json.loads(Path(rest[0]).read_text())
        results = [run_cli(c["args"], c.get("env", {})) for c in commands]
        results.append({"modules": sorted(sys.modules)})
        Path(rest[1]).write_text(json.dumps(results))
    else:
        raise SystemExit(f"unknown mode {mode!r}: batch or cli")


if __name__ == "__main__":
    main()
