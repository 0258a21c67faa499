from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from train_helpers import BINARY, make_classification, new_model, small_config

from foundry.config.schema import OptimizerConfig
from foundry.errors import TrainError
from foundry.training import build_optimizer, fit
from foundry.training.checkpoint import (
    capture_rng,
    find_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)

OPTIMIZERS = [
    OptimizerConfig(type="sgd", lr=0.1),  # momentum 0: momentum_buffer is None
    OptimizerConfig(type="sgd", lr=0.1, momentum=0.9, nesterov=True),
    OptimizerConfig(type="adagrad", lr=0.1),
    OptimizerConfig(type="rmsprop", lr=0.01, momentum=0.5),
    OptimizerConfig(type="adam", lr=0.01),
    OptimizerConfig(type="adamw", lr=0.01, weight_decay=0.1),
]


def _steps(model, optimizer, data, n: int) -> None:
    for i in range(n):
        rows = slice(16 * i, 16 * (i + 1))
        optimizer.zero_grad()
        outputs = model({"numeric": data["numeric"][rows]})
        torch.nn.functional.cross_entropy(outputs, data["target"][rows]).backward()
        optimizer.step()


@pytest.mark.parametrize("config", OPTIMIZERS, ids=lambda c: f"{c.type}-{c.momentum}")
def test_optimizer_state_round_trip_continues_bit_identically(tmp_path, config):
    data = make_classification(128, seed=0)
    model = new_model()
    optimizer = build_optimizer(model.parameters(), config)
    _steps(model, optimizer, data, 3)
    save_checkpoint(
        tmp_path,
        model=model,
        optimizer=optimizer,
        best_state=model.state_dict(),
        rng=capture_rng({}),
        state={"epoch": 1},
    )

    restored = new_model(seed=123)  # different weights: the checkpoint must overwrite them
    restored_opt = build_optimizer(restored.parameters(), config)
    ckpt = load_checkpoint(tmp_path, model=restored, optimizer=restored_opt)
    assert ckpt.state == {"epoch": 1}

    _steps(model, optimizer, data, 4)
    _steps(restored, restored_opt, data, 4)
    for (name, a), b in zip(
        model.state_dict().items(), restored.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path):
    train, val = make_classification(64, seed=0), make_classification(32, seed=1)
    fit(
        new_model(),
        train,
        val,
        small_config(epochs=2),
        BINARY,
        tmp_path,
        n_outputs=2,
        progress=False,
    )

    folder = tmp_path / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.safetensors",
        "model.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
        "rng.safetensors",
        "state.json",
    ]
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.pkl"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "metrics.jsonl"]
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            assert list(f.keys())
        assert not path.read_bytes().startswith(b"\x80")  # pickle protocol marker
    state = json.loads((folder / "state.json").read_text())
    assert state["epoch"] == 2 and state["step"] == 4 and state["scheduler_last_epoch"] == 4
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    with safe_open(str(folder / "optimizer.safetensors"), framework="pt") as f:
        assert "state.0.step" in set(f.keys())  # Adam's step is a tensor
    with safe_open(str(folder / "rng.safetensors"), framework="pt") as f:
        assert {"torch", "generator.shuffle", "generator.augment"} <= set(f.keys())


def test_an_interrupted_save_leaves_a_loadable_checkpoint(tmp_path):
    model = new_model()
    optimizer = build_optimizer(model.parameters(), OptimizerConfig())
    kwargs = {
        "model": model,
        "optimizer": optimizer,
        "best_state": model.state_dict(),
        "rng": capture_rng({}),
    }
    save_checkpoint(tmp_path, **kwargs, state={"epoch": 1})
    save_checkpoint(tmp_path, **kwargs, state={"epoch": 2})
    assert not (tmp_path / "checkpoint.old").exists()
    assert not (tmp_path / "checkpoint.tmp").exists()

    # killed while writing the next one: a half-written checkpoint.tmp is ignored
    (tmp_path / "checkpoint.tmp").mkdir()
    (tmp_path / "checkpoint.tmp" / "model.safetensors").write_bytes(b"garbage")
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint"

    # killed between the two renames: only checkpoint.old is left, and it is used
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.old")
    ckpt = load_checkpoint(tmp_path, model=model, optimizer=optimizer)
    assert ckpt.state == {"epoch": 2}

    # the next save cleans up after the crash
    save_checkpoint(tmp_path, **kwargs, state={"epoch": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    shutil.rmtree(tmp_path / "checkpoint")
    assert find_checkpoint(tmp_path) is None


def test_rng_states_round_trip():
    generator = torch.Generator().manual_seed(7)
    states = capture_rng({"shuffle": generator})
    first = (torch.rand(3), torch.rand(3, generator=generator))
    restore_rng(states, {"shuffle": generator})
    second = (torch.rand(3), torch.rand(3, generator=generator))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_load_rejects_a_checkpoint_of_another_model(tmp_path):
    model = new_model()
    optimizer = build_optimizer(model.parameters(), OptimizerConfig())
    save_checkpoint(
        tmp_path,
        model=model,
        optimizer=optimizer,
        best_state=model.state_dict(),
        rng=capture_rng({}),
        state={},
    )
    other = new_model(n_in=5)
    with pytest.raises(TrainError, match="does not fit this model"):
        load_checkpoint(
            tmp_path, model=other, optimizer=build_optimizer(other.parameters(), OptimizerConfig())
        )
