"""Knowledge distillation (`foundry.compression.distill`) and `fit`'s `loss_fn` hook.

The loss is checked against hand computations on small tensors; distillation itself on
real teachers trained by `foundry.train` and loaded back with `foundry.load`, as the
compress stage does: an MLP on scikit-learn's digits as a table, a CNN text model, and
a CNN on the same digits as 8x8 images.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import foundry
from foundry.compression.distill import (
    TEACHER_KEY,
    build_student,
    distill,
    distill_lm,
    distillation_loss,
    next_token_distillation_loss,
)
from foundry.config.schema import AugmentConfig, GPTConfig, MLPConfig, TrainConfig
from foundry.data import augment_images, read_table
from foundry.data.schema import InputSchema, TaskInfo
from foundry.errors import ConfigError, ModelError
from foundry.lm.data import IGNORE, corpus_blocks
from foundry.lm.train import fit_lm, perplexity
from foundry.models import build_model
from foundry.models.gpt import GPT
from foundry.predictor import run_model
from foundry.training import FitResult, build_loss, fit

MULTICLASS = TaskInfo(target="y", task="multiclass", classes=["a", "b", "c"])
BINARY = TaskInfo(target="y", task="binary", classes=["no", "yes"])
REGRESSION = TaskInfo(target="y", task="regression", target_mean=3.0, target_std=2.0)


# ------------------------------------------------------------------ the loss, by hand


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def _hand_kd(student: list[list[float]], teacher: list[list[float]], y: list[int], a, t):
    """alpha * CE + (1 - alpha) * T² * KL(p_teacher || p_student), averaged over rows."""
    total = 0.0
    for s_row, t_row, label in zip(student, teacher, y, strict=True):
        ce = -math.log(_softmax(s_row)[label])
        p = _softmax([v / t for v in t_row])
        q = _softmax([v / t for v in s_row])
        kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
        total += a * ce + (1 - a) * t * t * kl
    return total / len(y)


def _kd_loss(student: Tensor, teacher: Tensor, y: Tensor, task: TaskInfo, **kw: Any) -> Tensor:
    return distillation_loss(
        student, teacher, y, alpha=kw.get("alpha", 0.5), temperature=kw.get("t", 2.0), task=task
    )


def test_loss_matches_hand_computation_multiclass():
    student = [[1.0, -0.5, 0.2], [0.3, 2.0, -1.0]]
    teacher = [[2.5, -1.0, 0.0], [-0.2, 1.5, 0.4]]
    y = [0, 2]
    got = _kd_loss(
        torch.tensor(student), torch.tensor(teacher), torch.tensor(y), MULTICLASS, alpha=0.3, t=2.5
    )
    assert got.item() == pytest.approx(_hand_kd(student, teacher, y, 0.3, 2.5), rel=1e-6)


def test_loss_binary_one_output_is_the_two_class_distribution_0_z():
    student, teacher, y = [0.7, -1.2, 2.0], [1.5, -3.0, 0.5], [1, 0, 0]
    s1, t1 = torch.tensor(student)[:, None], torch.tensor(teacher)[:, None]  # [3, 1] logits
    got = _kd_loss(s1, t1, torch.tensor(y), BINARY, alpha=0.4, t=3.0)
    # by hand with sigmoids: P(class 1) = sigmoid(z / T); the hard term is the BCE
    total = 0.0
    for s, t, label in zip(student, teacher, y, strict=True):
        sig = 1 / (1 + math.exp(-s))
        bce = -math.log(sig if label else 1 - sig)
        p1, q1 = 1 / (1 + math.exp(-t / 3.0)), 1 / (1 + math.exp(-s / 3.0))
        kl = p1 * math.log(p1 / q1) + (1 - p1) * math.log((1 - p1) / (1 - q1))
        total += 0.4 * bce + 0.6 * 9.0 * kl
    assert got.item() == pytest.approx(total / 3, rel=1e-6)
    # the same as the two-class logits [0, z]: a 2-output teacher can teach a 1-output
    # student and the other way round
    s2, t2 = torch.cat([torch.zeros_like(s1), s1], 1), torch.cat([torch.zeros_like(t1), t1], 1)
    for s_out, t_out in ((s1, t2), (s2, t1), (s2, t2)):
        mixed = _kd_loss(s_out, t_out, torch.tensor(y), BINARY, alpha=0.4, t=3.0)
        assert mixed.item() == pytest.approx(got.item(), rel=1e-6)


def test_loss_regression_mixes_the_mse_to_labels_and_to_the_teacher():
    student, teacher, y = [0.5, -1.0, 2.0], [0.0, -0.5, 1.0], [1.0, -1.0, 1.5]
    args = (torch.tensor(student)[:, None], torch.tensor(teacher)[:, None], torch.tensor(y))
    got = _kd_loss(*args, REGRESSION, alpha=0.25, t=2.0)
    mse_y = sum((s - v) ** 2 for s, v in zip(student, y, strict=True)) / 3
    mse_t = sum((s - v) ** 2 for s, v in zip(student, teacher, strict=True)) / 3
    assert got.item() == pytest.approx(0.25 * mse_y + 0.75 * mse_t, rel=1e-6)
    # a number has no distribution to soften: the temperature is unused
    assert _kd_loss(*args, REGRESSION, alpha=0.25, t=7.0).item() == got.item()


def test_alpha_one_is_the_plain_training_loss():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(16, 3, generator=g), torch.randn(16, 3, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    got = _kd_loss(student, teacher, y, MULTICLASS, alpha=1.0, t=4.0)
    assert torch.equal(got, build_loss("cross_entropy", MULTICLASS, 3)(student, y))

    yb = torch.randint(0, 2, (16,), generator=g)
    got = _kd_loss(student[:, :1], teacher[:, :1], yb, BINARY, alpha=1.0, t=4.0)
    bce = build_loss("bce", BINARY, 1)(student[:, :1], yb)
    assert got.item() == pytest.approx(bce.item(), rel=1e-6)


def test_soft_term_is_scaled_by_t_squared():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    for t in (1.0, 2.0, 5.0):
        soft = _kd_loss(student, teacher, y, MULTICLASS, alpha=0.0, t=t)
        p, log_q = F.softmax(teacher / t, dim=1), F.log_softmax(student / t, dim=1)
        kl = (p * (p.log() - log_q)).sum(1).mean()
        assert soft.item() == pytest.approx(t * t * kl.item(), rel=1e-5)
    # a student that already matches its teacher has nothing left to learn from it
    same = _kd_loss(teacher, teacher, y, MULTICLASS, alpha=0.0, t=3.0)
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_loss_refuses_outputs_that_do_not_fit_the_task():
    y, zeros = torch.tensor([0, 1]), torch.zeros
    with pytest.raises(ModelError, match="teacher has 4 output"):
        _kd_loss(zeros(2, 3), zeros(2, 4), y, MULTICLASS)
    with pytest.raises(ModelError, match="student has 1 output"):
        _kd_loss(zeros(2, 1), zeros(2, 3), y, MULTICLASS)
    with pytest.raises(ModelError, match="one output from each"):
        _kd_loss(zeros(2, 1), zeros(2, 2), y.float(), REGRESSION)
    with pytest.raises(ConfigError, match=r"compress\.distill\.alpha"):
        _kd_loss(zeros(2, 3), zeros(2, 3), y, MULTICLASS, alpha=1.5)
    with pytest.raises(ConfigError, match=r"compress\.distill\.temperature"):
        _kd_loss(zeros(2, 3), zeros(2, 3), y, MULTICLASS, t=0.0)


# ----------------------------------------------------------------- fit's loss_fn hook


class _Numeric(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.net(inputs["numeric"])


def _table(n: int, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = torch.bucketize(x[:, 0] + 0.5 * x[:, 1], torch.tensor([-0.5, 0.5]))
    return {"numeric": x, "target": y}


def _fit_numeric(run_dir: Path, train: dict[str, Tensor], **kwargs: Any) -> FitResult:
    config = TrainConfig(epochs=3, batch_size=32, num_threads=1, seed=0, optimizer={"lr": 0.01})
    torch.manual_seed(0)
    return fit(_Numeric(), train, _table(60, 2), config, MULTICLASS, run_dir, n_outputs=3, **kwargs)


def test_fit_loss_fn_receives_every_train_tensor_sliced_with_the_batch(tmp_path):
    train = _table(200, 1)
    train["row"] = torch.arange(200)  # an extra per-row tensor, like a teacher's outputs
    seen: list[Tensor] = []

    def loss_fn(outputs: Tensor, batch: dict[str, Tensor]) -> Tensor:
        assert set(batch) == {"numeric", "target", "row"}
        assert torch.equal(batch["numeric"], train["numeric"][batch["row"]])
        assert torch.equal(batch["target"], train["target"][batch["row"]])
        seen.append(batch["row"])
        return F.cross_entropy(outputs, batch["target"])

    result = _fit_numeric(tmp_path, train, progress=False, loss_fn=loss_fn)
    assert sorted(torch.cat(seen).tolist()) == sorted(list(range(200)) * 3)  # once an epoch
    # validation data has no "row": it is scored as usual, on the true labels
    assert {"val_loss", "val_accuracy"} <= set(result.history[0])


def test_fit_with_the_default_loss_as_loss_fn_is_bit_identical_to_default_fit(tmp_path):
    # the hook changes nothing else: same batches, same RNG draws, same weights
    def hook(outputs: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(outputs, batch["target"])

    default = _fit_numeric(tmp_path / "default", _table(200, 1), progress=False)
    hooked = _fit_numeric(tmp_path / "hook", _table(200, 1), progress=False, loss_fn=hook)
    assert [{**r, "seconds": 0} for r in default.history] == [
        {**r, "seconds": 0} for r in hooked.history
    ]
    assert default.state_dict.keys() == hooked.state_dict.keys()
    assert all(torch.equal(v, hooked.state_dict[k]) for k, v in default.state_dict.items())


# ------------------------------------------------------- real teachers from foundry.train


class Teacher:
    """A teacher trained by `foundry.train` and loaded back, plus its encoded splits."""

    def __init__(self, predictor: Any, paths: dict[str, Path]) -> None:
        self.predictor = predictor
        self.model, self.task = predictor.model, predictor.task
        encode = predictor.preprocessor.transform
        self.train, self.val, self.test = (encode(read_table(paths[s])) for s in paths)
        self.n_outputs = int(predictor.manifest["n_outputs"])

    def accuracy(self, model: nn.Module) -> float:
        out = run_model(model, self.test, len(self.test["target"]))
        return float(np.mean(out.argmax(1) == self.test["target"].numpy()))

    def distill(self, student: nn.Module, run_dir: Path, **kwargs: Any) -> FitResult:
        """`distill` on this teacher's training rows (or `train=`), validated on its val."""
        train = kwargs.pop("train", self.train)
        config = kwargs.pop("config", _train_config())
        return distill(
            self.model,
            student,
            train,
            self.val,
            config,
            self.task,
            run_dir,
            n_outputs=kwargs.pop("n_outputs", self.n_outputs),
            **kwargs,
        )


