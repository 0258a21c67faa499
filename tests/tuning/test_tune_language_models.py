"""`foundry tune` on language models: a GPT trained from scratch and Hugging Face models
(a text classifier, a causal LM), each trial unregistered and the best one registered
with its tokenizer / transformers folder so it loads. Tiny models built locally
(tests/lm/hf_tiny.py); nothing is downloaded."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tests.lm import hf_tiny

import foundry
from foundry.config.schema import GenerationConfig, TrainConfig
from foundry.errors import ConfigError
from foundry.lm.load import load as load_lm
from foundry.registry import Registry
from foundry.tuning import tune

LR = {"type": "log_float", "low": 1e-3, "high": 3e-2}
TWO_RANDOM_TRIALS = {
    "sampler": "random",
    "n_trials": 2,
    "pruner": {"type": "none"},
    "params": {"train.optimizer.lr": LR},
}


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {"bert": hf_tiny.bert_dir(root), "gpt2": hf_tiny.gpt2_dir(root)}


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def write_corpus(path: Path, n_docs: int = 40) -> Path:
    """Short documents of a tiny grammar."""
    rng = random.Random(0)
    subjects, verbs, objects = ["the cat", "a dog", "my bird"], ["sat on", "ran to"], ["a mat"]
    docs = [
        " ".join(
            f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}."
            for _ in range(rng.randint(2, 4))
        )
        for _ in range(n_docs)
    ]
    path.write_text("\n\n".join(docs) + "\n")
    return path


def completed(result) -> list[str]:
    return [t["state"] for t in result.trials]


@pytest.mark.slow
def test_tuning_a_gpt_registers_a_best_model_that_loads_and_generates(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    path = write_yaml(
        tmp_path / "gpt.yaml",
        {
            "name": "tiny-gpt",
            "data": {"path": corpus.name},
            "model": {
                "type": "gpt",
                "n_layers": 1,
                "d_model": 16,
                "n_heads": 2,
                "context_length": 32,
                "vocab_size": 300,
                "dropout": 0.0,
            },
            "train": {"epochs": 2, "batch_size": 8, "num_threads": 1},
            "output_dir": "runs",
            "tune": TWO_RANDOM_TRIALS,
        },
    )
    result = tune(path, quiet=True)

    assert completed(result) == ["COMPLETE", "COMPLETE"]
    assert result.model_ref == "tiny-gpt:1"
    trial = Path(result.trials[result.best_trial]["run_dir"])
    assert (trial / "COMPLETED").read_text() == "unregistered: package/\n"
    record = Registry().resolve(result.model_ref)
    assert (record.path / "tokenizer.json").is_file()  # the extra file came along
    assert (record.path / "card.md").read_text().startswith("# tiny-gpt")

    lm = load_lm(result.model_ref)
    [c] = lm.generate(["the cat"], GenerationConfig(max_tokens=5, temperature=0))
    assert c.completion_tokens >= 1 and isinstance(c.text, str)


@pytest.mark.slow
def test_tuning_a_hf_classifier_registers_a_best_model_that_predicts(tmp_path, hf_models):
    hf_tiny.write_sentiment_csv(tmp_path / "train.csv", n=48)
    path = write_yaml(
        tmp_path / "sentiment.yaml",
        {
            "name": "sentiment",
            "data": {"path": "train.csv", "split": {"train": 0.7, "val": 0.15, "test": 0.15}},
            "features": {"target": "label"},
            "model": {"type": "hf", "name_or_path": str(hf_models["bert"]), "max_length": 16},
            "train": {"epochs": 2, "batch_size": 8},
            "output_dir": "runs",
            "tune": TWO_RANDOM_TRIALS,
        },
    )
    result = tune(path, quiet=True)

    assert completed(result) == ["COMPLETE", "COMPLETE"]
    record = Registry().resolve(result.model_ref)
    assert (record.path / "hf" / "tokenizer.json").is_file()
    model = load_lm(result.model_ref)
    predictions = model.predict_texts(["the film was great", "the meal was awful"])
    assert [p["label"] in ("pos", "neg") for p in predictions] == [True, True]


def test_a_hf_causal_lm_reports_each_epoch_and_writes_an_unregistered_package(
    tmp_path, hf_models
):
    data = hf_tiny.write_instructions(tmp_path / "instructions.jsonl", n=16)
    config = {
        "name": "tiny-chat",
        "data": {"path": str(data), "split": {"train": 0.75, "val": 0.25, "test": 0.0}},
        "model": {"type": "hf", "name_or_path": str(hf_models["gpt2"]), "max_length": 64},
        "train": {"epochs": 2, "batch_size": 8, "optimizer": {"lr": 0.003}},
        "output_dir": str(tmp_path / "runs"),
    }
    records: list[dict] = []
    run = foundry.train(config, quiet=True, on_epoch_end=records.append, register=False)

    assert [r["epoch"] for r in records] == [1, 2] and "val_loss" in records[0]
    assert run.model_ref == "" and run.package_path == run.run_dir / "package"
    assert (run.package_path / "hf" / "tokenizer.json").is_file()
    assert (run.run_dir / "COMPLETED").read_text() == "unregistered: package/\n"
    assert Registry().list_models() == []  # nothing registered


def test_an_embedding_package_has_nothing_to_tune(tmp_path, hf_models):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(hf_tiny.CORPUS[:7]))
    config = {
        "name": "embed",
        "data": {"path": str(corpus)},
        "model": {"type": "hf", "name_or_path": str(hf_models["bert"]), "task": "embedding"},
        "output_dir": str(tmp_path / "runs"),
    }
    with pytest.raises(ConfigError, match="model.task embedding trains nothing"):
        foundry.train(config, quiet=True, register=False)
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made


def test_finetune_calls_on_epoch_end_once_per_epoch_with_val_loss(tmp_path, hf_models):
    from transformers import AutoModel

    from foundry.data.schema import TaskInfo
    from foundry.lm.hf_finetune import TokenizedSplit, finetune
    from foundry.models.hf import PooledClassifier

    torch.manual_seed(0)
    encoder = AutoModel.from_pretrained(str(hf_models["bert"]), use_safetensors=True)
    model = PooledClassifier(encoder, hidden_size=32, n_outputs=2, pooling="mean")
    rng = np.random.default_rng(0)
    ids = [[2, *rng.integers(5, 60, size=int(n)).tolist(), 3] for n in rng.integers(3, 9, 12)]
    labels = torch.tensor([i % 2 for i in range(12)])
    train, val = TokenizedSplit(ids[:8], labels[:8]), TokenizedSplit(ids[8:], labels[8:])
    task = TaskInfo(target="label", task="binary", classes=["neg", "pos"])

    records: list[dict] = []
    run_dir = tmp_path / "run"

    def on_epoch_end(record: dict) -> None:
        # called once the epoch's checkpoint is on disk
        assert (run_dir / "checkpoint" / "state.json").is_file()
        records.append(record)

    cfg = TrainConfig(epochs=3, batch_size=4, optimizer={"type": "sgd", "lr": 0.1})
    result = finetune(
        model, train, val, cfg, task, run_dir, n_outputs=2, pad_id=0, on_epoch_end=on_epoch_end
    )
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(np.isfinite(r["val_loss"]) for r in records)
    assert records == result.history
