"""`foundry.load` / `foundry predict` / `foundry evaluate` on the models of the large-model
issue: a fine-tuned Hugging Face classifier predicts and evaluates like any model; a
language model is scored by its perplexity on a text file — the same number training
reported for the same held-out text."""

from __future__ import annotations

import json
from pathlib import Path

import hf_tiny
import pandas as pd
import pytest
from typer.testing import CliRunner

import foundry
from foundry.cli import app
from foundry.errors import DataError, ModelError
from foundry.evaluation.run import evaluate_model
from foundry.lm.hf_model import HFTextPredictor
from foundry.registry import Registry


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {"bert": hf_tiny.bert_dir(root), "llama": hf_tiny.llama_dir(root)}


def test_an_hf_classifier_predicts_and_evaluates_through_the_cli(tmp_path, models):
    train = hf_tiny.write_sentiment_csv(tmp_path / "train.csv")
    test = hf_tiny.write_sentiment_csv(tmp_path / "test.csv", n=24, seed=1)
    run = foundry.train(
        {
            "name": "sentiment",
            "data": {
                "path": str(train),
                "test_path": str(test),
                "split": {"train": 0.9, "val": 0.1, "test": 0.0},
            },
            "features": {"target": "label"},
            "model": {"type": "hf", "name_or_path": str(models["bert"]), "max_length": 16},
            "train": {"epochs": 2, "batch_size": 8, "optimizer": {"lr": 0.002}},
            "output_dir": str(tmp_path / "runs"),
        },
        quiet=True,
    )
    assert isinstance(foundry.load(run.model_ref), HFTextPredictor)
    runner = CliRunner()

    scored = runner.invoke(app, ["evaluate", "sentiment", "--data", str(test), "--json"])
    assert scored.exit_code == 0, scored.output
    metrics = json.loads(scored.stdout)
    assert metrics["accuracy"] == run.metrics["accuracy"]  # the test split training scored
    assert metrics["log_loss"] == pytest.approx(run.metrics["log_loss"], abs=1e-5)
    table = runner.invoke(app, ["evaluate", "sentiment", "--data", str(test)])
    assert table.exit_code == 0 and "confusion matrix" in table.stdout

    out = tmp_path / "predictions.csv"
    predicted = runner.invoke(app, ["predict", "sentiment", str(test), "-o", str(out)])
    assert predicted.exit_code == 0, predicted.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["label", "probability_neg", "probability_pos"]
    accuracy = (frame["label"] == pd.read_csv(test)["label"]).mean()
    assert accuracy == pytest.approx(run.metrics["accuracy"])

    unlabelled = tmp_path / "unlabelled.csv"
    pd.read_csv(test).drop(columns=["label"]).to_csv(unlabelled, index=False)
    refused = runner.invoke(app, ["evaluate", "sentiment", "--data", str(unlabelled)])
    # (main() prints a FoundryError as one line and exits 2; the app raises it)
    assert isinstance(refused.exception, DataError)
    assert "target column 'label'" in str(refused.exception)
    no_text = tmp_path / "no_text.csv"
    pd.read_csv(test).rename(columns={"text": "review"}).to_csv(no_text, index=False)
    refused = runner.invoke(app, ["predict", "sentiment", str(no_text)])
    assert isinstance(refused.exception, DataError)
    assert "lacks column 'text'" in str(refused.exception)


def test_a_language_model_is_scored_by_perplexity_on_a_held_out_file(tmp_path, models):
    """Llama-style instruction tuning with a held-out file: `foundry evaluate` on that
    file gives the perplexity training reported on its test split (completion tokens)."""
    train = hf_tiny.write_instructions(tmp_path / "train.jsonl")
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text(
        "".join(
            json.dumps({"prompt": f"say {w}", "completion": f"{w} {w}"}) + "\n"
            for w in ["blue", "one", "hello", "red"]
        )
    )
    run = foundry.train(
        {
            "name": "tiny-chat",
            "data": {
                "path": str(train),
                "test_path": str(heldout),
                "split": {"train": 0.8, "val": 0.2, "test": 0.0},
            },
            "model": {"type": "hf", "name_or_path": str(models["llama"]), "max_length": 64},
            "train": {"epochs": 2, "batch_size": 8, "optimizer": {"lr": 0.003}},
            "output_dir": str(tmp_path / "runs"),
        },
        quiet=True,
    )
    assert run.metrics["split"] == "test"
    result = evaluate_model("tiny-chat", heldout, output=tmp_path / "m.json")
    assert result.rows == 4 and result.model_ref == run.model_ref
    assert result.metrics["tokens"] == run.metrics["tokens"]
    assert result.metrics["perplexity"] == pytest.approx(run.metrics["perplexity"], rel=1e-6)
    assert json.loads((tmp_path / "m.json").read_text())["tokens"] == run.metrics["tokens"]

    # by package directory too
    package_dir = Registry().resolve(run.model_ref).path
    assert evaluate_model(str(package_dir), heldout).metrics["tokens"] == run.metrics["tokens"]

    with pytest.raises(ModelError, match="language model") as refused:
        foundry.load(run.model_ref)
    assert "foundry generate" in (refused.value.hint or "")


def test_foundry_evaluate_gives_a_gpt_its_test_split_perplexity(tmp_path):
    sentences = ["The cat sat on the mat.", "A dog ran in the park.", "My bird sang a song."]
    (tmp_path / "train.txt").write_text("\n\n".join(sentences * 20))
    (tmp_path / "heldout.txt").write_text("\n\n".join(sentences[::-1] * 2))
    run = foundry.train(
        {
            "name": "tinyg",
            "data": {
                "path": str(tmp_path / "train.txt"),
                "test_path": str(tmp_path / "heldout.txt"),
            },
            "model": {"type": "gpt", "n_layers": 1, "d_model": 32, "n_heads": 2,
                      "context_length": 32, "vocab_size": 300},
            "train": {"epochs": 20, "batch_size": 8, "optimizer": {"lr": 0.01}},
            "output_dir": str(tmp_path / "runs"),
        },
        progress=False,
        quiet=True,
    )
    scored = CliRunner().invoke(
        app, ["evaluate", "tinyg", "--data", str(tmp_path / "heldout.txt"), "--json"]
    )
    assert scored.exit_code == 0, scored.output
    metrics = json.loads(scored.stdout)
    assert metrics["kind"] == "corpus" and metrics["tokens"] == run.metrics["tokens"]
    assert metrics["perplexity"] == pytest.approx(run.metrics["perplexity"], rel=1e-6)
    assert metrics["perplexity"] < run.metrics["unigram_perplexity"]