def _train_teacher(root: Path, paths: dict[str, Path], **sections: Any) -> Teacher:
    data = {"path": str(paths["train"]), "val_path": str(paths["val"])}
    data["test_path"] = str(paths["test"])
    config = {"name": root.name, "data": data, "output_dir": str(root / "runs"), **sections}
    # module-scoped: its own registry, not the per-test FOUNDRY_HOME of tests/conftest.py
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(root / "home"))
        mp.delenv("FOUNDRY_DATABASE_URL", raising=False)
        result = foundry.train(config, progress=False, quiet=True)
    return Teacher(foundry.load(result.package_path), paths)


def _teacher_train(epochs: int, batch_size: int, lr: float, patience: int) -> dict[str, Any]:
    """The `train:` section of a teacher's config."""
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "num_threads": 1,
        "seed": 0,
        "optimizer": {"lr": lr},
        "early_stopping": {"metric": "val_accuracy", "patience": patience},
    }


def _train_config(**overrides: Any) -> TrainConfig:
    """The students' training settings."""
    values: dict[str, Any] = {
        "epochs": 40,
        "batch_size": 32,
        "num_threads": 1,
        "seed": 0,
        "optimizer": {"lr": 0.003},
        "early_stopping": {"metric": "val_accuracy", "patience": 10},
    }
    return TrainConfig(**{**values, **overrides})


