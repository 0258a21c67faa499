"""`foundry compress` for a GPT: the int8 variant is registered with its parent, loads and
generates through `foundry.lm.load` and the serving layer with its head still tied to the
embedding, scores nearly the parent's perplexity, and its package is smaller."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
import torch
from torch import nn

import foundry
from foundry.compression.quantize import Int8Linear, quantize_linears
from foundry.compression.stage import Variant, _select
from foundry.config.schema import CompressConfig, GenerationConfig, GPTConfig
from foundry.errors import ModelError
from foundry.evaluation.run import evaluate_model
from foundry.lm.load import load
from foundry.models.gpt import GPT
from foundry.registry import Registry
from foundry.serve.lm_serving import ServedLanguageModel, StreamProgress

SENTENCES = ["The cat sat on the mat.", "A dog ran in the park.", "My bird sang a song."]
GREEDY = GenerationConfig(temperature=0, max_tokens=12)


@pytest.fixture
def tiny_gpt(tmp_path, monkeypatch):
    """A 1-layer GPT trained in a few seconds on relative paths (base_dir = tmp_path)."""
    (tmp_path / "train.txt").write_text("\n\n".join(SENTENCES * 20))
    (tmp_path / "heldout.txt").write_text("\n\n".join(SENTENCES[::-1] * 2))
    monkeypatch.chdir(tmp_path)
    run = foundry.train(
        {
            "name": "tinyg",
            "data": {"path": "train.txt", "test_path": "heldout.txt"},
            "model": {"type": "gpt", "n_layers": 1, "d_model": 32, "n_heads": 2,
                      "context_length": 32, "vocab_size": 300},
            "train": {"epochs": 20, "batch_size": 8, "optimizer": {"lr": 0.01}},
            "output_dir": "runs",
        },
        progress=False,
        quiet=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the data is found through the manifest's base_dir
    return run, tmp_path


def test_int8_gpt_is_registered_measured_and_generates_like_its_parent(tiny_gpt):
    run, tmp_path = tiny_gpt
    config = CompressConfig(methods=["int8", "onnx"], max_accuracy_drop=0.05, repeats=3)
    result = foundry.compress(run.model_ref, config, quiet=True, out_dir=tmp_path / "c")
    registry = Registry()

    assert [v.method for v in result.variants] == ["parent", "int8"]
    assert result.skipped == {"onnx": "int8 is the method for language models"}
    parent, int8 = result.variants
    assert parent.ref == run.model_ref == "tinyg:1"
    record = registry.resolve(int8.ref)
    assert record.parent == "tinyg:1" and "int8" in record.tags
    compression = registry.load(int8.ref).manifest["compression"]
    assert compression["method"] == "int8" and compression["parent"] == "tinyg:1"
    assert compression["linear_layers"] == 4  # qkv, proj, and the MLP's two; not the head

    # measured on the test split training scored: the parent's numbers are training's
    assert parent.metrics["tokens"] == int8.metrics["tokens"] == run.metrics["tokens"]
    assert parent.metrics["perplexity"] == pytest.approx(run.metrics["perplexity"], rel=1e-6)
    assert int8.metrics["perplexity"] == pytest.approx(parent.metrics["perplexity"], rel=0.03)
    assert int8.deltas["perplexity"] == pytest.approx(
        int8.metrics["perplexity"] - parent.metrics["perplexity"], abs=1e-5
    )
    # ... and the registered variant, loaded again, scores what the stage measured
    again = evaluate_model(int8.ref, tmp_path / "heldout.txt").metrics
    assert again["perplexity"] == pytest.approx(int8.metrics["perplexity"], rel=1e-6)
    for v in result.variants:
        assert set(v.latency_ms) == {"1", "8"} and all(ms > 0 for ms in v.latency_ms.values())
        assert v.throughput > 0

    # smaller on disk: int8 block weights; the tied embedding / head stays fp32
    sizes = {v.method: os.path.getsize(registry.resolve(v.ref).path / "model.safetensors")
             for v in result.variants}
    assert sizes["int8"] < 0.8 * sizes["parent"]
    assert int8.size_bytes < parent.size_bytes

    # loads as int8, head still tied, and generates (nearly) the parent's greedy text
    lm, parent_lm = load(int8.ref), load(parent.ref)
    block = lm.model.blocks[0]
    assert isinstance(block.attn.qkv, Int8Linear) and isinstance(block.mlp[2], Int8Linear)
    assert type(lm.model.head) is nn.Linear and lm.model.tied
    prompts = ["The cat", "A dog ran", "My bird"]
    ids = [parent_lm.tokenizer.encode(p) for p in prompts]
    got = lm.engine.generate_ids(ids, GREEDY)
    expected = parent_lm.engine.generate_ids(ids, GREEDY)
    agree = [_common_prefix(a, b) >= 3 for a, b in zip(got, expected, strict=True)]
    assert sum(agree) >= 2, (got, expected)
    completions = lm.generate(prompts, GREEDY)  # batched, left-padded prompts
    assert all(c.completion_tokens > 0 for c in completions)
    alone = lm.generate(prompts[1:2], GREEDY)[0]
    assert alone.text == completions[1].text  # a batch gives each row its own text
    streamed = list(lm.stream(prompts[1], GREEDY))
    assert "".join(d.text for d in streamed) == alone.text
    assert streamed[-1].finish_reason == alone.finish_reason

    # the OpenAI routes' loader serves the int8 model
    served = ServedLanguageModel.load(int8.ref, Registry())

    async def ask() -> tuple[str, str]:
        completion = await served.generate(prompts[1], GREEDY)
        progress = StreamProgress()
        deltas = [d.text async for d in served.stream(prompts[1], GREEDY, progress)]
        await served.close()
        return completion.text, "".join(deltas)

    assert asyncio.run(ask()) == (alone.text, alone.text)
    assert isinstance(served.model.model.blocks[0].attn.proj, Int8Linear)

    # the report: the batch sizes a language model is timed at, per token
    table = (tmp_path / "c" / "compress.md").read_text()
    assert "b=8 ms/token" in table and "tokens/s" in table and "perplexity" in table
    report = json.loads((tmp_path / "c" / "compress.json").read_text())
    assert report["batch_sizes"] == [1, 8] and report["data"] == "test"
    assert [v["method"] for v in report["variants"]] == ["parent", "int8"]

    # a variant is not compressed again; without int8 nothing is built
    with pytest.raises(ModelError, match="already a compressed variant"):
        foundry.compress(int8.ref, CompressConfig(methods=["int8"]), quiet=True)
    only_onnx = foundry.compress(
        run.model_ref, CompressConfig(methods=["onnx", "prune"], repeats=3), quiet=True,
        out_dir=tmp_path / "c2",
    )
    assert [v.method for v in only_onnx.variants] == ["parent"]
    assert set(only_onnx.skipped) == {"onnx", "prune"} and only_onnx.tagged is None
    assert registry.resolve("tinyg").ref == int8.ref  # no new version


def test_an_untied_gpt_quantizes_its_head_and_round_trips_through_package_weights():
    torch.manual_seed(0)
    config = GPTConfig(n_layers=2, d_model=32, n_heads=2, context_length=16, vocab_size=64,
                       tie_embeddings=False)
    model = GPT(config).eval()
    assert quantize_linears(model) == 2 * 4 + 1  # the untied head too
    assert isinstance(model.head, Int8Linear) and not model.tied
    weights = model.package_weights(model.state_dict())
    assert weights["head.weight"].dtype == torch.int8

    rebuilt = GPT(config).eval()
    quantize_linears(rebuilt)  # what load_gpt_package does for an int8 manifest
    rebuilt.load_package_weights(weights)
    tokens = torch.randint(0, 64, (2, 10))
    torch.testing.assert_close(rebuilt(tokens), model(tokens), rtol=0, atol=0)


def test_a_language_model_is_chosen_by_its_relative_perplexity_increase():
    def v(method, perplexity, b1, b8):
        return Variant(method, f"g:{method}", 1, 1, {"1": b1, "8": b8}, 1.0,
                       {"perplexity": perplexity}, {"perplexity": perplexity - 10.0})

    parent = v("parent", 10.0, 2.0, 4.0)
    within = [parent, v("int8", 10.05, 1.0, 2.0)]  # 0.5% higher, twice as fast
    tagged, why = _select(within, 0.01, False, perplexity=True)
    assert tagged == "g:int8" and "1.00% perplexity increase" in why
    over = [parent, v("int8", 10.2, 1.0, 2.0)]  # 2% higher
    tagged, why = _select(over, 0.01, False, perplexity=True)
    assert tagged is None and "nothing tagged" in why
    assert _select(over, 0.05, False, perplexity=True)[0] == "g:int8"
    slower = [parent, v("int8", 10.0, 3.0, 5.0)]
    assert _select(slower, 0.5, False, perplexity=True)[0] is None


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
