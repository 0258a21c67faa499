"""`foundry init` picks the model by the data (gbm for tables, ngram for text, cnn for
images, hf with --pretrained), sizes the neural families' epochs and batches from the
data, keeps near-unique strings with structure as text and drops opaque identifiers,
saying each choice on the console."""

from __future__ import annotations

import base64
import hashlib
import random
import re
import uuid

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from tests.config.init_tables import WORDS, package_table

from foundry.config import load_config
from foundry.config.init import MAX_EPOCHS, NEURAL_ROWS_PER_S, TIME_BUDGET_S, init_config
from foundry.console import Reporter
from foundry.errors import ConfigError


def init(tmp_path, df_or_dir, target, capsys, **kwargs) -> tuple[dict, str]:
    """init_config on a table (written as CSV) or a folder; the config and the console."""
    if isinstance(df_or_dir, pd.DataFrame):
        data = tmp_path / "data.csv"
        df_or_dir.to_csv(data, index=False)
    else:
        data = df_or_dir
    path = init_config(data, target, output=tmp_path / "c.yaml", force=True, say=Reporter(),
                       **kwargs)  # fmt: skip
    load_config(path)  # what init writes validates as is
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    return yaml.safe_load(path.read_text()), err


def test_a_table_gets_gbm_and_says_why(tmp_path, capsys):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "x": rng.normal(size=100),
            "colour": rng.choice(["r", "g", "b"], 100),
            "flag": rng.choice(["yes", "no"], 100),
            "y": rng.choice(["a", "b"], 100),
        }
    )
    config, err = init(tmp_path, df, "y", capsys)
    assert config["model"] == {"type": "gbm"}
    assert "train" not in config  # epochs and batches are a network's settings
    assert "init: model gbm: a table of 1 number, 1 category, 1 binary input(s)" in err


def reviews_table(n: int) -> pd.DataFrame:
    """A `review` text column, a `stars` number and a `y` target."""
    rng = random.Random(0)
    reviews = [" ".join(rng.choices(WORDS, k=8)) for _ in range(n)]
    return pd.DataFrame({"review": reviews, "stars": [rng.randint(1, 5) for _ in reviews],
                         "y": [rng.choice("ab") for _ in reviews]})  # fmt: skip


def test_a_text_column_gets_ngram(tmp_path, capsys):
    config, err = init(tmp_path, reviews_table(60), "y", capsys)
    assert config["model"] == {"type": "ngram"}
    assert "init: model ngram: 'review' is text" in err


def test_an_image_folder_gets_a_cnn_with_epochs_for_its_size(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 255, (16, 16), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(tmp_path / "imgs" / label / f"{i}.png")
    config, err = init(tmp_path, tmp_path / "imgs", "label", capsys)
    assert config["model"] == {"type": "cnn"}
    assert config["train"]["epochs"] == MAX_EPOCHS  # 32 training images: cheap
    assert config["train"]["batch_size"] == 16
    assert "init: model cnn: 'image' holds images" in err
    assert "init: train: 100 epochs x batch 16" in err


def test_pretrained_gets_the_hugging_face_fine_tune(tmp_path, capsys):
    df = package_table(60)
    config, err = init(tmp_path, df.drop(columns="size"), "section", capsys,
                       pretrained="sentence-transformers/all-MiniLM-L6-v2")  # fmt: skip
    assert config["model"]["type"] == "hf"
    assert config["features"]["inputs"] == [{"name": "package", "type": "text"}]
    assert "init: model hf: --pretrained fine-tunes sentence-transformers/all-MiniLM-L6-v2" in err


def test_an_explicit_model_is_kept_and_an_unknown_one_refused(tmp_path, capsys):
    df = package_table(60)
    config, err = init(tmp_path, df, "section", capsys, model="mlp")
    assert config["model"] == {"type": "mlp"} and "init: model mlp: chosen with --model" in err
    with pytest.raises(ConfigError, match="--model svm is not a model type;.*gbm.*ngram"):
        init(tmp_path, df, "section", capsys, model="svm")


def test_epochs_and_batch_follow_the_data_size(tmp_path, capsys):
    """Small data: every epoch is cheap (the most epochs), small batches keep ~50 steps
    an epoch; big data: fewer epochs, so the run stays within the time budget."""
    small, err = init(tmp_path, reviews_table(200), "y", capsys, model="text")
    assert small["train"]["epochs"] == MAX_EPOCHS
    assert small["train"]["batch_size"] == 16  # the smallest: 160 training rows
    big_df = reviews_table(20_000)
    big, err = init(tmp_path, big_df, "y", capsys, model="text")
    rows = int(len(big_df) * 0.8)
    epochs = big["train"]["epochs"]
    assert epochs < MAX_EPOCHS and big["train"]["batch_size"] == 128
    assert epochs * rows / NEURAL_ROWS_PER_S["text"] <= TIME_BUDGET_S
    assert big["train"]["early_stopping"]["patience"] < small["train"]["early_stopping"]["patience"]
    assert f"init: train: {epochs} epochs x batch 128" in err and "min on 2 CPU cores" in err


def test_structured_unique_strings_are_text_and_opaque_ids_are_dropped(tmp_path, capsys):
    """The issue's package-name column is kept (as text); each opaque identifier is left
    out with its reason, one console line per column."""
    n = 200
    rng = random.Random(1)
    df = package_table(n)
    df["path"] = [f"/usr/share/{p}/{rng.choice(WORDS)}.{rng.choice(['py', 'pm', 'go'])}"
                  for p in df["package"]]  # fmt: skip
    df["url"] = [f"https://pkgs.example.org/{p}" for p in df["package"]]
    df["key"] = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]
    df["digest"] = [hashlib.sha1(rng.randbytes(8)).hexdigest() for _ in range(n)]
    df["token"] = [base64.urlsafe_b64encode(rng.randbytes(9)).decode() for _ in range(n)]
    df["ticket"] = [f"T-{i:06d}" for i in rng.sample(range(10**6), n)]
    df["row"] = range(n)
    config, err = init(tmp_path, df, "section", capsys)
    written = (tmp_path / "c.yaml").read_text()
    types = {f["name"]: f["type"] for f in config["features"]["inputs"]}
    assert types == {"package": "text", "size": "number", "path": "text", "url": "text"}
    assert config["model"] == {"type": "ngram"}
    reasons = {
        "key": "UUIDs: 100% of values",
        "digest": "hex hashes: 100% of values",
        "token": "near-random strings:",
        "ticket": "numbered ids: the values differ only in their digits",
        "row": "row numbers: 200 distinct consecutive integers",
    }
    for column, reason in reasons.items():
        line = f"'{column}' left out of features.inputs: identifier ({reason}"
        assert err.count(f"'{column}' left out") == 1 and line in err, column
        assert re.search(rf"#   {column}: identifier \({re.escape(reason)}", written)
