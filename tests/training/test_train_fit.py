from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
from train_helpers import (
    BINARY,
    MULTICLASS,
    REGRESSION,
    make_classification,
    make_regression,
    new_model,
    small_config,
)

from foundry.errors import TrainError
from foundry.training import FitResult, fit

_DEFAULT = object()


def _fit(run_dir, config=None, *, model=None, train=None, val=_DEFAULT, task=BINARY, **kwargs):
    """fit() on default data: 200 training rows, 80 validation rows (val=None: none)."""
    train = make_classification(200, seed=1) if train is None else train
    val = make_classification(80, seed=2) if val is _DEFAULT else val
    n_outputs = kwargs.pop("n_outputs", 1 if task.task == "regression" else task.n_classes)
    return fit(
        model if model is not None else new_model(n_outputs=n_outputs),
        train,
        val,
        config or small_config(),
        task,
        run_dir,
        n_outputs=n_outputs,
        progress=kwargs.pop("progress", False),
        **kwargs,
    )


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_learns_and_writes_one_metrics_line_per_epoch(tmp_path):
    result = _fit(tmp_path, small_config(epochs=5, early_stopping={"patience": None}))
    assert isinstance(result, FitResult)
    assert result.epochs_run == 5 and not result.stopped_early
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records == result.history
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    for r in records:
        assert list(r) == ["epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds"]
        assert r["lr"] == 0.02 and r["seconds"] > 0
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert result.best_metrics == records[result.best_epoch - 1]
    assert result.best_metrics["val_accuracy"] > 0.8
    assert result.seconds > 0


def test_fit_keeps_the_best_weights_and_stops_early(tmp_path):
    # validation labels are the opposite of training labels: val_loss only gets worse
    train = make_classification(200, seed=1)
    val = make_classification(80, seed=2)
    val["target"] = 1 - val["target"]
    snapshots = {}
    model = new_model()

    def snapshot(record):
        snapshots[record["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    config = small_config(epochs=10, optimizer={"lr": 0.05}, early_stopping={"patience": 2})
    result = _fit(tmp_path, config, model=model, train=train, val=val, on_epoch_end=snapshot)
    assert result.stopped_early
    assert result.best_epoch == 1 and result.epochs_run == 3
    assert _same_weights(result.state_dict, snapshots[1])
    assert _same_weights(model.state_dict(), snapshots[1])  # the model ends with them too
    assert not _same_weights(snapshots[3], snapshots[1])


def test_same_seed_gives_identical_weights(tmp_path):
    config = small_config(epochs=3)
    a = _fit(tmp_path / "a", config, model=new_model(dropout=0.3))
    b = _fit(tmp_path / "b", config, model=new_model(dropout=0.3))
    assert _same_weights(a.state_dict, b.state_dict)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    c = _fit(tmp_path / "c", small_config(epochs=3, seed=1), model=new_model(dropout=0.3))
    assert not _same_weights(a.state_dict, c.state_dict)


class _Crash(Exception):
    pass


def _crash_after(epoch: int):
    def hook(record):
        if record["epoch"] == epoch:
            raise _Crash

    return hook


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    config = small_config(
        epochs=5,
        optimizer={"type": "adamw", "lr": 0.01, "weight_decay": 0.01},
        scheduler={"type": "cosine", "warmup_epochs": 1, "min_lr": 1e-4},
        early_stopping={"patience": None},
    )
    full = _fit(tmp_path / "full", config, model=new_model(dropout=0.2))

    with pytest.raises(_Crash):
        _fit(
            tmp_path / "crashed", config, model=new_model(dropout=0.2), on_epoch_end=_crash_after(2)
        )
    # a fresh process builds its model again (any seed: the checkpoint overwrites it)
    resumed = _fit(tmp_path / "crashed", config, model=new_model(seed=99, dropout=0.2), resume=True)

    assert _same_weights(full.state_dict, resumed.state_dict)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history] == strip
    assert resumed.best_epoch == full.best_epoch and resumed.epochs_run == 5
    lines = (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5]


def test_a_resumed_run_records_the_training_time_of_both_parts(tmp_path):
    """A run resumed from its checkpoint reported only its own part (issue 14: 1,080 s
    recorded as 0.2 s, and the training cost with it)."""
    config = small_config(epochs=4, early_stopping={"patience": None})

    def slow_then_crash(record):
        time.sleep(0.5)  # after the epoch's checkpoint: counted from the next one on
        if record["epoch"] == 2:
            raise _Crash

    with pytest.raises(_Crash):
        _fit(tmp_path, config, on_epoch_end=slow_then_crash)
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["seconds"] >= 0.5  # epoch 1's pause came before epoch 2's checkpoint
    resumed = _fit(tmp_path, config, resume=True)
    assert resumed.seconds >= state["seconds"]
    final = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["seconds"] <= final["seconds"] <= resumed.seconds


def test_resume_after_an_early_stop_trains_no_more(tmp_path):
    train, val = make_classification(200, seed=1), make_classification(80, seed=2)
    val["target"] = 1 - val["target"]
    config = small_config(epochs=10, optimizer={"lr": 0.05}, early_stopping={"patience": 1})
    first = _fit(tmp_path, config, train=train, val=val)
    again = _fit(tmp_path, config, train=train, val=val, resume=True)
    assert first.stopped_early and again.stopped_early
    assert again.history == first.history
    assert _same_weights(first.state_dict, again.state_dict)


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(TrainError, match="nothing to resume"):
        _fit(tmp_path, resume=True)


def test_grad_clip_bounds_the_gradient_norm(tmp_path):
    train = make_regression(64, seed=0)
    train["target"] = train["target"] * 1000  # huge errors, huge gradients

    def final_grad_norm(grad_clip):
        model = new_model(n_outputs=1)
        config = small_config(epochs=1, grad_clip=grad_clip, optimizer={"type": "sgd", "lr": 1e-6})
        _fit(tmp_path / str(grad_clip), config, model=model, train=train, val=None, task=REGRESSION)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))

    assert final_grad_norm(None) > 10
    assert final_grad_norm(0.5) <= 0.5 + 1e-5


