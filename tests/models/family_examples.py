"""One tiny, fast example per registered model family (and per task a family has), for
the conformance suite (test_family_conformance.py). A family registered without an
example here fails `test_every_registered_model_type_has_an_example`: add one.

(Not a conftest.py: the suite imports these by name.)
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

LANGUAGE_PROMPTS = ["the cat sat", "a dog ran to"]


@dataclass
class Example:
    config: dict[str, Any]
    batch: Any
    """What the family's `outputs` reads: a table, or a list of texts."""
    route: str
    """How it is served: predict (/v1/models/{name}/predict), completions, embeddings,
    recommend (/v1/models/{name}/recommend; `batch` is a list of user ids)."""
    bad: Any = None
    """A batch `outputs` must refuse with a FoundryError matching `bad_match`."""
    bad_match: str = ""
    checks: tuple[str, ...] = ()
    """Manifest sections its training must have written (calibration, fairness, ...)."""
    records: list[dict[str, Any]] | None = None
    """`batch` as an API client sends it (default: the table's rows as JSON records)."""

    def served_records(self) -> list[dict[str, Any]]:
        return self.records if self.records is not None else self.batch.to_dict("records")


def _table(root: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 120
    df = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n).round(1),
            "color": rng.choice(["red", "green", "blue"], n),
            "group": rng.choice(["a", "b"], n),
        }
    )
    df["tier"] = np.where(df.age + (df.color == "red") * 10 > 45, "high", "low")
    path = root / "table.csv"
    df.to_csv(path, index=False)
    return path


def _common(root: Path, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "train": {"epochs": 2, "batch_size": 16, "num_threads": 1},
        "output_dir": str(root / "runs"),
    }


def mlp(root: Path) -> Example:
    path = _table(root)
    rows = pd.read_csv(path).drop(columns=["tier"]).head(6)
    config = {
        **_common(root, "conf-mlp"),
        "data": {"path": str(path)},
        "features": {"target": "tier"},
        "model": {"type": "mlp", "layers": [8]},
        "evaluate": {"fairness": {"sensitive_features": ["group"]}},
    }
    return Example(
        config,
        rows,
        "predict",
        bad=rows.drop(columns=["age"]),
        bad_match="age",
        checks=("fairness", "explain"),
    )


def cnn(root: Path) -> Example:
    rng = np.random.default_rng(0)
    folder = root / "bars"
    for label in ("vertical", "horizontal"):
        (folder / label).mkdir(parents=True)
        for i in range(12):
            img = rng.integers(0, 60, (8, 8), dtype=np.uint8)
            k = int(rng.integers(1, 7))
            if label == "vertical":
                img[:, k] = 255
            else:
                img[k, :] = 255
            Image.fromarray(img, mode="L").save(folder / label / f"{i}.png")
    config = {
        **_common(root, "conf-cnn"),
        "data": {"path": str(folder)},
        "features": {"target": "label", "inputs": [{"name": "image", "type": "image"}]},
        "model": {"type": "cnn", "conv": [{"filters": 2}], "layers": [4]},
    }
    batch = pd.DataFrame({"image": sorted(str(p) for p in folder.rglob("*.png"))[:4]})
    bad = pd.DataFrame({"image": [str(root / "no-such-image.png")]})
    # served images are the files' bytes, base64-encoded (the API fetches no paths)
    records = [
        {"image": base64.b64encode(Path(path).read_bytes()).decode()} for path in batch["image"]
    ]
    return Example(config, batch, "predict", bad=bad, bad_match="no-such-image", records=records)


def text(root: Path) -> Example:
    rng = random.Random(0)
    good, poor = ["great value", "works well", "love it"], ["broke quickly", "very poor"]
    rows = [
        {"review": f"{rng.choice(good if y else poor)} and more", "label": "pos" if y else "neg"}
        for y in [i % 2 for i in range(80)]
    ]
    path = root / "reviews.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    config = {
        **_common(root, "conf-text"),
        "data": {"path": str(path)},
        "features": {
            "target": "label",
            "inputs": [{"name": "review", "type": "text", "text": {"max_length": 8}}],
        },
        "model": {"type": "text", "encoder": "bow", "embedding_dim": 8},
    }
    batch = pd.DataFrame({"review": ["love it and more", "very poor"]})
    return Example(config, batch, "predict", bad=pd.DataFrame({"x": [1]}), bad_match="review")


