"""Every example config trains (each well under a minute on 2 cores) and learns its task."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import foundry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# config → (data set it needs, metric, threshold it must beat)
CASES = {
    "binary_mlp": ("binary10", "accuracy", 0.85),
    "binary_bce": ("binary10", "accuracy", 0.85),
    "digits_cnn": ("digits", "accuracy", 0.93),
    "shapes_cnn": ("shapes", "accuracy", 0.9),
    "linear_regression": ("line", "r2", 0.98),
    "penguins": ("penguins", "accuracy", 0.93),
    "penguins_tune": ("penguins", "accuracy", 0.93),
    "penguins_gbm": ("penguins", "accuracy", 0.93),
    "reviews_text": ("reviews", "accuracy", 0.85),
}


def make_data(name: str) -> None:
    spec = importlib.util.spec_from_file_location("make_data", EXAMPLES / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([name])


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(CASES))
def test_example_trains_and_learns(config, tmp_path):
    data, metric, threshold = CASES[config]
    make_data(data)
    run = foundry.train(
        EXAMPLES / f"{config}.yaml", [f"output_dir={tmp_path}"], progress=False, quiet=True
    )
    assert run.metrics[metric] > threshold, run.metrics
    # the registered package predicts the same way the run evaluated
    assert foundry.load(run.model_ref).manifest["config"]["name"] == run.model_ref.split(":")[0]


# Language-model and recommender examples, tested where their data makers live.
LANGUAGE_EXAMPLES = {
    "gpt_corpus": "tests/lm/test_lm_example.py",
    "minilm_lora": "tests/lm/test_lm_hf_classify.py",
    "tiny_llama_lora": "tests/lm/test_lm_examples_chat.py",
    "gpt_chat": "tests/lm/test_lm_examples_chat.py",
    "recommend": "tests/recommend/test_recommend_example.py",
}


def test_every_example_config_is_covered_and_valid():
    from foundry.config import load_config

    configs = {p.stem for p in EXAMPLES.glob("*.yaml")}
    assert configs == set(CASES) | set(LANGUAGE_EXAMPLES)
    root = EXAMPLES.parent
    for name, test in LANGUAGE_EXAMPLES.items():
        assert name in (root / test).read_text(), f"{test} does not exercise {name}"
    for name in configs:
        load_config(EXAMPLES / f"{name}.yaml")  # raises ConfigError if a key is wrong
