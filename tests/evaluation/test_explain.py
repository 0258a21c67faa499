"""Permutation importance and integrated-gradients attributions on small trained models:
tables (classifier and regressor), text, images, and the variants that cannot be explained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import foundry
from foundry.config.schema import CompressConfig
from foundry.errors import DataError, ModelError
from foundry.evaluation.explain import (
    Explainer,
    explain,
    explain_file,
    heatmap,
    permutation_importance,
)
from foundry.predictor import run_model

INFORMATIVE = {"x1", "c1"}
NOISE = {"x2", "noise", "c2"}


def _table(n: int, seed: int, *, regression: bool = False) -> pd.DataFrame:
    """x1 and c1 decide the label; x2, noise and c2 are noise."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
            "noise": rng.normal(size=n),
            "c1": rng.choice(["a", "b", "c"], n),
            "c2": rng.choice(["p", "q", "r", "s"], n),
        }
    )
    signal = 1.5 * df.x1 + 2.0 * (df.c1 == "a") - 0.8
    if regression:
        df["y"] = 10 * signal + rng.normal(0, 0.5, n)
    else:
        df["y"] = np.where(signal > 0, "yes", "no")
    return df


def _train(root: Path, name: str, data: Path, **sections) -> str:
    config = {
        "name": name,
        "data": {"path": str(data)},
        "output_dir": str(root / "runs"),
        "evaluate": {"explain": {"permutation_importance": False}},
        **sections,
    }
    config.setdefault("features", {"target": "y"})
    return foundry.train(config, progress=False, quiet=True).model_ref


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[str, pd.DataFrame]]:
    """Small trained models in a module-wide registry, with fresh rows to explain."""
    root = tmp_path_factory.mktemp("explain")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(root / "home"))
        mp.delenv("FOUNDRY_DATABASE_URL", raising=False)
        for kind, regression in (("clf", False), ("reg", True)):
            path = root / f"{kind}.csv"
            _table(800, 0, regression=regression).to_csv(path, index=False)
            ref = _train(
                root,
                kind,
                path,
                model={"type": "mlp", "layers": [32]},
                train={"epochs": 12, "batch_size": 64, "optimizer": {"lr": 0.02}},
            )
            out[kind] = (ref, _table(300, 1, regression=regression))
    out["home"] = root / "home"
    return out


@pytest.fixture
def registry_home(models, monkeypatch):
    monkeypatch.setenv("FOUNDRY_HOME", str(models["home"]))


def _load(models, kind: str):
    ref, rows = models[kind]
    return foundry.load(ref), rows


# ---------------------------------------------------------------------- global importance


def test_permutation_importance_ranks_the_informative_columns_first(models, registry_home):
    predictor, rows = _load(models, "clf")
    result = permutation_importance(predictor, rows, repeats=3, max_rows=250, seed=0)
    assert result["metric"] == "accuracy" and result["rows"] == 250 and result["repeats"] == 3
    assert result["baseline"] > 0.9
    ranked = [f["feature"] for f in result["features"]]
    assert set(ranked) == INFORMATIVE | NOISE
    assert set(ranked[:2]) == INFORMATIVE
    by_name = {f["feature"]: f["importance"] for f in result["features"]}
    assert min(by_name[c] for c in INFORMATIVE) > 0.1
    assert max(by_name[c] for c in NOISE) < 0.05
    json.dumps(result, allow_nan=False)


def test_permutation_importance_scores_regressors_by_r2(models, registry_home):
    predictor, rows = _load(models, "reg")
    result = permutation_importance(predictor, rows, repeats=2)
    assert result["metric"] == "r2" and result["baseline"] > 0.8
    assert {f["feature"] for f in result["features"][:2]} == INFORMATIVE


def test_permutation_importance_needs_the_target(models, registry_home):
    predictor, rows = _load(models, "clf")
    with pytest.raises(DataError, match="target column 'y'"):
        permutation_importance(predictor, rows.drop(columns=["y"]))
    with pytest.raises(DataError, match=r"lacks input column\(s\) \['c1'\]"):
        permutation_importance(predictor, rows.drop(columns=["c1"]))