def _digits() -> tuple[Any, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits and a fixed shuffled order of them."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch, np.random.default_rng(0).permutation(len(bunch.target))


_DIGIT_SPLITS = {"train": slice(0, 1200), "val": slice(1200, 1450), "test": slice(1450, None)}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def digits_table(tmp_path_factory) -> Teacher:
    """An MLP [256, 256] on scikit-learn's digits as a 64-column table (10 classes)."""
    root = tmp_path_factory.mktemp("digits-table")
    bunch, order = _digits()
    df = pd.DataFrame(bunch.data[order], columns=[f"p{i}" for i in range(64)])
    df["digit"] = [f"d{v}" for v in bunch.target[order]]
    paths = {}
    for split, rows in _DIGIT_SPLITS.items():
        paths[split] = root / f"{split}.csv"
        df.iloc[rows].to_csv(paths[split], index=False)
    return _train_teacher(
        root,
        paths,
        features={"target": "digit"},
        model={"type": "mlp", "layers": [256, 256], "dropout": 0.1},
        train=_teacher_train(epochs=30, batch_size=64, lr=0.001, patience=8),
    )


def test_distilled_mlp_keeps_the_teachers_accuracy_with_few_parameters(digits_table, tmp_path):
    t = digits_table
    torch.manual_seed(0)
    student = build_student({"type": "mlp", "layers": [32], "dropout": 0.0}, t.predictor)
    assert _params(student) * 4 <= _params(t.model)  # 2,410 vs 85,002
    result = t.distill(student, tmp_path, alpha=0.5, temperature=2.0)
    teacher_acc, student_acc = t.accuracy(t.model), t.accuracy(student)
    assert teacher_acc > 0.95
    assert student_acc >= 0.95 * teacher_acc
    # validated on the true labels with the usual metrics; the teacher is untouched
    assert {"val_loss", "val_accuracy", "val_f1_macro"} <= set(result.best_metrics)
    assert not t.model.training
    assert t.accuracy(t.model) == teacher_acc
    assert (tmp_path / "metrics.jsonl").exists() and (tmp_path / "checkpoint").is_dir()


def test_distillation_beats_the_same_student_without_a_teacher_on_few_rows(digits_table, tmp_path):
    # 200 labelled rows: the teacher's soft outputs (which other digits a row resembles)
    # carry more than the labels do. Over 5 seeds distillation won by 1.5 to 3 points.
    t = digits_table
    idx = torch.randperm(1200, generator=torch.Generator().manual_seed(0))[:200]
    few = {k: v[idx] for k, v in t.train.items()}
    accuracy = {}
    for name in ("distilled", "scratch"):
        torch.manual_seed(0)
        student = build_student({"type": "mlp", "layers": [32], "dropout": 0.0}, t.predictor)
        if name == "distilled":
            t.distill(student, tmp_path / name, train=few, alpha=0.2, temperature=4.0)
        else:
            config, run_dir = _train_config(), tmp_path / name
            fit(student, few, t.val, config, t.task, run_dir, n_outputs=10, progress=False)
        accuracy[name] = t.accuracy(student)
    assert accuracy["distilled"] >= accuracy["scratch"], accuracy
    assert accuracy["distilled"] > 0.85


def test_teacher_per_batch_with_augmentation_matches_precomputed_outputs(digits_table, tmp_path):
    # with an augmentation hook the teacher runs on each (augmented) batch instead of once
    # up front; with an identity "augmentation" both ways must train the same student
    t = digits_table
    rows = {k: v[:300] for k, v in t.train.items()}
    results = []
    for name, augment in (("once", None), ("per-batch", lambda inputs, generator: inputs)):
        torch.manual_seed(0)
        student = build_student({"type": "mlp", "layers": [16]}, t.predictor)
        config = _train_config(epochs=3)
        results.append(
            t.distill(student, tmp_path / name, train=rows, config=config, augment=augment)
        )
    once, per_batch = results
    for a, b in zip(once.history, per_batch.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)


def test_distill_refuses_a_teacher_that_does_not_fit_the_task(digits_table, tmp_path):
    t = digits_table
    three = TaskInfo(target="digit", task="multiclass", classes=["a", "b", "c"])
    student = build_student({"type": "mlp", "layers": [8]}, t.predictor, n_outputs=3)
    rows = {k: v[:64] for k, v in t.train.items()}
    rows["target"] = rows["target"] % 3
    config = _train_config(epochs=1)
    with pytest.raises(ModelError, match="teacher has 10 output"):
        distill(t.model, student, rows, None, config, three, tmp_path, n_outputs=3)
    with pytest.raises(ValueError, match=TEACHER_KEY):
        rows[TEACHER_KEY] = rows["target"]
        distill(t.model, student, rows, None, config, three, tmp_path, n_outputs=3)


def test_build_student_raises_config_error_naming_the_key(digits_table):
    predictor = digits_table.predictor
    with pytest.raises(ConfigError, match=r"compress\.distill\.student: model type 'cnn'"):
        build_student({"type": "cnn"}, predictor)
    with pytest.raises(ConfigError, match=r"compress\.distill\.student: model type 'text'"):
        build_student({"type": "text"}, predictor)
    with pytest.raises(ConfigError, match=r"compress\.distill\.student: a gpt model"):
        build_student({"type": "gpt"}, predictor)
    with pytest.raises(ConfigError, match=r"compress\.distill\.student\.layers"):
        build_student({"type": "mlp", "layers": "wide"}, predictor)
    # a config object works as well as a dict; n_outputs defaults to the teacher's
    student = build_student(MLPConfig(layers=[8]), predictor)
    assert student(digits_table.test).shape == (len(digits_table.test["target"]), 10)


def test_distill_a_regressor(tmp_path):
    # a smooth function of 6 numbers: teacher MLP [64, 64], student MLP [8]
    g = torch.Generator().manual_seed(0)

    def rows(n: int) -> dict[str, Tensor]:
        x = torch.randn(n, 6, generator=g)
        y = torch.sin(x[:, 0]) + x[:, 1] * x[:, 2] - 0.5 * x[:, 3]
        y = y + 0.1 * torch.randn(n, generator=g)
        return {"numeric": x, "target": (y - y.mean()) / y.std()}

    train, val = rows(800), rows(200)
    schema = InputSchema(numeric=[f"x{i}" for i in range(6)])
    config = _train_config(epochs=30, early_stopping={"metric": "val_loss", "patience": 8})
    torch.manual_seed(0)
    teacher = build_model(MLPConfig(layers=[64, 64], dropout=0.0), schema, 1)
    taught = fit(
        teacher, train, val, config, REGRESSION, tmp_path / "t", n_outputs=1, progress=False
    )
    torch.manual_seed(0)
    student = build_model(MLPConfig(layers=[8], dropout=0.0), schema, 1)
    result = distill(teacher, student, train, val, config, REGRESSION, tmp_path / "s", n_outputs=1)
    assert taught.best_metrics["val_loss"] < 0.2  # standardised MSE: the teacher learned it
    assert {"val_rmse", "val_r2"} <= set(result.best_metrics)  # true labels, usual metrics
    assert result.best_metrics["val_r2"] > 0.6


# ------------------------------------------------------------------- text and images


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Teacher:
    """A CNN text teacher on short reviews labelled by the majority of their phrases."""
    root = tmp_path_factory.mktemp("reviews")
    rng = np.random.default_rng(5)
    good = ["great", "excellent", "love it", "works perfectly", "very happy", "five stars"]
    bad = ["terrible", "broke after a week", "waste of money", "does not work", "awful"]
    neutral = ["arrived on tuesday", "for my kitchen", "color is blue", "fits in a drawer"]
    records = []
    for _ in range(1000):
        positive = bool(rng.integers(0, 2))
        words = list(rng.choice(good if positive else bad, size=2, replace=False))
        words += list(rng.choice(bad if positive else good, size=int(rng.integers(0, 2))))
        words += list(rng.choice(neutral, size=2, replace=False))
        rng.shuffle(words)
        records.append({"review": ", ".join(words), "sentiment": "yes" if positive else "no"})
    df = pd.DataFrame(records)
    paths = {}
    splits = {"train": slice(0, 600), "val": slice(600, 800), "test": slice(800, None)}
    for split, part in splits.items():
        paths[split] = root / f"{split}.csv"
        df.iloc[part].to_csv(paths[split], index=False)
    text = {"tokenizer": "word", "vocab_size": 500, "max_length": 24}
    review = {"name": "review", "type": "text", "text": text}
    return _train_teacher(
        root,
        paths,
        features={"target": "sentiment", "inputs": [review]},
        model={"type": "text", "encoder": "cnn", "embedding_dim": 32, "kernel_sizes": [2, 3]},
        train=_teacher_train(epochs=15, batch_size=32, lr=0.003, patience=4),
    )


def test_distill_a_cnn_text_teacher_into_a_bag_of_words_student(reviews, tmp_path):
    t = reviews
    torch.manual_seed(0)
    student = build_student({"type": "text", "encoder": "bow", "embedding_dim": 8}, t.predictor)
    assert _params(student) * 4 <= _params(t.model)
    t.distill(student, tmp_path, config=_train_config(epochs=40))
    teacher_acc, student_acc = t.accuracy(t.model), t.accuracy(student)
    assert teacher_acc > 0.95
    assert student_acc >= 0.95 * teacher_acc
    with pytest.raises(ConfigError, match=r"compress\.distill\.student: model type 'mlp'.*text"):
        build_student({"type": "mlp"}, t.predictor)


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory) -> Teacher:
    """A CNN on scikit-learn's digits written out as 8x8 grayscale PNG folders."""
    from PIL import Image

    root = tmp_path_factory.mktemp("digit-images")
    bunch, order = _digits()
    paths = {}
    for split, rows in _DIGIT_SPLITS.items():
        paths[split] = root / split
        for i in order[rows]:
            folder = paths[split] / f"d{bunch.target[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (bunch.images[i] * 255 / 16).astype(np.uint8)  # 0..16 → 0..255
            Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    image = {"name": "image", "type": "image", "image": {"channels": 1, "normalization": "unit"}}
    conv = [{"filters": 32}, {"filters": 64}]
    return _train_teacher(
        root,
        paths,
        features={"target": "label", "inputs": [image]},
        model={"type": "cnn", "conv": conv, "layers": [64], "dropout": 0.2},
        train=_teacher_train(epochs=15, batch_size=64, lr=0.002, patience=4),
    )


