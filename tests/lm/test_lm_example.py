"""examples/gpt_corpus.yaml: its data maker is deterministic and offline, the config is
valid, and two epochs already put the GPT far below the unigram baseline."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

import foundry
from foundry.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _maker():
    spec = importlib.util.spec_from_file_location("make_lm_data", EXAMPLES / "make_lm_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_maker_is_deterministic_and_config_is_valid(tmp_path, monkeypatch):
    maker = _maker()
    monkeypatch.setattr(maker, "DATA", tmp_path)
    first = hashlib.sha256(maker.corpus().read_bytes()).hexdigest()
    assert hashlib.sha256(maker.corpus().read_bytes()).hexdigest() == first
    lines = (tmp_path / "lm_corpus.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) > 1000 and all("text" in json.loads(line) for line in lines[:50])
    pairs = [json.loads(x) for x in maker.instructions().read_text().splitlines()]
    assert pairs and set(pairs[0]) == {"prompt", "completion"}
    config = load_config(EXAMPLES / "gpt_corpus.yaml").config
    assert config.model.type == "gpt" and config.is_language_model


@pytest.mark.slow
def test_example_learns_far_more_than_the_unigram_baseline(tmp_path):
    _maker().main(["corpus"])
    run = foundry.train(
        EXAMPLES / "gpt_corpus.yaml",
        # two threads: the suite runs one test at a time, so both cores are this test's
        ["train.epochs=2", "train.num_threads=2", f"output_dir={tmp_path}"],
        progress=False,
        quiet=True,
    )
    assert run.metrics["perplexity"] < run.metrics["unigram_perplexity"] / 3, run.metrics
