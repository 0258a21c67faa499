"""`fit_lm`: masked next-token loss, token-weighted gradient accumulation, checkpoints and
resume, perplexity and the unigram baseline."""

from __future__ import annotations

import json
import math

import pytest
import torch
from lm_helpers import ByteTokenizer, tiny_gpt

from foundry.config.schema import TrainConfig
from foundry.errors import TrainError
from foundry.lm.data import IGNORE, TokenData, corpus_blocks
from foundry.lm.metrics import lm_metrics, unigram_perplexity
from foundry.lm.train import evaluate_tokens, fit_lm, next_token_loss, perplexity

TOK = ByteTokenizer()
TEXT = ["the cat sat on the mat. " * 4, "a dog ran in the park. " * 4] * 6


def config(**overrides) -> TrainConfig:
    values = {
        "epochs": 3,
        "batch_size": 4,
        "num_threads": 1,
        "seed": 0,
        "optimizer": {"type": "adamw", "lr": 0.01},
        "early_stopping": {"patience": None},
    }
    values.update(overrides)
    return TrainConfig(**values)


def data(block_size=24) -> TokenData:
    return corpus_blocks(TEXT, TOK, block_size)


def test_loss_ignores_masked_positions():
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[1, 2, IGNORE, 3, IGNORE], [IGNORE, 4, 5, IGNORE, IGNORE]])
    changed = logits.clone()
    changed[labels == IGNORE] = 100.0  # whatever the model says where there is no target
    torch.testing.assert_close(next_token_loss(logits, labels), next_token_loss(changed, labels))
    keep = labels != IGNORE
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(next_token_loss(logits, labels), expected)


def test_training_lowers_the_loss_and_writes_metrics(tmp_path):
    train, val = data(), corpus_blocks(TEXT[:2], TOK, 24)
    model = tiny_gpt(vocab_size=TOK.vocab_size)
    before = perplexity(model, val)
    result = fit_lm(model, train, val, config(), tmp_path, progress=False)
    after = perplexity(model, val)
    assert after < before / 3
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]
    assert {"train_loss", "val_loss", "val_perplexity", "lr", "tokens_per_second"} <= set(lines[0])
    assert lines[0]["train_loss"] > lines[-1]["train_loss"]
    assert math.isclose(
        result.best_metrics["val_perplexity"], math.exp(result.best_metrics["val_loss"])
    )
    assert math.isclose(after, math.exp(evaluate_tokens(model, val)[0]))


