"""What foundry prints: status lines and tables on stderr, results on stdout.

Progress bars are `foundry.progress` (also stderr); `--quiet` turns both off, warnings stay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
        if not self.quiet:
            self.console.print(message, markup=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {message}")

    def metrics(self, metrics: dict[str, Any], task: Any, title: str) -> None:
        if self.quiet:
            return
        from foundry.evaluation import confusion_table, metrics_table

        self.console.print(metrics_table(metrics, title=title))
        matrix = metrics.get("confusion_matrix")
        if matrix is not None and len(task.classes) <= 20:
            self.console.print(confusion_table(matrix, task.classes))
