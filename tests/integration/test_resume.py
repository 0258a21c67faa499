"""`foundry train --resume` after a `kill -9` reaches the same result as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from tests.integration.support import adult_like, write_config


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    adult_like(6000, seed=3).to_csv(tmp_path / "d.csv", index=False)
    train = {
        "epochs": 5,
        "batch_size": 16,
        "early_stopping": {"patience": None},
        "scheduler": {"type": "cosine", "warmup_steps": 50},
        # one core each: the uninterrupted run and the crashed one run side by side
        "num_threads": 1,
    }
    write_config(tmp_path / "c.yaml", "d.csv", "income", name="adult", train=train)
    env = {**os.environ, "FOUNDRY_HOME": str(tmp_path / "home")}

    def train_cmd(*extra: str) -> list[str]:
        return [sys.executable, "-m", "foundry", "train", "c.yaml", "--quiet", *extra]

    # The uninterrupted run goes alongside the crashed one and its resumption (on the
    # other core: each process spends seconds importing); read once both are done.
    with open(tmp_path / "full.log", "wb") as log:
        uninterrupted = subprocess.Popen(
            train_cmd("--run-dir", "runs/full"), cwd=tmp_path, env=env, stdout=log, stderr=log
        )
    try:
        resumed, before_kill = _crash_then_resume(train_cmd, tmp_path, env)
        uninterrupted.wait(timeout=600)
    finally:
        if uninterrupted.poll() is None:
            uninterrupted.kill()
            uninterrupted.wait()
    assert uninterrupted.returncode == 0, (tmp_path / "full.log").read_text()
    full = json.loads((tmp_path / "runs/full/metrics.json").read_text())
    assert resumed.returncode == 0, resumed.stderr
    after = json.loads((tmp_path / "runs/crash/metrics.json").read_text())
    for key in ("accuracy", "log_loss", "roc_auc"):
        assert after[key] == pytest.approx(full[key], abs=1e-4), key
    epochs = [
        json.loads(line)["epoch"]
        for line in (tmp_path / "runs/crash/metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2, 3, 4, 5]
    # the registered version (and its training cost) counts both parts of the run
    from foundry.registry import Registry

    ref = (tmp_path / "runs/crash/COMPLETED").read_text().strip()
    manifest = Registry(tmp_path / "home").load(ref).manifest
    assert manifest["training"]["seconds"] >= round(before_kill, 3)


def _crash_then_resume(train_cmd, tmp_path, env) -> tuple[subprocess.CompletedProcess, float]:
    """A run SIGKILLed once it has checkpointed epoch 2, then `--resume`d: the resumed
    process, and the training seconds its checkpoint held at the kill."""
    crashed = subprocess.Popen(
        train_cmd("--run-dir", "runs/crash"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = tmp_path / "runs/crash/checkpoint/state.json"
    deadline = time.monotonic() + 300
    killed_after = None
    while time.monotonic() < deadline and crashed.poll() is None:
        if state.exists():
            try:
                epoch = json.loads(state.read_text())["epoch"]
            except (json.JSONDecodeError, KeyError):
                epoch = 0  # the file is replaced atomically, but be tolerant
            if epoch >= 2:
                crashed.send_signal(signal.SIGKILL)
                killed_after = epoch
                break
        time.sleep(0.02)
    crashed.wait(timeout=60)
    assert killed_after is not None, "the run finished before it could be killed"
    assert not (tmp_path / "runs/crash/metrics.json").exists()
    before_kill = json.loads(state.read_text())["seconds"]  # training time checkpointed

    resumed = subprocess.run(
        train_cmd("--resume", "--run-dir", "runs/crash"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return resumed, before_kill
