"""ONNX export, int8 quantization and the ONNX Runtime runner, on real trained models."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

import foundry
from foundry.compression.onnx import OnnxExport, OnnxRunner, export_onnx, quantize_onnx
from foundry.data.load import read_table
from foundry.errors import ModelError
from foundry.predictor import Predictor
from foundry.registry import read_package, write_package

KINDS = ["mlp", "cnn", "text_bow", "text_cnn", "text_transformer"]
TEXT_KINDS = [k for k in KINDS if k.startswith("text_")]


def _table(path: Path, n: int = 400) -> None:
    """Numbers and categories; the label depends on both."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "color": rng.choice(["red", "green", "blue"], n),
            "size": rng.choice(["s", "m", "l", "xl"], n),
        }
    )
    df["label"] = np.where(df["a"] + (df["color"] == "red") - 0.5 * df["b"] > 0.3, "hi", "lo")
    df.to_csv(path, index=False)


def _bars(root: Path, n_per_class: int = 24, size: int = 12) -> None:
    """Grey images with a bright vertical or horizontal bar."""
    rng = np.random.default_rng(0)
    for label in ("vertical", "horizontal"):
        (root / label).mkdir(parents=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, (size, size), dtype=np.uint8)
            k = int(rng.integers(2, size - 2))
            if label == "vertical":
                img[:, k] = 255
            else:
                img[k, :] = 255
            Image.fromarray(img, mode="L").save(root / label / f"{i}.png")


def _reviews(path: Path, n: int = 300) -> None:
    rng = np.random.default_rng(1)
    good = ["great product", "works well", "love it", "excellent value"]
    bad = ["broke quickly", "waste of money", "very poor", "does not work"]
    rows = [
        {
            "text": f"{rng.choice(good if y else bad)} and {rng.choice(good if y else bad)}",
            "label": "pos" if y else "neg",
        }
        for y in rng.integers(0, 2, n)
    ]
    pd.DataFrame(rows).to_csv(path, index=False)


def _config(kind: str, root: Path) -> dict:
    if kind == "mlp":
        data, features = root / "table.csv", {"target": "label"}
        model = {"type": "mlp", "layers": [64, 64]}
    elif kind == "cnn":
        data, features = root / "bars", {"target": "label"}
        model = {"type": "cnn"}
    else:
        data = root / "reviews.csv"
        text = {"tokenizer": "bpe", "vocab_size": 200, "max_length": 16}
        features = {
            "target": "label",
            "inputs": [{"name": "text", "type": "text", "text": text}],
        }
        model = {
            "type": "text",
            "encoder": kind.removeprefix("text_"),
            "embedding_dim": 32,
            "num_heads": 4,
            "num_layers": 1,
        }
    return {
        "name": kind.replace("_", "-"),
        "data": {"path": str(data)},
        "features": features,
        "model": model,
        "train": {"epochs": 4, "batch_size": 16, "optimizer": {"lr": 0.003}},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, tuple[Predictor, pd.DataFrame]]:
    """One small trained model of each kind, with the rows it was trained on."""
    root = tmp_path_factory.mktemp("onnx-models")
    _table(root / "table.csv")
    _bars(root / "bars")
    _reviews(root / "reviews.csv")
    models = {}
    # The per-test FOUNDRY_HOME fixture is function-scoped: give this module its own.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(root / "home"))
        mp.delenv("FOUNDRY_DATABASE_URL", raising=False)
        for kind in KINDS:
            config = _config(kind, root)
            run = foundry.train(config, progress=False, quiet=True)
            frame = read_table(Path(config["data"]["path"]))
            models[kind] = (foundry.load(run.model_ref), frame)
    return models


