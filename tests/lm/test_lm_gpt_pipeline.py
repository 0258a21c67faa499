"""`foundry.train` with `model.type: gpt`, end to end: a corpus (or instructions) in, a
registered package out that loads as a LanguageModel and generates."""

from __future__ import annotations

import copy
import json
import random

import pytest

import foundry
from foundry.config.schema import GenerationConfig
from foundry.errors import DataError
from foundry.lm.api import LanguageModel
from foundry.lm.gpt_model import load_gpt_package
from foundry.registry import Registry

SUBJECTS = ["the cat", "a dog", "my bird", "the fox", "our cow"]
VERBS = ["sat on", "ran to", "looked at", "jumped over", "slept by"]
OBJECTS = ["the mat", "a park", "the tree", "a fence", "the barn"]


def write_corpus(path, n_docs=120, seed=0):
    """Short documents of a tiny grammar: plenty of structure for context to exploit."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sentences = [
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
            for _ in range(rng.randint(2, 4))
        ]
        docs.append(" ".join(sentences).capitalize())
    path.write_text("\n\n".join(docs) + "\n")
    return path


def gpt_config(data_path, tmp_path, **overrides):
    config = {
        "name": "tiny-gpt",
        "data": {"path": str(data_path)},
        "model": {
            "type": "gpt",
            "n_layers": 2,
            "d_model": 48,
            "n_heads": 4,
            "context_length": 64,
            "vocab_size": 320,
            "dropout": 0.0,
        },
        "train": {
            "epochs": 6,
            "batch_size": 8,
            "num_threads": 1,
            "optimizer": {"type": "adamw", "lr": 0.01},
        },
        "output_dir": str(tmp_path / "runs"),
    }
    for key, value in overrides.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


@pytest.mark.slow
def test_corpus_to_a_registered_model_that_generates(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    config = gpt_config(corpus, tmp_path, train={"epochs": 15})
    run = foundry.train(config, progress=False, quiet=True)

    m = run.metrics
    assert m["split"] == "test" and m["tokens"] > 100
    assert m["perplexity"] < m["unigram_perplexity"] / 2, m
    assert (run.run_dir / "COMPLETED").read_text().strip() == run.model_ref == "tiny-gpt:1"

    record = Registry().resolve(run.model_ref)
    assert record.task == "language_modeling"
    assert (record.path / "tokenizer.json").is_file()
    manifest = json.loads((record.path / "foundry.json").read_text())
    assert manifest["model"]["config"]["n_layers"] == 2
    assert manifest["context_length"] == 64
    assert manifest["tokenizer"]["eos_id"] == 0
    assert "unigram baseline" in (record.path / "card.md").read_text()

    lm = load_gpt_package(Registry().load(run.model_ref), run.model_ref)
    assert isinstance(lm, LanguageModel) and lm.context_length == 64
    greedy = GenerationConfig(max_tokens=12, temperature=0)
    [c] = lm.generate(["The cat sat"], greedy)
    assert c.completion_tokens >= 1 and c.prompt_tokens == lm.count_tokens("The cat sat")
    words = c.text.replace(".", " ").split()
    known = {w for phrase in SUBJECTS + VERBS + OBJECTS for w in phrase.split()} | {
        "The",
        "A",
        "My",
        "Our",
    }
    assert words and sum(w in known for w in words) / len(words) > 0.7, c.text
    streamed = "".join(d.text for d in lm.stream("The cat sat", greedy))
    assert streamed == c.text


def test_instructions_train_on_completions_and_chat_stops_at_end_of_turn(tmp_path):
    rng = random.Random(1)
    path = tmp_path / "pairs.jsonl"
    with path.open("w") as f:
        for _ in range(150):
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            f.write(json.dumps({"prompt": f"say {a} {b}", "completion": f"{a} {b}"}) + "\n")
    config = gpt_config(path, tmp_path, train={"epochs": 12, "batch_size": 16})
    run = foundry.train(config, progress=False, quiet=True)
    assert run.metrics["perplexity"] < run.metrics["unigram_perplexity"]

    lm = load_gpt_package(Registry().load(run.model_ref), run.model_ref)
    prompt = lm.render_chat([{"role": "user", "content": "say 3 7"}])
    assert prompt.endswith("<|assistant|>\n")
    [c] = lm.generate([prompt], GenerationConfig(max_tokens=20, temperature=0))
    assert c.finish_reason == "stop" and "<|end|>" not in c.text  # ended by the turn marker
    assert c.completion_tokens < 20


def test_resume_through_foundry_train(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", n_docs=30)
    config = gpt_config(
        corpus, tmp_path, train={"epochs": 2}, model={"n_layers": 1, "d_model": 16, "n_heads": 2}
    )
    run_dir = tmp_path / "run"
    first = foundry.train(
        copy.deepcopy(config), ["train.epochs=1"], run_dir=run_dir, progress=False, quiet=True
    )
    (run_dir / "COMPLETED").unlink()  # pretend it was interrupted after epoch 1
    again = foundry.train(config, run_dir=run_dir, resume=True, progress=False, quiet=True)
    assert [h["epoch"] for h in again.history] == [1, 2]
    assert again.history[0] == first.history[0]


def test_bad_data_fails_before_training(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match="lm.text_column"):
        foundry.train(gpt_config(path, tmp_path), progress=False, quiet=True)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        foundry.train(gpt_config(tmp_path / "empty.txt", tmp_path), progress=False, quiet=True)
    assert not (tmp_path / "runs").exists()  # nothing started


def test_block_size_longer_than_context_is_a_config_error(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", n_docs=10)
    with pytest.raises(foundry.ConfigError, match=r"lm.block_size \(128\)"):
        foundry.train(gpt_config(corpus, tmp_path, lm={"block_size": 128}), progress=False)