def _variable_rows(n=8, width=10, seed=0) -> TokenData:
    """Rows with different numbers of targets (like instruction data)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 200, (n, width), generator=g)
    labels = torch.randint(0, 200, (n, width), generator=g)
    for i in range(n):
        labels[i, : 1 + i] = IGNORE  # row i has width - 1 - i targets
    return TokenData(input_ids=ids, labels=labels)


def test_accumulation_weights_every_target_token_equally(tmp_path):
    # one optimizer step over 8 rows: batch 8, or 2 accumulated batches of 4 whose rows
    # hold different numbers of targets; the token-mean loss makes them the same step
    rows = _variable_rows()
    states = []
    for batch_size, accumulation in ((8, 1), (4, 2), (2, 4)):
        model = tiny_gpt(vocab_size=259, seed=1)
        cfg = config(
            epochs=1,
            batch_size=batch_size,
            gradient_accumulation=accumulation,
            optimizer={"type": "sgd", "lr": 1.0},
        )
        states.append(
            fit_lm(model, rows, None, cfg, tmp_path / f"b{batch_size}", progress=False).state_dict
        )
    start = tiny_gpt(vocab_size=259, seed=1).state_dict()
    assert not torch.equal(states[0]["blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])
    for other in states[1:]:
        for key in states[0]:
            torch.testing.assert_close(other[key], states[0][key], rtol=1e-4, atol=1e-6)


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    train, val = data(), corpus_blocks(TEXT[:2], TOK, 24)
    full = fit_lm(
        tiny_gpt(vocab_size=259, dropout=0.1),
        train,
        val,
        config(epochs=3),
        tmp_path / "full",
        progress=False,
    )
    fit_lm(
        tiny_gpt(vocab_size=259, dropout=0.1),
        train,
        val,
        config(epochs=2),
        tmp_path / "cut",
        progress=False,
    )
    resumed = fit_lm(
        tiny_gpt(vocab_size=259, seed=9, dropout=0.1),
        train,
        val,
        config(epochs=3),
        tmp_path / "cut",
        resume=True,
        progress=False,
    )
    assert resumed.epochs_run == 3
    for key, value in full.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[key], value)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    train, val = data(), corpus_blocks(["zzzz qqqq xxxx"] * 3, TOK, 24)  # unlike train
    result = fit_lm(
        tiny_gpt(vocab_size=259),
        train,
        val,
        config(epochs=8, early_stopping={"patience": 2}),
        tmp_path,
        progress=False,
    )
    assert result.stopped_early
    assert result.best_metrics["val_loss"] == min(h["val_loss"] for h in result.history)


def test_huggingface_models_train_as_is(tmp_path):
    transformers = pytest.importorskip("transformers")
    config_hf = transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=2, vocab_size=259, n_positions=32
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config_hf)
    train = data()
    before = perplexity(model, train)
    fit_lm(model, train, None, config(epochs=2), tmp_path, progress=False)
    assert perplexity(model, train) < before


def test_frozen_parameters_stay_put(tmp_path):
    model = tiny_gpt(vocab_size=259)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("blocks.1.")
    frozen = model.embed.weight.detach().clone()
    fit_lm(model, data(), None, config(epochs=1), tmp_path, progress=False)
    assert torch.equal(model.embed.weight, frozen)
    for p in model.parameters():
        p.requires_grad = False
    with pytest.raises(TrainError, match="no trainable parameters"):
        fit_lm(model, data(), None, config(epochs=1), tmp_path / "x", progress=False)


def test_no_tokens_is_a_train_error(tmp_path):
    empty = corpus_blocks([], TOK, 8)
    with pytest.raises(TrainError, match="no tokens to learn from"):
        fit_lm(tiny_gpt(vocab_size=259), empty, None, config(), tmp_path, progress=False)


def test_unigram_baseline_is_add_one_smoothed_frequency():
    # train targets: token 1 three times, token 2 once; vocab 4
    train = TokenData(torch.zeros(1, 4, dtype=torch.int64), torch.tensor([[1, 1, 1, 2]]))
    held = TokenData(torch.zeros(1, 2, dtype=torch.int64), torch.tensor([[1, 3]]))
    p1, p3 = (3 + 1) / (4 + 4), (0 + 1) / (4 + 4)
    expected = math.exp(-(math.log(p1) + math.log(p3)) / 2)
    assert math.isclose(unigram_perplexity(train, held, vocab_size=4), expected)


def test_lm_metrics_fall_back_to_val_when_test_is_empty():
    model = tiny_gpt(vocab_size=259)
    splits = {
        "train": data(),
        "val": corpus_blocks(TEXT[:1], TOK, 24),
        "test": corpus_blocks([], TOK, 24),
    }
    metrics = lm_metrics(model, splits, evaluate_split="test", vocab_size=259)
    assert metrics["split"] == "val" and "test_loss" not in metrics
    assert metrics["perplexity"] == metrics["val_perplexity"]
    assert metrics["tokens"] == splits["val"].n_targets


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_bf16_autocast_trains(tmp_path, positions):
    model = tiny_gpt(positions, vocab_size=259)
    full = data()
    train = TokenData(full.input_ids[:8], full.labels[:8])  # bf16 matmuls are slow on CPU
    before = perplexity(model, train)
    cfg = config(epochs=2, precision="bf16", optimizer={"type": "adamw", "lr": 0.02})
    result = fit_lm(model, train, None, cfg, tmp_path, progress=False)
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert perplexity(model, train) < before
    assert model.embed.weight.dtype == torch.float32  # autocast keeps fp32 master weights


def test_frozen_weights_stay_out_of_checkpoints_and_resume_still_matches(tmp_path):
    """As with LoRA: what does not train is not saved each epoch; a resumed run gets it
    from its (reloaded) base model and ends where an uninterrupted run ends."""
    from safetensors.torch import load_file

    def partly_frozen(seed=0):
        model = tiny_gpt(vocab_size=259, seed=0)
        trained = tiny_gpt(vocab_size=259, seed=seed)  # the part that trains starts elsewhere
        for name, param in model.named_parameters():
            if not name.startswith("blocks.1."):
                param.requires_grad_(False)
            else:
                param.data.copy_(dict(trained.named_parameters())[name].data)
        return model

    train, val = data(), corpus_blocks(TEXT[:2], TOK, 24)
    full = fit_lm(partly_frozen(), train, val, config(epochs=3), tmp_path / "full", progress=False)
    assert full.state_dict and all(k.startswith("blocks.1.") for k in full.state_dict)
    saved = load_file(tmp_path / "full" / "checkpoint" / "model.safetensors")
    assert set(saved) == set(full.state_dict)

    fit_lm(partly_frozen(), train, val, config(epochs=2), tmp_path / "cut", progress=False)
    resumed = fit_lm(
        partly_frozen(seed=9), train, val, config(epochs=3), tmp_path / "cut", resume=True,
        progress=False,
    )
    for key, value in full.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[key], value)