# ---------------------------------------------------------------------- local attributions


def test_attributions_are_complete_and_land_on_the_informative_columns(models, registry_home):
    predictor, rows = _load(models, "clf")
    rows = rows.head(40)
    result = explain(predictor, rows, steps=50)
    assert result["method"] == "integrated_gradients" and result["steps"] == 50
    assert set(result["baseline"]) == INFORMATIVE | NOISE
    assert "training mean" in result["baseline"]["x1"]
    assert "mean embedding" in result["baseline"]["c1"]
    json.dumps(result, allow_nan=False)

    encoded = predictor.preprocessor.transform(rows, with_target=False)
    raw = run_model(predictor.model, encoded, len(rows))  # logits before any temperature
    predicted = predictor.predict(rows)["y"].tolist()
    magnitude = dict.fromkeys(INFORMATIVE | NOISE, 0.0)
    for i, row in enumerate(result["rows"]):
        assert row["prediction"] == predicted[i] == row["target_class"]
        k = predictor.task.classes.index(row["target_class"])
        assert row["output"] == pytest.approx(float(raw[i, k]), abs=1e-4)
        gap = row["output"] - row["baseline_output"]
        total = sum(row["attributions"].values())
        # Completeness: the attributions add up to output - baseline_output, up to the
        # integral's error, which is Captum's convergence delta.
        assert total - gap == pytest.approx(row["convergence_delta"], abs=1e-4)
        assert abs(row["convergence_delta"]) < 0.02 * max(1.0, abs(gap))
        for name, value in row["attributions"].items():
            magnitude[name] += abs(value)
    assert min(magnitude[c] for c in INFORMATIVE) > 3 * max(magnitude[c] for c in NOISE)


def test_a_chosen_class_is_explained_in_every_row(models, registry_home):
    predictor, rows = _load(models, "clf")
    result = explain(predictor, rows, target="yes", max_rows=6, steps=20)
    assert len(result["rows"]) == 6
    assert {r["target_class"] for r in result["rows"]} == {"yes"}
    with pytest.raises(DataError, match="unknown class 'maybe'.*classes: no, yes"):
        explain(predictor, rows, target="maybe")
    with pytest.raises(DataError, match=r"lacks input column\(s\) \['x2'\]"):
        explain(predictor, rows.drop(columns=["x2"]))


def test_regression_attributions_are_in_the_target_units(models, registry_home):
    predictor, rows = _load(models, "reg")
    rows = rows.head(10)
    result = explain(predictor, rows, steps=50)
    assert "value" in result["output"]
    predicted = predictor.predict(rows)["y"].to_numpy()
    for i, row in enumerate(result["rows"]):
        assert row["target_class"] is None
        assert row["output"] == pytest.approx(row["prediction"], abs=1e-3)
        assert row["output"] == pytest.approx(float(predicted[i]), abs=1e-3)
        gap = row["output"] - row["baseline_output"]
        # In the target's units (std ~15 here): small against its spread.
        assert abs(row["convergence_delta"]) < 0.02 * max(predictor.task.target_std, abs(gap))
        top = max(row["attributions"], key=lambda c: abs(row["attributions"][c]))
        assert top in INFORMATIVE


def test_explain_file_writes_json_with_importance(models, registry_home, tmp_path):
    ref, rows = models["clf"]
    rows.to_csv(tmp_path / "rows.csv", index=False)
    result = explain_file(
        ref,
        tmp_path / "rows.csv",
        output=tmp_path / "out" / "e.json",
        rows=3,
        steps=10,
        importance=True,
    )
    written = json.loads((tmp_path / "out" / "e.json").read_text())
    assert written["model"] == ref and len(written["rows"]) == 3 and written["steps"] == 10
    assert written["importance"]["metric"] == "accuracy"
    assert result.importance == written["importance"]
    assert len(result.frame) == 3


# ---------------------------------------------------------------------- text and images


