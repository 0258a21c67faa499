"""`train.gradient_accumulation`: k batches of b per optimizer step act as one batch of k*b."""

from __future__ import annotations

import json

import torch
from train_helpers import BINARY, make_classification, new_model, small_config

from foundry.training import fit


def _one_epoch(run_dir, *, rows: int, batch_size: int, accumulation: int, optimizer: dict):
    model = new_model(seed=3)
    config = small_config(
        epochs=1,
        batch_size=batch_size,
        gradient_accumulation=accumulation,
        optimizer=optimizer,
        early_stopping={"patience": None},
    )
    result = fit(
        model,
        make_classification(rows, seed=1),
        None,
        config,
        BINARY,
        run_dir,
        n_outputs=2,
        progress=False,
    )
    return result.state_dict


def test_accumulating_two_batches_is_one_batch_of_twice_the_size(tmp_path):
    # 64 rows: one optimizer step either way (batch 64, or 2 accumulated batches of 32 from
    # the same shuffled order); the loss is a mean, so the gradients must match.
    for optimizer in ({"type": "sgd", "lr": 0.5}, {"type": "adam", "lr": 0.01}):
        big = _one_epoch(
            tmp_path / f"big-{optimizer['type']}",
            rows=64,
            batch_size=64,
            accumulation=1,
            optimizer=optimizer,
        )
        accumulated = _one_epoch(
            tmp_path / f"acc-{optimizer['type']}",
            rows=64,
            batch_size=32,
            accumulation=2,
            optimizer=optimizer,
        )
        start = new_model(seed=3).state_dict()
        for key in big:
            assert not torch.equal(big[key], start[key]), f"{key} did not move"
            torch.testing.assert_close(accumulated[key], big[key], rtol=1e-5, atol=1e-6)


def test_schedule_counts_optimizer_steps(tmp_path):
    # 100 rows, batch 10, accumulation 4 → 10 batches → steps of 4, 4 and 2 batches
    config = small_config(
        epochs=2,
        batch_size=10,
        gradient_accumulation=4,
        optimizer={"type": "sgd", "lr": 0.1},
        scheduler={"type": "linear", "min_lr": 0.0},
        early_stopping={"patience": None},
    )
    fit(
        new_model(),
        make_classification(100, seed=1),
        None,
        config,
        BINARY,
        tmp_path,
        n_outputs=2,
        progress=False,
    )
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6  # 3 optimizer steps per epoch
    assert state["scheduler_last_epoch"] == 6
