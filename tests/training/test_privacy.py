"""DP-SGD in `fit` (train.privacy): layer swaps, accounting, clipping, resume, errors."""

from __future__ import annotations

import json

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from train_helpers import (
    BINARY,
    REGRESSION,
    make_classification,
    make_regression,
    new_model,
    small_config,
)

from foundry.config.schema import CNNConfig, MLPConfig, TextModelConfig
from foundry.data.schema import ImageInput, InputSchema, TaskInfo, TextInput
from foundry.errors import ConfigError, TrainError
from foundry.models import build_model
from foundry.training import build_optimizer, fit
from foundry.training.privacy import PrivateTraining, make_private_model

DIGITS_TASK = TaskInfo(target="digit", task="multiclass", classes=[str(i) for i in range(10)])
IMAGE_SCHEMA = InputSchema(image=[ImageInput("img", 1, 8, 8)])
PIXEL_SCHEMA = InputSchema(numeric=[f"pixel{i}" for i in range(64)])
TEXT_SCHEMA = InputSchema(text=[TextInput("review", vocab_size=20, max_length=8)])


def _private(epsilon: float = 3.0, **privacy) -> dict:
    # rdp: its calibration takes ~0.1 s where prv takes ~1-3 s
    return {"target_epsilon": epsilon, "accountant": "rdp", **privacy}