def gbm(root: Path) -> Example:
    """LightGBM over the same table, with missing numbers (NaN, which trees take as they
    are), a category column (native categorical) and fairness mitigation (the group
    thresholds apply to served predictions too)."""
    path = _table(root)
    df = pd.read_csv(path)
    df.loc[::7, "age"] = np.nan
    df.to_csv(path, index=False)
    rows = df.drop(columns=["tier"]).head(8)
    config = {
        **_common(root, "conf-gbm"),
        "data": {"path": str(path)},
        "features": {"target": "tier"},
        "model": {"type": "gbm", "n_estimators": 40, "min_child_samples": 5},
        "evaluate": {
            "fairness": {
                "sensitive_features": ["group"],
                "mitigation": {"constraint": "demographic_parity", "tolerance": 0.2},
            }
        },
    }
    # JSON has no NaN: a missing number is sent as null
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in rows.to_dict("records")
    ]
    return Example(
        config,
        rows,
        "predict",
        bad=rows.assign(age="old"),
        bad_match="age",
        checks=("fairness", "explain", "calibration"),
        records=records,
    )


def ngram(root: Path) -> Example:
    """TF-IDF n-grams and a linear head over a structured-name text column (package names
    split on punctuation), a free-text column and a category, with a fairness audit."""
    rng = random.Random(0)
    stems = {"python": "python3-{}", "perl": "lib{}-perl", "go": "golang-{}-dev"}
    words = ["foo", "bar", "baz", "qux", "zip", "zap", "lorem", "ipsum"]
    rows = []
    for i in range(90):
        section = list(stems)[i % 3]
        rows.append(
            {
                "package": stems[section].format(f"{rng.choice(words)}{i}"),
                "description": f"{rng.choice(words)} {rng.choice(words)} module",
                "group": rng.choice(["a", "b"]),
                "section": section,
            }
        )
    path = root / "packages.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    config = {
        **_common(root, "conf-ngram"),
        # package names are unique, and kept: their parts are the signal
        "data": {"path": str(path), "pii": {"keep_columns": ["package"]}},
        "features": {
            "target": "section",
            "inputs": [
                {"name": "package", "type": "text"},
                {"name": "description", "type": "text"},
                {"name": "group", "type": "category"},
            ],
        },
        "model": {"type": "ngram"},
        "evaluate": {"fairness": {"sensitive_features": ["group"]}},
    }
    batch = pd.DataFrame(
        {
            "package": ["python3-newthing", "libnew-perl", "golang-new-dev"],
            "description": ["foo module", "bar baz module", None],
            "group": ["a", "b", "c"],
        }
    )
    records = [
        {"package": "python3-newthing", "description": "foo module", "group": "a"},
        {"package": "libnew-perl", "description": "bar baz module", "group": "b"},
        {"package": "golang-new-dev", "description": None, "group": "c"},
    ]
    return Example(
        config,
        batch,
        "predict",
        bad=batch.drop(columns=["package"]),
        bad_match="package",
        checks=("fairness", "explain", "calibration"),
        records=records,
    )


def auto(root: Path) -> Example:
    """A model search over gbm and a small mlp: the registered package is the winner's
    own (`config.model.type` gbm or mlp), so the suite checks it as that family's."""
    path = _table(root)
    rows = pd.read_csv(path).drop(columns=["tier"]).head(6)
    config = {
        **_common(root, "conf-auto"),
        "data": {"path": str(path)},
        "features": {"target": "tier"},
        "model": {
            "type": "auto",
            "budget": "2m",
            "candidates": ["gbm", "mlp"],
            "overrides": {"gbm": {"n_estimators": 40, "min_child_samples": 5},
                          "mlp": {"layers": [8]}},
        },
    }
    return Example(
        config, rows, "predict", bad=rows.drop(columns=["age"]), bad_match="age",
        checks=("explain",),
    )


def ensemble(root: Path) -> Example:
    """A model search told to register its ensemble of gbm and a small mlp whatever it
    scores (`ensemble: always`): the package holds both members' packages."""
    example = auto(root)
    example.config["name"] = "conf-ensemble"
    example.config["model"]["ensemble"] = "always"
    example.config["evaluate"] = {"fairness": {"sensitive_features": ["group"]}}
    example.checks = ("fairness", "calibration")
    return example


def _corpus(root: Path) -> Path:
    rng = random.Random(0)
    subjects, verbs = ["the cat", "a dog", "the owl"], ["sat on", "ran to", "looked at"]
    docs = [
        " ".join(
            f"{rng.choice(subjects)} {rng.choice(verbs)} the mat." for _ in range(rng.randint(2, 3))
        )
        for _ in range(40)
    ]
    path = root / "corpus.txt"
    path.write_text("\n\n".join(docs) + "\n")
    return path