def test_distill_an_image_cnn_into_a_smaller_cnn_with_augmentation(digit_images, tmp_path):
    t = digit_images
    torch.manual_seed(0)
    small = {"type": "cnn", "conv": [{"filters": 8}], "layers": [], "global_pool": False}
    student = build_student(small, t.predictor)
    assert _params(student) * 4 <= _params(t.model)  # 1,378 vs 23,722
    shift = AugmentConfig(crop=1)  # one-pixel shifts; the teacher sees the shifted pixels too

    def augment(inputs: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        return {**inputs, "image:image": augment_images(inputs["image:image"], shift, generator)}

    t.distill(student, tmp_path, config=_train_config(epochs=20), augment=augment)
    teacher_acc, student_acc = t.accuracy(t.model), t.accuracy(student)
    assert teacher_acc > 0.95
    assert student_acc >= 0.95 * teacher_acc
    with pytest.raises(ConfigError, match=r"compress\.distill\.student: model type 'mlp'.*image"):
        build_student({"type": "mlp", "layers": [32]}, t.predictor)


# -------------------------------------------------------------------- language models


class _Bytes:
    """UTF-8 bytes as token ids, plus EOS and PAD: all `corpus_blocks` needs."""

    eos_id, pad_id, vocab_size = 256, 257, 258

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


def _gpt(seed: int, vocab_size: int = 258, **overrides: Any) -> nn.Module:
    values = {"n_layers": 2, "d_model": 32, "n_heads": 4, "context_length": 32, "dropout": 0.0}
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**values, **overrides}), vocab_size=vocab_size)