def test_divergence_raises_train_error(tmp_path):
    config = small_config(epochs=3, optimizer={"type": "sgd", "lr": 1e6})
    with pytest.raises(TrainError, match=r"diverged at epoch 1: loss is (nan|inf)"):
        _fit(tmp_path, config, train=make_regression(200, seed=0), val=None, task=REGRESSION)


def test_bf16_autocast_runs_on_cpu(tmp_path):
    result = _fit(tmp_path, small_config(epochs=2, precision="bf16"))
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert result.best_metrics["val_accuracy"] > 0.6


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(TrainError, match="fp16 needs CUDA; use bf16 on CPU"):
        _fit(tmp_path, small_config(precision="fp16", device="cpu"))


def test_regression_reports_rmse_in_original_units(tmp_path):
    train, val = make_regression(200, seed=1), make_regression(80, seed=2)
    result = _fit(tmp_path, small_config(epochs=2), train=train, val=val, task=REGRESSION)
    record = result.history[-1]
    assert set(record) == {"epoch", "train_loss", "val_loss", "val_rmse", "lr", "seconds"}
    # target_std = 2: rmse in original units is twice the standardised one
    assert record["val_rmse"] == pytest.approx(2 * math.sqrt(record["val_loss"]), rel=1e-4)


def test_metric_fn_results_are_prefixed_and_can_be_monitored(tmp_path):
    seen = {}

    def metric_fn(y_true, outputs):
        seen["shapes"] = (y_true.shape, outputs.shape)
        accuracy = float(np.mean(outputs.argmax(1) == y_true))
        return {"accuracy": accuracy, "error": 1 - accuracy, "confusion_matrix": [[1, 2], [3, 4]]}

    config = small_config(epochs=3, early_stopping={"metric": "val_error", "patience": 1})
    val = make_classification(30, seed=3, n_classes=3)
    train = make_classification(90, seed=4, n_classes=3)
    result = _fit(tmp_path, config, train=train, val=val, task=MULTICLASS, metric_fn=metric_fn)
    assert seen["shapes"] == ((30,), (30, 3))
    record = result.history[0]
    assert {"val_accuracy", "val_error"} <= set(record)
    assert "val_confusion_matrix" not in record  # only single numbers are logged
    assert record["val_error"] == pytest.approx(1 - record["val_accuracy"])


