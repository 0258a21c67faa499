"""What foundry prints: status lines and tables on stderr, results on stdout.

Progress bars are `foundry.progress` (also stderr); `--quiet` turns both off, warnings stay.

The CLI prints; the Python API (`foundry.train()` and the other functions in
`foundry/__init__.py`) is quiet: it runs inside `output(console=False)`, where a
Reporter's lines go to the `foundry` logger instead (status at INFO, warnings at
WARNING; Python shows warnings even with logging unconfigured, and
`logging.basicConfig(level=logging.INFO)` shows the rest) and progress bars stay off
unless FOUNDRY_PROGRESS=1. `verbose=True` on those functions prints as the CLI does.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("foundry")

# Context-local, as `foundry.progress.silenced`: the choice has to reach a Reporter made
# deep inside any stage, and ends with the `with` block (the CLI never changes it).
_console: ContextVar[bool] = ContextVar("foundry_console_output", default=True)


@contextmanager
def output(*, console: bool) -> Iterator[None]:
    """Inside the block, status lines, tables and bars go to the terminal (`console`,
    what the CLI does) or to the `foundry` logger with bars off (the Python API)."""
    token = _console.set(console)
    try:
        yield
    finally:
        _console.reset(token)


def console_output() -> bool:
    """Whether status output goes to the terminal here (False: to the logger)."""
    return _console.get()


@dataclass
class Reporter:
    """Prints status lines and metric tables unless `quiet`."""

    quiet: bool = False
    _console: Any = field(default=None, init=False, repr=False)

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)
        return self._console

    def info(self, message: str) -> None:
        if self.quiet:
            return
        if console_output():
            self.console.print(message, markup=False, soft_wrap=True)
        else:
            logger.info(message)

    def warn(self, message: str) -> None:
        if console_output():
            self.console.print(f"[yellow]warning:[/yellow] {message}")
        else:
            logger.warning(message)

    def table(self, renderable: Any, *, width: int | None = None) -> None:
        """A rich table (or any renderable) on stderr, at least `width` columns wide (a
        pipe reports 80 columns: a wider table wraps less badly than it folds); in the
        logger, as its plain text."""
        if self.quiet:
            return
        from rich.console import Console

        if console_output():
            console = self.console
            if width is not None and console.width < width:
                console = Console(file=console.file, width=width, highlight=False)
            console.print(renderable)
        elif logger.isEnabledFor(logging.INFO):
            buffer = io.StringIO()
            Console(file=buffer, width=width or 120, no_color=True).print(renderable)
            logger.info(buffer.getvalue().rstrip())

    def metrics(self, metrics: dict[str, Any], task: Any, title: str) -> None:
        if self.quiet:
            return
        from foundry.evaluation import confusion_table, metrics_table

        self.table(metrics_table(metrics, title=title))
        matrix = metrics.get("confusion_matrix")
        if matrix is not None and len(task.classes) <= 20:
            self.table(confusion_table(matrix, task.classes))