def _lm_config(epochs: int) -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        batch_size=16,
        num_threads=1,
        seed=0,
        optimizer={"type": "adamw", "lr": 0.003},
        early_stopping={"patience": None},
    )


def test_next_token_loss_is_the_classification_loss_on_target_positions_only():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[1, 2, IGNORE, 3, IGNORE], [IGNORE, 4, 5, IGNORE, IGNORE]])
    got = next_token_distillation_loss(student, teacher, labels, alpha=0.3, temperature=2.0)
    keep = labels != IGNORE
    task = TaskInfo(target="next", task="multiclass", classes=[str(i) for i in range(7)])
    expected = distillation_loss(
        student[keep], teacher[keep], labels[keep], alpha=0.3, temperature=2.0, task=task
    )
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # whatever either model says where there is no target does not count
    student[~keep], teacher[~keep] = 50.0, -50.0
    again = next_token_distillation_loss(
        student, teacher, labels, alpha=0.3, temperature=2.0, reduction="sum"
    )
    assert again.item() == pytest.approx(5 * expected.item(), rel=1e-6)  # 5 target tokens


@pytest.fixture(scope="module")
def gpt_teacher(tmp_path_factory):
    """A 2-layer GPT trained on sentences drawn from a tiny grammar, and its token data."""
    rng = np.random.default_rng(0)
    subjects = ["the cat", "a dog", "my friend", "the teacher", "a bird"]
    verbs = ["sat on", "ran to", "looked at", "jumped over", "walked past"]
    objects = ["the mat", "the park", "a tree", "the house", "the river"]

    def sentence() -> str:
        return f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}."

    docs = [" ".join(sentence() for _ in range(8)) for _ in range(36)]
    train, val = corpus_blocks(docs[:30], _Bytes(), 32), corpus_blocks(docs[30:], _Bytes(), 32)
    teacher = _gpt(0)
    run_dir = tmp_path_factory.mktemp("gpt-teacher")
    fit_lm(teacher, train, val, _lm_config(8), run_dir, progress=False)
    return teacher.eval(), train, val