def _reviews(path: Path, n: int, seed: int) -> None:
    """Four neutral words and one sentiment word per review, which alone sets the label."""
    rng = np.random.default_rng(seed)
    filler = ["the", "film", "was", "a", "story", "and", "plot", "it", "really", "this"]
    rows = []
    for _ in range(n):
        good = bool(rng.integers(0, 2))
        words = list(rng.choice(filler, 4))
        words.insert(int(rng.integers(0, 5)), "great" if good else "awful")
        rows.append({"text": " ".join(words), "y": "pos" if good else "neg"})
    pd.DataFrame(rows).to_csv(path, index=False)


def test_text_tokens_carry_the_sentiment(tmp_path):
    _reviews(tmp_path / "reviews.csv", 400, 0)
    text = {"name": "text", "type": "text", "text": {"max_length": 12}}
    ref = _train(
        tmp_path,
        "reviews",
        tmp_path / "reviews.csv",
        features={"target": "y", "inputs": [text]},
        model={"type": "text", "encoder": "bow", "embedding_dim": 16},
        train={"epochs": 15, "batch_size": 32, "optimizer": {"lr": 0.01}},
    )
    predictor = foundry.load(ref)
    _reviews(tmp_path / "new.csv", 12, 1)
    rows = pd.read_csv(tmp_path / "new.csv")
    result = explain(predictor, rows, steps=30)
    assert "padding" in result["baseline"]["text"]
    for review, row in zip(rows["text"], result["rows"], strict=True):
        tokens = row["tokens"]
        assert [t for t, _ in tokens] == review.split()  # padding left out
        top = max(tokens, key=lambda t: abs(t[1]))[0]
        assert top in ("great", "awful"), tokens
        assert sum(v for _, v in tokens) == pytest.approx(row["attributions"]["text"])
        gap = row["output"] - row["baseline_output"]
        assert abs(row["convergence_delta"]) < 0.02 * max(1.0, abs(gap))


def _bars(root: Path, n_per_class: int, size: int = 12) -> None:
    """Dark images with one bright vertical or horizontal bar."""
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


def test_images_get_a_coarse_heatmap(tmp_path):
    _bars(tmp_path / "bars", 16)
    ref = _train(
        tmp_path,
        "bars",
        tmp_path / "bars",
        features={"target": "label"},
        model={"type": "cnn", "conv": [{"filters": 8}], "layers": []},
        train={"epochs": 3, "batch_size": 16},
    )
    predictor = foundry.load(ref)
    rows = foundry.data.read_table(tmp_path / "bars").sample(4, random_state=0)
    result = explain(predictor, rows, steps=20)
    assert "zero" in result["baseline"]["image"]
    for row in result["rows"]:
        grid = np.array(row["heatmap"], dtype=float)
        assert grid.shape == (8, 8)  # 12 x 12 pixels summed into 8 x 8 cells
        assert grid.sum() == pytest.approx(row["attributions"]["image"], abs=1e-6)
        assert set(row["attributions"]) == {"image"}

    # The API's path: PNG bytes as records, predictions as /predict answers them.
    from foundry.serve.served_model import ServedModel

    records = [{"image": Path(p).read_bytes()} for p in rows["image"]]
    predictions = ServedModel.from_predictor(predictor).predict_records(records)
    served = Explainer(predictor).explain_records(records, predictions, steps=20)
    for row, again in zip(result["rows"], served["rows"], strict=True):
        assert again["prediction"] == row["prediction"]
        np.testing.assert_allclose(again["heatmap"], row["heatmap"], atol=1e-6)


def test_heatmap_cells_sum_their_pixels():
    pixels = np.arange(12.0).reshape(3, 4)
    # Rows split [0] [1, 2] and columns [0, 1] [2, 3].
    assert heatmap(pixels, grid=2) == [[1.0, 5.0], [26.0, 34.0]]
    assert np.array(heatmap(pixels)).shape == (3, 4)  # smaller than the grid: per pixel


# ---------------------------------------------------------------------- variants


