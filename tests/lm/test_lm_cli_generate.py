"""`foundry generate`: the CLI prints what the loaded model generates."""

from __future__ import annotations

from typer.testing import CliRunner

import foundry
from foundry.cli import app
from foundry.config.schema import GenerationConfig
from foundry.lm.load import load


def test_generate_prints_the_models_greedy_text(tmp_path, foundry_home):
    (tmp_path / "c.txt").write_text("\n\n".join(["The cat sat on the mat."] * 30))
    config = {
        "name": "tinyg",
        "data": {"path": str(tmp_path / "c.txt")},
        "model": {"type": "gpt", "n_layers": 1, "d_model": 32, "n_heads": 2,
                  "context_length": 64, "vocab_size": 300},
        "train": {"epochs": 2, "batch_size": 8},
        "output_dir": str(tmp_path / "runs"),
    }
    foundry.train(config, progress=False, quiet=True)
    [expected] = load("tinyg").generate(["The cat"], GenerationConfig(max_tokens=8,
                                                                      temperature=0))
    runner = CliRunner()
    streamed = runner.invoke(app, ["generate", "tinyg", "The cat", "--max-tokens", "8",
                                   "--temperature", "0"])
    assert streamed.exit_code == 0, streamed.output
    assert streamed.stdout == expected.text + "\n"
    whole = runner.invoke(app, ["generate", "tinyg", "The cat", "--max-tokens", "8",
                                "--temperature", "0", "--no-stream"])
    assert whole.exit_code == 0 and whole.stdout == expected.text + "\n"
    missing = runner.invoke(app, ["generate", "nope", "x"])
    assert missing.exit_code != 0
