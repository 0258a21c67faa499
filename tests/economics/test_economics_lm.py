"""Language models are priced in tokens: generation tokens/s measured through the same
`LanguageModel.generate` the OpenAI routes call, cost per 1k and per 1M tokens."""

from __future__ import annotations

import pytest

import foundry
from foundry.config.schema import CostConfig
from foundry.economics import estimate
from foundry.errors import DataError

SENTENCES = ["The cat sat on the mat.", "A dog ran in the park.", "My bird sang a song."]


@pytest.fixture(scope="module")
def tiny_gpt(tmp_path_factory):
    """A 1-layer GPT trained in a few seconds; its registry is the module's own."""
    root = tmp_path_factory.mktemp("econ-gpt")
    (root / "train.txt").write_text("\n\n".join(SENTENCES * 20))
    (root / "heldout.txt").write_text("\n\n".join(SENTENCES[::-1] * 2))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(root / "home"))
        run = foundry.train(
            {
                "name": "tinyg",
                "data": {"path": str(root / "train.txt"), "test_path": str(root / "heldout.txt")},
                "model": {"type": "gpt", "n_layers": 1, "d_model": 32, "n_heads": 2,
                          "context_length": 32, "vocab_size": 300},
                "train": {"epochs": 1, "batch_size": 8},
                "output_dir": str(root / "runs"),
            },
            progress=False,
            quiet=True,
        )
    return run.model_ref, root


def test_generation_throughput_prices_tokens(tiny_gpt, monkeypatch):
    ref, root = tiny_gpt
    monkeypatch.setenv("FOUNDRY_HOME", str(root / "home"))
    cost = CostConfig(measure_seconds=0.05, serve_machine_per_hour=1.0)
    e = estimate(ref, cost)
    t = e.throughput
    assert (e.kind, e.unit, t.unit) == ("language", "token", "token")
    assert t.single > 0 and t.serving == t.single and t.serving_batch == 1
    # measure: server is the default, but language models are measured in process
    assert t.basis == "single" and t.measure == "model" and t.server_cases == ()
    assert "in process" in t.why and "one request at a time" in t.why
    assert "split" in t.source  # the model's own text, read again
    assert e.cost_per_1k == 1.0 / (3600 * t.single * 0.5) * 1000
    assert e.cost_per_1m_tokens == e.cost_per_1k * 1000
    assert e.training is not None and e.training.seconds > 0

    prompts = root / "prompts.txt"
    prompts.write_text("Once upon a time\n\nThe cat")
    from_file = estimate(ref, cost, data=prompts)
    assert from_file.throughput.rows == 2 and from_file.throughput.source == str(prompts)

    supplied = estimate(ref, cost, throughput=2_000.0)
    assert supplied.cost_per_1m_tokens == 1.0 / (3600 * 2_000.0 * 0.5) * 1000 * 1000
    assert {p.name for p in supplied.plans} >= {"trial", "starter", "pro", "enterprise"}


def test_a_prompt_file_without_text_is_an_error(tiny_gpt, monkeypatch):
    ref, root = tiny_gpt
    monkeypatch.setenv("FOUNDRY_HOME", str(root / "home"))
    blank = root / "blank.txt"
    blank.write_text("\n\n   \n")
    with pytest.raises(DataError):
        estimate(ref, CostConfig(measure_seconds=0.05), data=blank)