def test_onnx_and_int8_variants_point_at_their_parent(models, registry_home):
    ref, rows = models["clf"]
    config = CompressConfig(methods=["int8", "onnx"], repeats=3)
    result = foundry.compress(ref, config, quiet=True)
    variants = {v.method: v.ref for v in result.variants if v.method != "parent"}
    for method, variant in variants.items():
        predictor = foundry.load(variant)
        with pytest.raises(ModelError, match=f"{method} variant") as err:
            Explainer(predictor)
        assert f"foundry explain {ref}" in str(err.value)
        # Global importance needs only forward passes: it works on every variant.
        assert permutation_importance(predictor, rows, repeats=1)["baseline"] > 0.9


def test_the_served_network_is_left_alone(models, registry_home):
    """Explanations hook a private copy: the predictor's own network has no hooks and
    its predictions do not change."""
    predictor, rows = _load(models, "clf")
    before = predictor.predict(rows.head(5))
    explainer = Explainer(predictor)
    explainer.explain_frame(rows.head(5), steps=5)
    assert all(not m._forward_hooks for m in predictor.model.modules())
    pd.testing.assert_frame_equal(predictor.predict(rows.head(5)), before)
    assert explainer.explain_frame(rows.head(1), steps=5)["rows"][0]["attributions"]


@pytest.mark.slow  # fine-tunes a tiny BERT (about 10 s)
def test_fine_tuned_hugging_face_classifiers_are_explained_per_token(tmp_path):
    from tests.lm.hf_tiny import bert_dir, write_sentiment_csv

    data = write_sentiment_csv(tmp_path / "train.csv")
    config = {
        "name": "sentiment",
        "data": {"path": str(data)},
        "features": {"target": "label"},
        "model": {"type": "hf", "name_or_path": str(bert_dir(tmp_path)), "max_length": 16},
        "train": {"epochs": 3, "batch_size": 8, "optimizer": {"lr": 0.002}},
        "evaluate": {"explain": {"permutation_importance": False}},
        "output_dir": str(tmp_path / "runs"),
    }
    predictor = foundry.load(foundry.train(config, progress=False, quiet=True).model_ref)
    rows = pd.read_csv(write_sentiment_csv(tmp_path / "new.csv", n=6, seed=1))
    result = explain(predictor, rows, steps=30)
    assert set(result["baseline"]) == {"text"}
    predicted = predictor.predict(rows)["label"].tolist()
    sentiment = {"good", "great", "fine", "bad", "awful", "dull"}
    for i, row in enumerate(result["rows"]):
        assert row["prediction"] == predicted[i]
        words = [t for t, _ in row["tokens"]]
        assert words[0] == "[CLS]" and words[-1] == "[SEP]"
        assert max(row["tokens"], key=lambda t: abs(t[1]))[0] in sentiment, row["tokens"]
        gap = row["output"] - row["baseline_output"]
        assert abs(row["convergence_delta"]) < 0.05 * max(1.0, abs(gap))
    assert permutation_importance(predictor, rows.assign(label=predicted), repeats=2)


@pytest.mark.parametrize(
    ("task", "n_outputs"),
    [("binary", 1), ("multiclass", 4), ("regression", 1)],
)
def test_importance_scores_the_metric_compute_metrics_gives(task, n_outputs):
    """Permutation importance scores with its own accuracy / R² (the full metrics cost
    seconds per call on many classes); they equal compute_metrics' values."""
    from foundry.data.schema import TaskInfo
    from foundry.evaluation.explain import _main_metric
    from foundry.evaluation.metrics import compute_metrics

    rng = np.random.default_rng(0)
    classes = [] if task == "regression" else [f"c{i}" for i in range(max(2, n_outputs))]
    info = TaskInfo("y", task, classes, target_mean=50.0, target_std=7.0)
    outputs = rng.normal(size=(60, n_outputs))
    y = rng.normal(size=60) if task == "regression" else rng.integers(0, len(classes), 60)
    metric = "r2" if task == "regression" else "accuracy"
    assert _main_metric(info, y, outputs) == pytest.approx(
        compute_metrics(info, y, outputs)[metric], abs=1e-12
    )
