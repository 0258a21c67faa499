"""examples/recommend.yaml, as written, on a slice of the real Debian dependency graph
(the example's own builder, `examples/make_interactions.py`, on this machine's
`apt-cache dumpavail`): it trains and its model beats the popularity baseline."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

import foundry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _builder():
    path = EXAMPLES / "make_interactions.py"
    spec = importlib.util.spec_from_file_location("make_interactions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("apt-cache") is None, reason="needs Debian's apt-cache")
def test_the_recommend_example_beats_popularity_on_debian_dependencies(tmp_path, monkeypatch):
    text = subprocess.run(
        ["apt-cache", "dumpavail"], capture_output=True, text=True, check=True
    ).stdout
    # the first ~6,000 packages' stanzas: the real graph, small enough for seconds
    stanzas = text.split("\n\n")[:6000]
    deps = _builder().parse_dumpavail("\n\n".join(stanzas), min_items=3)
    assert len(deps) > 5000, len(deps)
    path = tmp_path / "debian_deps.csv"
    deps.to_csv(path, index=False)
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path / "home"))
    run = foundry.train(
        EXAMPLES / "recommend.yaml",
        [f"data.path={path}", f"output_dir={tmp_path / 'runs'}", "model.iterations=5"],
        progress=False,
        quiet=True,
    )
    metrics = run.metrics
    for key in ("recall@10", "ndcg@10"):
        assert metrics[key] > metrics["popularity"][key] + 0.05, metrics
    top = foundry.load(run.model_ref).recommend(deps.package.iloc[0], k=5)
    assert len(top["items"]) == 5