def gpt(root: Path) -> Example:
    config = {
        **_common(root, "conf-gpt"),
        "data": {"path": str(_corpus(root))},
        "model": {
            "type": "gpt",
            "n_layers": 1,
            "d_model": 16,
            "n_heads": 2,
            "context_length": 32,
            "vocab_size": 300,
        },
    }
    return Example(config, LANGUAGE_PROMPTS, "completions")


def _hf_models(root: Path) -> tuple[Path, Path]:
    """A tiny BERT and a tiny GPT-2, built locally (tests/lm/hf_tiny.py), once per root."""
    import hf_tiny

    bert, gpt2 = root.parent / "tiny-bert" / "tiny-bert", root.parent / "tiny-gpt2" / "tiny-gpt2"
    if not bert.exists():
        bert = hf_tiny.bert_dir(root.parent / "tiny-bert")
    if not gpt2.exists():
        gpt2 = hf_tiny.gpt2_dir(root.parent / "tiny-gpt2")
    return bert, gpt2


def _hf_classifier(root: Path, name: str, **model: Any) -> Example:
    import hf_tiny

    bert, _ = _hf_models(root)
    path = hf_tiny.write_sentiment_csv(root / "sentiment.csv", n=40)
    config = {
        **_common(root, name),
        "data": {"path": str(path)},
        "features": {"target": "label"},
        "model": {"type": "hf", "name_or_path": str(bert), "max_length": 12, **model},
    }
    batch = pd.DataFrame({"text": ["the film was great", "the meal was awful"]})
    return Example(config, batch, "predict", bad=pd.DataFrame({"x": ["a"]}), bad_match="text")


def hf_classifier(root: Path) -> Example:
    return _hf_classifier(root, "conf-hf-cls")


def hf_lora(root: Path) -> Example:
    return _hf_classifier(root, "conf-hf-lora", lora={"r": 2})


def hf_causal_lm(root: Path) -> Example:
    _, gpt2 = _hf_models(root)
    config = {
        **_common(root, "conf-hf-lm"),
        "data": {"path": str(_corpus(root))},
        "model": {"type": "hf", "name_or_path": str(gpt2), "max_length": 32},
    }
    return Example(config, LANGUAGE_PROMPTS, "completions")


def hf_embedding(root: Path) -> Example:
    bert, _ = _hf_models(root)
    config = {
        **_common(root, "conf-hf-emb"),
        "data": {"path": str(_corpus(root))},
        "model": {"type": "hf", "name_or_path": str(bert), "task": "embedding"},
    }
    return Example(config, ["the cat sat on the mat", "a dog ran"], "embeddings")


def _interactions(root: Path, name: str, model: dict[str, Any], **recommend: Any) -> Example:
    from foundry.recommend.planted import planted_interactions

    path = root / "events.csv"
    planted_interactions(60, seed=0).to_csv(path, index=False)
    config = {
        **_common(root, name),
        "data": {"path": str(path)},
        "recommend": {"user": "user", "item": "item", "weight": "weight", "time": "ts",
                      **recommend},
        "model": model,
    }
    # user ids: two seen in training and one the model must answer with popularity
    return Example(config, ["u0", "u7", "nobody"], "recommend", bad="u0", bad_match="list")


def popularity(root: Path) -> Example:
    return _interactions(root, "conf-popularity", {"type": "popularity"})


def mf(root: Path) -> Example:
    return _interactions(root, "conf-mf", {"type": "mf", "factors": 4, "iterations": 3})


def two_tower(root: Path) -> Example:
    from foundry.recommend.planted import planted_item_features

    features = root / "items.csv"
    planted_item_features().to_csv(features, index=False)
    model = {"type": "two_tower", "dim": 4, "epochs": 2, "batch_size": 64}
    return _interactions(root, "conf-two-tower", model, item_features=str(features))


EXAMPLES: dict[str, Callable[[Path], Example]] = {
    "mlp": mlp,
    "cnn": cnn,
    "text": text,
    "gbm": gbm,
    "ngram": ngram,
    "auto": auto,
    "ensemble": ensemble,
    "gpt": gpt,
    "hf-classifier": hf_classifier,
    "hf-lora": hf_lora,
    "hf-causal-lm": hf_causal_lm,
    "hf-embedding": hf_embedding,
    "popularity": popularity,
    "mf": mf,
    "two_tower": two_tower,
}
"""case id → builder; a case's `model.type` is its config's."""
