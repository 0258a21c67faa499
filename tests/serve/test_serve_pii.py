"""One request carrying a worst-case value for the PII patterns, through a real
`foundry serve` process: it is answered, and another client's requests keep being
answered meanwhile. With Python's `re` a ~100 KB value held the worker for minutes, the
server killed it, and every request in flight on it was dropped."""

from __future__ import annotations

import os
import threading

import httpx
import numpy as np
import pandas as pd
import pytest
from tests.serve.serve_app_support import bearer

from foundry.serve.loadtest import Server, free_port, serve_command

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A model with a text and a category input (both scanned for PII), served by one
    worker; two API keys."""
    import foundry
    from foundry.serve.gate import Gate

    root = tmp_path_factory.mktemp("pii_serve")
    rng = np.random.default_rng(0)
    n = 120
    words = ["the", "plan", "was", "slow", "support", "answered", "quickly", "price"]
    df = pd.DataFrame(
        {
            "comment": [" ".join(rng.choice(words, 6)) for _ in range(n)],
            "plan": rng.choice(["free", "pro", "team"], n),
            "age": rng.normal(40, 10, n).round(1),
        }
    )
    df["churned"] = np.where(df.age > 40, "yes", "no")
    df.to_csv(root / "churn.csv", index=False)
    home = root / "home"
    config = {
        "name": "churn",
        "data": {"path": str(root / "churn.csv")},
        "features": {"target": "churned"},
        "model": {"type": "text"},
        "train": {"epochs": 1, "batch_size": 32},
        "output_dir": str(root / "runs"),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(home))
        ref = foundry.train(config, progress=False, quiet=True).model_ref
    gate = Gate(home=home)
    keys = [gate.create_key(org, "pro").key for org in ("mallory", "alice")]
    gate.close()
    env = {**os.environ, "FOUNDRY_HOME": str(home)}
    env.pop("FOUNDRY_DATABASE_URL", None)
    port = free_port()
    with Server(serve_command(ref, port, workers=1), env=env, log=root / "server.log") as server:
        yield server, keys


def test_a_worst_case_value_is_answered_and_others_keep_being_served(served):
    server, (mallory, alice) = served
    url = f"{server.url}/v1/models/churn/predict"
    ordinary = {"comment": "support answered quickly, mail ana@example.com", "plan": "pro",
                "age": 41.0}
    # Just under data.pii.max_value_chars (100,000), so scanned, not replaced whole:
    # with `re` each of these values took ~40 s (quadratic), the request minutes.
    hostile = [
        {"comment": "a@" + "a." * 49_000, "plan": "1." * 49_000, "age": 30.0},
        {"comment": "1-" * 49_000, "plan": "a@" + "a." * 49_000, "age": 40.0},
        {"comment": "a@" + "a." * 49_000, "plan": "1." * 49_000, "age": 50.0},
        {"comment": "4111 1111 1111 1111 " * 4_900, "plan": "free", "age": 60.0},
    ]
    answers: dict[str, object] = {}

    def attack() -> None:
        with httpx.Client(timeout=60) as client:
            answers["hostile"] = client.post(url, json={"records": hostile},
                                             headers=bearer(mallory))

    thread = threading.Thread(target=attack)
    thread.start()
    others = []
    with httpx.Client(timeout=60) as client:
        while thread.is_alive() or len(others) < 5:
            others.append(client.post(url, json=ordinary, headers=bearer(alice)).status_code)
    thread.join()

    hostile_answer = answers["hostile"]
    assert hostile_answer.status_code == 200, hostile_answer.text
    assert len(hostile_answer.json()["predictions"]) == 4
    assert set(others) == {200}
    assert server.proc.poll() is None  # the server, and its one worker, still up
    assert "Child process" not in server.log_tail()  # no worker died and was replaced
