"""A training process killed with SIGKILL and resumed ends like one never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = """
import json, sys, time
from pathlib import Path

import torch
from safetensors.torch import save_file

from foundry.config.schema import TrainConfig
from foundry.data.schema import TaskInfo
from foundry.training import fit

run_dir, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
g = torch.Generator().manual_seed(0)
x = torch.randn(2000, 8, generator=g)
data = {"numeric": x, "target": (x[:, 0] * x[:, 1] > 0).long()}
train = {k: v[:1600] for k, v in data.items()}
val = {k: v[1600:] for k, v in data.items()}

torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(32, 2)
)
forward = model.forward
model.forward = lambda inputs: forward(inputs["numeric"])

config = TrainConfig(
    epochs=5, batch_size=16, seed=3, num_threads=1,
    optimizer={"type": "adam", "lr": 0.01},
    scheduler={"type": "linear", "warmup_steps": 50, "min_lr": 0.0001},
    early_stopping={"patience": None},
)
task = TaskInfo(target="y", task="binary", classes=["a", "b"])
pause = (lambda record: time.sleep(0.5)) if mode == "kill" else None  # time to be killed
result = fit(model, train, val, config, task, run_dir, n_outputs=2, progress=False,
             resume=mode == "resume", on_epoch_end=pause)
save_file(result.state_dict, str(out))
out.with_suffix(".json").write_text(json.dumps(result.history))
"""


def _run(script: Path, *args: str | Path) -> None:
    subprocess.run(
        [sys.executable, str(script), *map(str, args)], check=True, timeout=300, env=_env()
    )


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)

    # The uninterrupted run goes alongside the one to kill (on the other core: each
    # process spends seconds importing torch); it is waited for before the comparison.
    uninterrupted = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "full"), str(tmp_path / "full.safetensors"),
         "full"],
        env=_env(),
    )  # fmt: skip
    try:
        killed = _kill_then_resume(script, tmp_path)
        assert uninterrupted.wait(timeout=300) == 0
    finally:
        if uninterrupted.poll() is None:
            uninterrupted.kill()
            uninterrupted.wait()

    full = load_file(str(tmp_path / "full.safetensors"))
    resumed = load_file(str(tmp_path / "resumed.safetensors"))
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key

    def without_seconds(path: Path) -> list[dict]:
        history = json.loads(path.read_text())
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert without_seconds(tmp_path / "resumed.json") == without_seconds(tmp_path / "full.json")
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5]


def _kill_then_resume(script: Path, tmp_path: Path) -> Path:
    """A run SIGKILLed after its first checkpoint, then resumed to the end: its folder."""
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, str(script), str(killed), str(tmp_path / "x.safetensors"), "kill"],
        env=_env(),
    )
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint" / "state.json").exists():
        assert process.poll() is None, "the training process ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "x.safetensors").exists()
    done = json.loads((killed / "checkpoint" / "state.json").read_text())["epoch"]
    assert done < 5

    _run(script, killed, tmp_path / "resumed.safetensors", "resume")
    return killed