def _encode(
    predictor: Predictor, frame: pd.DataFrame, n: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    rows = frame.sample(n, replace=n > len(frame), random_state=seed)
    return predictor.preprocessor.transform(rows, with_target=True)


@torch.no_grad()
def _torch_out(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return model({k: v for k, v in inputs.items() if k != "target"})


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> dict[str, OnnxExport]:
    out = tmp_path_factory.mktemp("onnx-files")
    return {
        kind: export_onnx(p.model, _encode(p, frame, 8), out / f"{kind}.onnx")
        for kind, (p, frame) in trained.items()
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_onnx_runtime_matches_torch_at_batch_1_and_64(kind, trained, exported):
    predictor, frame = trained[kind]
    export = exported[kind]
    assert export.path.is_file() and export.opset >= 18
    keys = list(predictor.preprocessor.transform(frame.head(1), with_target=False))
    assert sorted(export.input_names) == sorted(keys)
    assert export.max_abs_diff < 1e-4
    runner = OnnxRunner(export.path, export.input_names)
    for n in (1, 64):
        batch = _encode(predictor, frame, n, seed=n)  # "target" included: ignored
        got = runner(batch)
        assert got.dtype == torch.float32 and got.shape == (n, predictor.model.head.out_features)
        torch.testing.assert_close(got, _torch_out(predictor.model, batch), atol=1e-4, rtol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("kind", TEXT_KINDS)
def test_text_models_take_other_sequence_lengths(kind, trained, exported):
    predictor, frame = trained[kind]
    runner = OnnxRunner(exported[kind].path, exported[kind].input_names)
    tokens = _encode(predictor, frame, 32)["text:text"]  # [32, 16]: max_length
    # Shorter (trailing columns cut) and, where the encoder has no position table, longer
    # (extra padding) than the sequences the export saw.
    lengths = [1, 5] if kind == "text_transformer" else [1, 5, 40]
    for length in lengths:
        ids = tokens[:, :length] if length <= 16 else nn.functional.pad(tokens, (0, length - 16))
        batch = {"text:text": ids}
        torch.testing.assert_close(
            runner(batch), _torch_out(predictor.model, batch), atol=1e-4, rtol=1e-3
        )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "text_transformer"])
def test_export_from_a_one_row_example_keeps_the_batch_dynamic(kind, trained, tmp_path):
    # torch.export fixes dimensions it sees with size 1; the export must not.
    predictor, frame = trained[kind]
    export = export_onnx(predictor.model, _encode(predictor, frame, 1), tmp_path / "m.onnx")
    batch = _encode(predictor, frame, 64, seed=3)
    torch.testing.assert_close(
        OnnxRunner(export.path, export.input_names)(batch),
        _torch_out(predictor.model, batch),
        atol=1e-4,
        rtol=1e-3,
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_int8_is_smaller_and_close_to_fp32(kind, trained, exported, tmp_path):
    predictor, frame = trained[kind]
    export = exported[kind]
    path = quantize_onnx(export.path, tmp_path / "model.int8.onnx")
    assert path == tmp_path / "model.int8.onnx"
    assert path.stat().st_size < export.path.stat().st_size
    batch = _encode(predictor, frame, 200, seed=7)
    fp32 = OnnxRunner(export.path, export.input_names)(batch)
    int8 = OnnxRunner(path, export.input_names)(batch)
    assert torch.isfinite(int8).all()
    agreement = (int8.argmax(1) == fp32.argmax(1)).float().mean().item()
    assert agreement >= 0.95, f"int8 and fp32 agree on {agreement:.0%} of rows"
    scale = fp32.abs().max().item()
    assert (int8 - fp32).abs().max().item() < 0.1 * scale + 0.05


@pytest.mark.slow
def test_export_and_quantize_print_nothing_and_leave_logging_alone(trained, tmp_path, capfd):
    predictor, frame = trained["text_cnn"]
    root = logging.getLogger()
    handlers, filters = list(root.handlers), list(root.filters)
    torch_level = logging.getLogger("torch").level
    export = export_onnx(predictor.model, _encode(predictor, frame, 4), tmp_path / "m.onnx")
    quantize_onnx(export.path, tmp_path / "m.int8.onnx")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    # the quantizer's root-logger warnings must not install a handler (basicConfig)
    assert root.handlers == handlers and root.filters == filters
    assert logging.getLogger("torch").level == torch_level


@pytest.mark.slow
def test_export_keeps_training_mode_and_leaves_only_the_file(trained, tmp_path):
    predictor, frame = trained["mlp"]
    model = predictor.model.train()
    try:
        export_onnx(model, _encode(predictor, frame, 4), tmp_path / "m.onnx")
        assert model.training
    finally:
        model.eval()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


@pytest.mark.slow
def test_runner_from_four_threads_gives_identical_results(trained, exported):
    predictor, frame = trained["text_transformer"]
    export = exported["text_transformer"]
    runner = OnnxRunner(export.path, export.input_names, threads=2)
    batches = [_encode(predictor, frame, n, seed=n) for n in (1, 7, 33, 64)]
    expected = [runner(b) for b in batches]
    results: dict[tuple[int, int], torch.Tensor] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(worker: int) -> None:
        try:
            start.wait()
            for step in range(25):
                i = (worker + step) % len(batches)
                results[worker, step] = runner(batches[i])
        except BaseException as exc:  # reported below: a thread's error is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 100
    for (worker, step), got in results.items():
        assert torch.equal(got, expected[(worker + step) % len(batches)])


@pytest.mark.slow
def test_runner_behaves_like_a_module(trained, exported):
    predictor, frame = trained["mlp"]
    export = exported["mlp"]
    runner = OnnxRunner(export.path, list(export.input_names), threads=1)
    assert runner.eval() is runner and runner.device == torch.device("cpu")
    n_torch = sum(p.numel() for p in predictor.model.parameters())
    assert runner.num_parameters() == pytest.approx(n_torch, rel=0.01)
    batch = _encode(predictor, frame, 5)
    # a graph-name → key mapping works the same as the ordered list
    mapping = {name: name for name in export.input_names}
    assert torch.equal(OnnxRunner(export.path, mapping)(batch), runner(batch))
    # int32 category ids and a non-contiguous numeric block are converted, not refused
    odd = dict(batch)
    odd["categorical"] = batch["categorical"].to(torch.int32)
    odd["numeric"] = batch["numeric"].t().contiguous().t()
    assert torch.equal(runner(odd), runner(batch))
    with pytest.raises(ModelError, match="needs input 'numeric'"):
        runner({"categorical": batch["categorical"]})
    with pytest.raises(ModelError, match="has 2 inputs"):
        OnnxRunner(export.path, ["numeric"])


def test_a_file_that_is_not_onnx_is_a_model_error(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="cannot load the ONNX model"):
        OnnxRunner(tmp_path / "bad.onnx", None)


class _BranchOnValues(nn.Module):
    """Python control flow on tensor values: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 2)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["numeric"]
        if x.sum() > 0:
            return self.head(x)
        return -self.head(x)


class _NoOnnxOperator(nn.Module):
    """Singular values: an operator ONNX has no equivalent for."""

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["numeric"]
        return torch.linalg.svdvals(x.reshape(-1, 2, 2)).reshape(len(x), -1)


class _RowLoop(nn.Module):
    """A Python loop over rows: traces, but with the batch size frozen."""

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["numeric"]
        return torch.stack([row.sum(0, keepdim=True) for row in x])


class _DiffersInExport(nn.Module):
    """Computes something else while being exported: the check must catch it."""

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["numeric"]
        return x + 1 if torch.onnx.is_in_onnx_export() else x


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (_BranchOnValues(), "data-dependent"),
        (_NoOnnxOperator(), "svd"),
        (_RowLoop(), "batch size of input 'numeric' was traced as the constant 4"),
        (_DiffersInExport(), "does not match PyTorch"),
    ],
)
def test_a_model_onnx_cannot_represent_is_a_model_error(model, reason, tmp_path):
    example = {"numeric": torch.randn(4, 4), "target": torch.zeros(4, dtype=torch.int64)}
    with pytest.raises(ModelError, match=reason) as info:
        export_onnx(model, example, tmp_path / "m.onnx")
    assert type(model).__name__ in str(info.value) and info.value.hint
    assert list(tmp_path.iterdir()) == []  # no file, not even a temporary one


def test_quantizing_a_file_that_is_not_onnx_is_a_model_error(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="cannot quantize"):
        quantize_onnx(tmp_path / "bad.onnx", tmp_path / "out.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["bad.onnx"]


@pytest.mark.slow
def test_a_model_package_may_carry_an_onnx_file(exported, tmp_path):
    export = exported["mlp"]
    write_package(
        tmp_path / "pkg",
        weights={},
        manifest={"compression": {"method": "onnx"}},
        metrics={},
        card="# onnx\n",
        files={"model.onnx": export.path},
    )
    read_package(tmp_path / "pkg")
    stored = tmp_path / "pkg" / "model.onnx"
    assert stored.read_bytes() == export.path.read_bytes()
    assert OnnxRunner(stored, export.input_names).num_parameters() > 0