def test_distill_lm_trains_a_smaller_gpt_on_the_teachers_distributions(gpt_teacher, tmp_path):
    teacher, train, val = gpt_teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = _gpt(1, n_layers=1, d_model=16, n_heads=2)
    assert _params(student) * 4 <= _params(teacher)  # 7,440 vs 33,728
    untrained = perplexity(student, val)
    result = distill_lm(teacher, student, train, val, _lm_config(6), tmp_path)
    assert {"train_loss", "val_loss", "val_perplexity"} <= set(result.best_metrics)
    assert perplexity(student, val) < untrained / 5  # ~250 → ~12 (the teacher: ~3)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert not teacher.training


def test_distill_lm_with_alpha_one_is_plain_next_token_training(gpt_teacher, tmp_path):
    teacher, train, val = gpt_teacher
    config = _lm_config(2)
    plain = fit_lm(_gpt(1, n_layers=1), train, val, config, tmp_path / "a", progress=False)
    kd = distill_lm(teacher, _gpt(1, n_layers=1), train, val, config, tmp_path / "b", alpha=1)
    for a, b in zip(plain.history, kd.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    other_tokenizer = _gpt(1, vocab_size=300, n_layers=1)
    with pytest.raises(ModelError, match="vocabularies differ"):
        distill_lm(teacher, other_tokenizer, train, val, config, tmp_path / "c")
