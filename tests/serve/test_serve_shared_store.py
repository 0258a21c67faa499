"""The scale-out setup end to end: a model registered in one home is served by
`foundry serve` in a second home that shares only the database and the artifact bucket
(a real moto server), and answers what the first home's Predictor answers. The model is
the serve tests' session toy (trained once), registered again into the shared store.

The shared database is PostgreSQL when FOUNDRY_TEST_POSTGRES_URL is set (CI), else one
SQLite file both homes name."""

from __future__ import annotations

import os

import httpx
import pandas as pd
import pytest
import yaml
from tests import pg_support
from tests.serve.serve_app_support import assert_matches, bearer, shared_toy

from foundry.serve.loadtest import Server, free_port, serve_command


@pytest.mark.slow
def test_a_model_registered_in_one_home_is_served_from_another(
    tmp_path, tmp_path_factory, s3_bucket, monkeypatch, request
):
    from foundry.config.schema import PlanConfig
    from foundry.predictor import load
    from foundry.registry import Registry
    from foundry.serve.gate import Gate

    toy = shared_toy(tmp_path_factory)
    trained = Registry(toy.home, f"sqlite:///{toy.home / 'foundry.db'}").load(toy.ref)
    if os.environ.get(pg_support.URL_ENV):
        database = request.getfixturevalue("postgres_url")
    else:
        database = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("FOUNDRY_DATABASE_URL", database)
    monkeypatch.setenv("FOUNDRY_ARTIFACTS", f"{s3_bucket}/prod")
    home_a = Registry(tmp_path / "home-a")  # its row in the database, its files in the bucket
    ref = home_a.register(
        toy.name,
        weights=trained.weights,
        manifest=trained.manifest,
        metrics=trained.metrics,
        card=trained.card,
    ).ref

    plan = PlanConfig(included_units=1_000, requests_per_minute=1_000)
    config = tmp_path / "serve.yaml"
    config.write_text(
        yaml.safe_dump({"serve": {"plans": {"team": plan.model_dump(exclude_unset=True)}}})
    )
    gate = Gate({"team": plan})
    key = gate.create_key("acme", "team").key  # in the shared database: both homes know it
    gate.close()

    home_b = tmp_path / "home-b"
    env = {**os.environ, "FOUNDRY_HOME": str(home_b)}
    # Home B finds the server through the standard AWS variable instead of foundry's own.
    env["AWS_ENDPOINT_URL"] = env.pop("FOUNDRY_S3_ENDPOINT_URL")
    command = serve_command(ref, free_port(), config=config)
    with Server(command, env=env, log=tmp_path / "server-b.log", cwd=tmp_path) as server:
        records = toy.records(12)
        answer = httpx.post(
            f"{server.url}/v1/models/{toy.name}/predict",
            json=records,
            headers=bearer(key),
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
    sent = pd.DataFrame.from_records(records, columns=list(toy.rows))  # as Toy.expected
    expected = load(ref, registry=home_a).predict(sent)  # home A's own copy
    assert_matches(answer.json()["predictions"], expected, "tier")

    # What B served is its own copy, downloaded and checked against the index.
    served = Registry(home_b).resolve(ref)
    assert served.path.is_relative_to(home_b / "models") and served.path.is_dir()
    assert Registry(home_b).verify(ref) is True
