"""TensorBoard event files in `<run_dir>/tensorboard` (`tensorboard --logdir runs`).

Written with tensorboardX (a 0.7 MB pure-Python writer; `torch.utils.tensorboard` would
need the 20 MB `tensorboard` package installed just to write). Per-epoch metrics are
scalars at step = epoch (gbm: round); the final metrics are scalars under `final/` at
step 0; the config is a text summary, as the flattened keys MLflow gets as params.
"""

from __future__ import annotations

from pathlib import Path

from foundry.extras import require

FOLDER = "tensorboard"


class TensorBoardSink:
    name = "TensorBoard"

    def __init__(self) -> None:
        require("tracking", "tensorboardX", "track.tensorboard")
        self.writer = None

    def begin(self, run_dir: Path, params: dict[str, str]) -> None:
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(run_dir / FOLDER), flush_secs=10)
        table = "\n".join(f"| {k} | {v} |" for k, v in sorted(params.items()))
        self.writer.add_text("config", f"| key | value |\n|---|---|\n{table}", 0)

    def epoch(self, step: int, metrics: dict[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def finish(self, metrics: dict[str, float], files: list[Path], failed: bool) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            self.writer.add_scalar(f"final/{key}", value, 0)
        self.writer.close()
        self.writer = None