def _fit(run_dir, config, *, model=None, train=None, val=None, task=BINARY, **kwargs):
    n_outputs = kwargs.pop("n_outputs", 1 if task.task == "regression" else task.n_classes)
    return fit(
        model if model is not None else new_model(n_outputs=n_outputs),
        make_classification(400, seed=1) if train is None else train,
        val,
        config,
        task,
        run_dir,
        n_outputs=n_outputs,
        progress=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits as train/val Encoded dicts, pixels both flat and as images."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))

    def encoded(rows):
        return {"numeric": x[rows], "image:img": x[rows].reshape(-1, 1, 8, 8), "target": y[rows]}

    return encoded(order[:1400]), encoded(order[1400:])


def _text(n: int, seed: int) -> dict:
    """Token ids [n, 8] (0 = padding at the end); class 1 when token 3 appears."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, 20, (n, 8), generator=g)
    lengths = torch.randint(1, 9, (n,), generator=g)
    tokens[torch.arange(8) >= lengths[:, None]] = 0
    return {"text:review": tokens, "target": (tokens == 3).any(1).long()}


# ------------------------------------------------------------------ make_private_model


@pytest.mark.parametrize(
    ("config", "schema", "expected"),
    [
        (
            MLPConfig(layers=[16, 8], batch_norm=True),
            PIXEL_SCHEMA,
            [
                "body.1: BatchNorm1d(16) -> GroupNorm(1 group)",
                "body.5: BatchNorm1d(8) -> GroupNorm(1 group)",
            ],
        ),
        (
            CNNConfig(conv=[{"filters": 48}, {"filters": 8}], layers=[8]),
            IMAGE_SCHEMA,
            [
                "features.1: BatchNorm2d(48) -> GroupNorm(16 groups)",
                "features.5: BatchNorm2d(8) -> GroupNorm(8 groups)",
            ],
        ),
        (
            TextModelConfig(encoder="transformer", embedding_dim=8, num_heads=2, num_layers=2),
            TEXT_SCHEMA,
            [
                "encoder: learned positions -> a layer of their own (encoder.positions)",
                "encoder.encoder.layers.0.self_attn: MultiheadAttention -> separate q/k/v "
                "Linear layers",
                "encoder.encoder.layers.1.self_attn: MultiheadAttention -> separate q/k/v "
                "Linear layers",
            ],
        ),
        (TextModelConfig(encoder="cnn", embedding_dim=8, filters=4), TEXT_SCHEMA, []),
    ],
    ids=["mlp", "cnn", "transformer", "text-cnn"],
)
def test_unsupported_layers_are_swapped_and_reported(config, schema, expected):
    model, changes = make_private_model(build_model(config, schema, 3))
    assert changes == expected
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    again, no_changes = make_private_model(model)  # idempotent
    assert again is model and no_changes == []


def test_the_swapped_transformer_computes_what_the_original_does():
    config = TextModelConfig(encoder="transformer", embedding_dim=8, num_heads=2, dropout=0.0)
    torch.manual_seed(0)
    original = build_model(config, TEXT_SCHEMA, 2)
    torch.manual_seed(0)
    swapped, _ = make_private_model(build_model(config, TEXT_SCHEMA, 2))
    batch = _text(16, seed=0)
    batch["text:review"][0] = 0  # an all-padding row
    for mode in (original.train, original.eval):
        mode()
        swapped.train(original.training)
        with torch.no_grad():
            expected = original(batch)
            assert torch.allclose(swapped(batch), expected, atol=1e-5)


def test_a_layer_nothing_can_replace_is_named():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(4))

        def forward(self, x, y):
            return x * self.scale + y

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = TwoInputs()

        def forward(self, inputs):
            return self.mix(inputs["numeric"], inputs["numeric"])[:, :2]

    with pytest.raises(TrainError, match=r"cannot train layer mix \(TwoInputs\)"):
        make_private_model(Model())


def test_fit_refuses_a_model_that_was_not_swapped(tmp_path, digits):
    model = build_model(CNNConfig(conv=[{"filters": 4}], layers=[]), IMAGE_SCHEMA, 10)
    config = small_config(privacy=_private())
    with pytest.raises(TrainError, match=r"features.1 \(BatchNorm2d\): not swapped yet"):
        _fit(tmp_path, config, model=model, train=digits[0], task=DIGITS_TASK)


# ------------------------------------------------------------------------- accounting


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_spent_is_at_most_the_target_and_close_to_it(tmp_path, accountant):
    config = small_config(epochs=3, privacy=_private(2.0, accountant=accountant))
    result = _fit(tmp_path, config, val=make_classification(100, seed=2))
    privacy = result.privacy
    assert 1.9 < privacy["epsilon"] <= 2.0  # the noise is calibrated to spend the budget
    assert privacy["delta"] == 1 / (10 * 400)
    assert privacy["steps"] == 3 * 13 and privacy["sample_rate"] == 1 / 13  # ceil(400 / 32)
    assert privacy["epochs"] == 3 and privacy["accountant"] == accountant
    assert privacy["library"].startswith("opacus ") and privacy["max_grad_norm"] == 1.0
    spent = [h["epsilon"] for h in result.history]
    assert spent == sorted(spent) and spent[-1] == privacy["epsilon"]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["epsilon"] for line in lines] == spent


def test_smaller_epsilon_needs_more_noise():
    def noise(epsilon):
        model = new_model()
        optimizer = build_optimizer(model.parameters(), small_config().optimizer)
        config = small_config(epochs=5, privacy=_private(epsilon))
        private = PrivateTraining(model, optimizer, config, n_rows=1000, noise=torch.Generator())
        return private.noise_multiplier

    assert noise(0.5) > noise(1.0) > noise(3.0) > noise(8.0) > 0


def test_an_impossible_budget_is_a_config_error():
    model = new_model()
    optimizer = build_optimizer(model.parameters(), small_config().optimizer)
    # even noise a million times the clipping norm spends more than this
    config = small_config(batch_size=1000, epochs=5, privacy=_private(1e-9))
    with pytest.raises(ConfigError, match="train.privacy.target_epsilon 1e-09 cannot be met"):
        PrivateTraining(model, optimizer, config, n_rows=1000, noise=torch.Generator())


# --------------------------------------------------------------------------- clipping


def test_each_examples_gradient_is_clipped():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    data = make_regression(8, seed=0)
    data["target"][0] = 1e6  # one example with a huge loss
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config = small_config(privacy=_private(max_grad_norm=0.5))
    private = PrivateTraining(model, optimizer, config, n_rows=8, noise=torch.Generator())
    with private:
        for rows in (slice(0, 1), slice(0, 8)):
            private.optimizer.zero_grad()
            outputs = model(data["numeric"][rows])
            nn.functional.mse_loss(outputs[:, 0], data["target"][rows]).backward()
            raw = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
            private.optimizer.signal_skip_step(True)  # clip and sum, no noise yet
            private.optimizer.step()
            summed = torch.cat([p.summed_grad.flatten() for p in model.parameters()])
            n = len(data["target"][rows])
            assert raw > 1e5 and summed.norm() <= 0.5 * n + 1e-4  # each row adds <= 0.5
    leftovers = ("grad_sample", "summed_grad")  # Opacus' attributes, removed on exit
    assert not any(hasattr(p, name) for p in model.parameters() for name in leftovers)


def test_a_tiny_clipping_norm_barely_moves_the_weights(tmp_path):
    train = make_regression(200, seed=0)

    def change(privacy):
        model = new_model(n_outputs=1)
        before = [p.detach().clone() for p in model.parameters()]
        config = small_config(epochs=2, optimizer={"type": "sgd", "lr": 0.1}, privacy=privacy)
        _fit(tmp_path / str(privacy), config, model=model, train=train, task=REGRESSION)
        moved = zip(model.parameters(), before, strict=True)
        return max((p - b).abs().max().item() for p, b in moved)

    assert change(None) > 0.05
    assert change(_private(8.0, max_grad_norm=1e-6)) < 1e-4


# ----------------------------------------------------------------------- it learns


def test_mlp_and_cnn_learn_digits_under_dp(tmp_path, digits):
    train, val = digits
    config = small_config(
        epochs=4, batch_size=128, optimizer={"lr": 0.01}, privacy=_private(8.0, max_grad_norm=2.0)
    )
    for name, model_config, schema in [
        ("mlp", MLPConfig(layers=[32], dropout=0.0, batch_norm=True), PIXEL_SCHEMA),
        ("cnn", CNNConfig(conv=[{"filters": 16}], layers=[], global_pool=False), IMAGE_SCHEMA),
    ]:
        torch.manual_seed(0)
        model, _ = make_private_model(build_model(model_config, schema, 10))
        result = _fit(tmp_path / name, config, model=model, train=train, val=val, task=DIGITS_TASK)
        assert result.best_metrics["val_accuracy"] > 0.6, name  # chance is 0.1
        assert result.privacy["epsilon"] <= 8.0
        # plain keys, loadable into a fresh swapped model: how a package is loaded again
        fresh, _ = make_private_model(build_model(model_config, schema, 10))
        fresh.load_state_dict(result.state_dict)
        assert set(result.state_dict) == set(fresh.state_dict())


@pytest.mark.parametrize("encoder", ["bow", "cnn", "transformer"])
def test_text_encoders_train_under_dp(tmp_path, encoder):
    model_config = TextModelConfig(
        encoder=encoder, embedding_dim=8, filters=4, kernel_sizes=[2], num_heads=2, num_layers=1
    )
    torch.manual_seed(0)
    model, _ = make_private_model(build_model(model_config, TEXT_SCHEMA, 2))
    config = small_config(
        epochs=3, batch_size=64, optimizer={"lr": 0.02}, privacy=_private(8.0, max_grad_norm=2.0)
    )
    result = _fit(tmp_path, config, model=model, train=_text(600, 0), val=_text(200, 1))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.privacy["epsilon"] <= 8.0
    fresh, _ = make_private_model(build_model(model_config, TEXT_SCHEMA, 2))
    fresh.load_state_dict(result.state_dict)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(_text(4, 2)), model.eval()(_text(4, 2)))


# --------------------------------------------------------------------------- the loop


def test_same_seed_same_private_run_and_hooks_are_gone(tmp_path):
    config = small_config(epochs=2, privacy=_private())
    a = _fit(tmp_path / "a", config, model=new_model(dropout=0.2))
    model = new_model(dropout=0.2)
    b = _fit(tmp_path / "b", config, model=model)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert list(a.state_dict) == list(new_model().state_dict())  # no "_module." prefix
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())


def test_gradient_accumulation_splits_a_step_into_physical_batches(tmp_path):
    # the same Poisson sample per step, processed as one batch of ~64 or parts of <= 16
    whole = _fit(tmp_path / "whole", small_config(epochs=2, batch_size=64, privacy=_private()))
    parts = _fit(
        tmp_path / "parts",
        small_config(epochs=2, batch_size=16, gradient_accumulation=4, privacy=_private()),
    )
    assert whole.privacy == parts.privacy
    for key, value in whole.state_dict.items():
        assert torch.allclose(value, parts.state_dict[key], atol=1e-5), key


def test_empty_poisson_steps_still_train(tmp_path):
    # 30 rows, about one per step: many steps draw none (they still add noise)
    config = small_config(epochs=3, batch_size=1, privacy=_private(8.0))
    result = _fit(tmp_path, config, train=make_classification(30, seed=0))
    assert result.privacy["steps"] == 90 and result.privacy["epsilon"] <= 8.0
    assert all(torch.isfinite(v).all() for v in result.state_dict.values())


def test_without_validation_every_epoch_is_kept(tmp_path):
    # choosing an epoch by the training loss would look at the private rows
    config = small_config(epochs=3, early_stopping={"patience": 1}, privacy=_private())
    result = _fit(tmp_path, config)
    assert result.best_epoch == 3 and result.epochs_run == 3 and not result.stopped_early


def test_early_stopping_reports_the_epsilon_actually_spent(tmp_path):
    train = make_classification(400, seed=1)
    val = make_classification(100, seed=2)
    val["target"] = 1 - val["target"]  # val_loss only gets worse: stops after 2 epochs
    config = small_config(epochs=10, early_stopping={"patience": 1}, privacy=_private(3.0))
    result = _fit(tmp_path, config, train=train, val=val)
    assert result.stopped_early and result.epochs_run == 2
    assert result.privacy["steps"] == 2 * 13
    assert result.privacy["epsilon"] == result.history[-1]["epsilon"] < 2.0


class _Crash(Exception):
    pass


def _crash_after(epoch):
    def hook(record):
        if record["epoch"] == epoch:
            raise _Crash

    return hook


def test_resume_continues_the_accounting(tmp_path):
    config = small_config(epochs=3, early_stopping={"patience": None}, privacy=_private())
    val = make_classification(100, seed=2)
    full = _fit(tmp_path / "full", config, model=new_model(dropout=0.2), val=val)
    with pytest.raises(_Crash):
        _fit(
            tmp_path / "crashed",
            config,
            model=new_model(dropout=0.2),
            val=val,
            on_epoch_end=_crash_after(1),
        )
    state = json.loads((tmp_path / "crashed" / "checkpoint" / "state.json").read_text())
    assert state["privacy"]["history"] == [[full.privacy["noise_multiplier"], 1 / 13, 13]]
    resumed = _fit(
        tmp_path / "crashed", config, model=new_model(seed=9, dropout=0.2), val=val, resume=True
    )
    assert resumed.privacy == full.privacy
    assert all(torch.equal(full.state_dict[k], resumed.state_dict[k]) for k in full.state_dict)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history] == strip


def test_resume_with_other_privacy_settings_is_refused(tmp_path):
    _fit(tmp_path / "private", small_config(epochs=1, privacy=_private(3.0)))
    with pytest.raises(TrainError, match="same train.privacy"):
        _fit(tmp_path / "private", small_config(epochs=2, privacy=_private(3.0)), resume=True)
    with pytest.raises(TrainError, match="resuming without it"):
        _fit(tmp_path / "private", small_config(epochs=1), resume=True)
    _fit(tmp_path / "plain", small_config(epochs=1))
    with pytest.raises(TrainError, match="comes from a run without it"):
        _fit(tmp_path / "plain", small_config(epochs=1, privacy=_private()), resume=True)


@pytest.mark.parametrize(
    ("overrides", "kwargs", "message"),
    [
        ({"grad_clip": 1.0}, {}, "train.grad_clip cannot be combined with train.privacy"),
        ({"precision": "fp16"}, {}, "train.precision: fp16 cannot be combined"),
        ({}, {"loss_fn": lambda out, batch: out.mean()}, "train.privacy: distillation"),
    ],
    ids=["grad_clip", "fp16", "distillation"],
)
def test_incompatible_settings_are_config_errors(tmp_path, overrides, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _fit(tmp_path, small_config(privacy=_private(), **overrides), **kwargs)


def test_the_plain_path_reports_no_privacy(tmp_path):
    result = _fit(tmp_path, small_config(epochs=1), val=make_classification(50, seed=2))
    assert result.privacy is None and "epsilon" not in result.history[0]
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert "privacy" not in state


@pytest.mark.parametrize("model", [{"type": "gpt"}, {"type": "hf", "name_or_path": "some/model"}])
def test_privacy_on_a_language_model_is_refused_at_load(model):
    """gpt and hf pipelines have no DP-SGD: the config says so instead of training
    without privacy."""
    from foundry.config import load_config

    config = {"data": {"path": "corpus.txt"}, "model": model}
    config["train"] = {"privacy": {"target_epsilon": 3}}
    if model["type"] == "hf":
        config["features"] = {"target": "label"}
    with pytest.raises(ConfigError, match=r"train\.privacy.*not for model type"):
        load_config(config)