def test_unknown_monitored_metric_lists_the_available_ones(tmp_path):
    config = small_config(early_stopping={"metric": "val_roc_auc"})
    with pytest.raises(TrainError, match="val_roc_auc.*available: train_loss, val_loss"):
        _fit(tmp_path, config)


def test_without_validation_train_loss_is_monitored(tmp_path):
    result = _fit(tmp_path, small_config(epochs=2), val=None)
    assert set(result.history[0]) == {"epoch", "train_loss", "lr", "seconds"}
    assert result.best_metrics["train_loss"] == min(h["train_loss"] for h in result.history)


def test_bce_single_logit_reports_accuracy(tmp_path):
    config = small_config(epochs=3, loss="bce")
    result = _fit(tmp_path, config, model=new_model(n_outputs=1), n_outputs=1)
    assert result.best_metrics["val_accuracy"] > 0.8


def test_augment_hook_gets_inputs_and_a_generator(tmp_path):
    calls = []

    def augment(inputs, generator):
        assert "target" not in inputs
        assert isinstance(generator, torch.Generator)
        calls.append(len(inputs["numeric"]))
        noise = torch.randn(inputs["numeric"].shape, generator=generator)
        return {**inputs, "numeric": inputs["numeric"] + 0.01 * noise}

    a = _fit(tmp_path / "a", small_config(epochs=2), augment=augment)
    assert sum(calls) == 2 * 200 and max(calls) == 32
    b = _fit(tmp_path / "b", small_config(epochs=2), augment=augment)
    assert _same_weights(a.state_dict, b.state_dict)  # augmentation is seeded too


def test_a_last_batch_of_one_row_is_skipped(tmp_path):
    # BatchNorm cannot train on a single row; 65 rows in batches of 32 → 2 batches
    class BatchNormModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
            )

        def forward(self, inputs):
            return self.net(inputs["numeric"])

    torch.manual_seed(0)
    model = BatchNormModel()
    _fit(tmp_path, small_config(epochs=1), model=model, train=make_classification(65, seed=0))
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2


def test_progress_off_prints_nothing_and_log_gets_one_line_per_epoch(tmp_path, capsys):
    _fit(tmp_path / "quiet", small_config(epochs=2))
    assert capsys.readouterr() == ("", "")

    lines = []
    _fit(tmp_path / "logged", small_config(epochs=2), log=lines.append)
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2") and "val_loss" in lines[0]

    _fit(tmp_path / "shown", small_config(epochs=2), progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err


def test_global_torch_settings_are_restored(tmp_path):
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    _fit(tmp_path, small_config(epochs=1, num_threads=1, deterministic=True))
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_resume_mentions_changed_settings(tmp_path):
    _fit(tmp_path, small_config(epochs=2))
    lines = []
    result = _fit(tmp_path, small_config(epochs=3), resume=True, log=lines.append)
    assert lines[0] == "resuming with changed train settings: epochs"
    assert result.epochs_run == 3 and len(lines) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_cuda_precisions_and_resume(tmp_path, precision):
    config = small_config(epochs=3, device="cuda", precision=precision)
    full = _fit(tmp_path / "full", config)
    assert next(iter(full.state_dict.values())).device.type == "cpu"
    with pytest.raises(_Crash):
        _fit(tmp_path / "crashed", config, on_epoch_end=_crash_after(1))
    resumed = _fit(tmp_path / "crashed", config, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert all(math.isfinite(h["train_loss"]) for h in resumed.history)
