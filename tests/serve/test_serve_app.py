"""The prediction API end to end on a real model: answers, schema, usage, metrics, admin."""

from __future__ import annotations

import pytest
from tests.serve.serve_app_support import (
    assert_matches,
    bearer,
    make_app,
    serving,
    shared_toy,
)

from foundry.config.schema import ServeConfig
from foundry.errors import ConfigError, ModelError

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def toy_regression(tmp_path_factory):
    return shared_toy(tmp_path_factory, regression=True)


@pytest.fixture
def app_gate(toy, tmp_path):
    return make_app(toy, tmp_path / "gate", admin_token="admin-secret")


@pytest.fixture
def key(app_gate):
    return app_gate[1].create_key("acme", "test").key


async def test_predictions_equal_foundry_predict(toy, app_gate, key):
    """Every body shape gives Predictor.predict's labels and probabilities on the CSV rows."""
    app, _ = app_gate
    records = toy.records(12)
    expected = toy.rows.head(12).reset_index(drop=True)
    from foundry.predictor import load
    from foundry.registry import Registry

    reference = load(toy.ref, registry=Registry(toy.home)).predict(expected)
    async with serving(app) as client:
        url = f"/v1/models/{toy.name}/predict"
        as_list = await client.post(url, json=records, headers=bearer(key))
        wrapped = await client.post(url, json={"records": records}, headers=bearer(key))
        single = await client.post(url, json=records[3], headers=bearer(key))
        one = await client.post(url, json={"record": records[3]}, headers=bearer(key))
    assert as_list.status_code == 200, as_list.text
    body = as_list.json()
    assert body["model"] == toy.ref
    assert body["usage"] == {"units": 12}
    assert_matches(body["predictions"], reference, "tier")
    assert_matches(wrapped.json()["predictions"], reference, "tier")
    # One record in, a list of one prediction out (float32 sums may differ by ~1e-9
    # between a batch of 12 and a batch of 1: compared within 1e-6).
    assert_matches(single.json()["predictions"], reference.iloc[[3]], "tier")
    assert_matches(one.json()["predictions"], reference.iloc[[3]], "tier")
    assert records[3]["income"] is None  # the row with a missing number went through
    assert as_list.headers["x-request-id"]
    assert int(as_list.headers["x-ratelimit-limit-requests"]) == 100_000
    assert "x-ratelimit-remaining-requests" in as_list.headers


async def test_categories_accept_numbers_and_unseen_values(toy, app_gate, key):
    app, _ = app_gate
    record = {"age": 51, "income": None, "color": "purple", "member": "yes"}
    async with serving(app) as client:
        response = await client.post(
            f"/v1/models/{toy.name}/predict", json=record, headers=bearer(key)
        )
    assert response.status_code == 200, response.text
    assert_matches(response.json()["predictions"], toy.expected([record]), "tier")


async def test_regression_values_equal_foundry_predict(toy_regression, tmp_path):
    app, gate = make_app(toy_regression, tmp_path / "gate")
    key = gate.create_key("acme", "test").key
    records = toy_regression.records(8)
    async with serving(app) as client:
        response = await client.post("/v1/models/spend/predict", json=records, headers=bearer(key))
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert set(predictions[0]) == {"value"}
    assert_matches(predictions, toy_regression.expected(records), "spend")


async def test_model_schema_and_its_example_body(toy, app_gate, key):
    app, _ = app_gate
    async with serving(app) as client:
        listing = (await client.get("/v1/models")).json()
        detail = await client.get(f"/v1/models/{toy.name}")
        by_ref = await client.get(f"/v1/models/{toy.ref}")
        example = detail.json()["example"]
        answer = await client.post(
            f"/v1/models/{toy.name}/predict", json=example, headers=bearer(key)
        )
    [summary] = listing["models"]
    assert summary["ref"] == toy.ref and summary["version"] == 1
    assert summary["task"] == {"type": "binary", "target": "tier", "classes": ["high", "low"]}
    inputs = {f["name"]: f for f in detail.json()["inputs"]}
    assert [f["name"] for f in summary["inputs"]] == ["age", "income", "color", "member"]
    assert inputs["age"]["type"] == "number" and inputs["age"]["nullable"]
    assert isinstance(inputs["age"]["example"], float)
    assert sorted(inputs["color"]["values"]) == ["blue", "green", "red"]
    assert inputs["member"]["values"] == ["no", "yes"]
    assert by_ref.json() == detail.json()
    assert answer.status_code == 200, answer.text


async def test_health_readiness_and_openapi(toy, app_gate):
    app, _ = app_gate
    import httpx

    # Before startup (no lifespan yet): alive, not ready.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as cold:
        assert (await cold.get("/healthz")).json() == {"status": "ok"}
        assert (await cold.get("/readyz")).status_code == 503
    async with serving(app) as client:
        ready = await client.get("/readyz")
        spec = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert ready.status_code == 200
    assert ready.json()["models"] == {toy.ref: "loaded"}
    assert docs.status_code == 200
    predict = spec["paths"]["/v1/models/{name}/predict"]["post"]
    assert predict["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/PredictRequest"
    )
    assert "PredictResponse" in str(predict["responses"]["200"])
    assert "PredictRequest" in spec["components"]["schemas"]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


async def test_docs_pages_use_only_assets_served_here(app_gate):
    """/docs and /redoc work offline: every script, style and icon they name is a path on
    this server (no CDN, no fonts from elsewhere), and each answers 200."""
    import re

    async with serving(app_gate[0]) as client:
        pages = {path: await client.get(path) for path in ("/docs", "/redoc")}
        assets = set()
        for path, page in pages.items():
            assert page.status_code == 200, path
            assert "http://" not in page.text and "https://" not in page.text, path
            urls = re.findall(r'(?:src|href|spec-url)="([^"]+)"|url: \'([^\']+)\'', page.text)
            urls = [a or b for a, b in urls]
            assert len(urls) >= 2, (path, urls)  # the script, its style or spec
            assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
            assets.update(urls)
        answers = {url: await client.get(url) for url in assets}
    assert {
        "/openapi.json",
        "/docs-assets/swagger-ui-bundle.js",
        "/docs-assets/redoc.standalone.js",
    } <= assets
    for url, answer in answers.items():
        assert answer.status_code == 200, url
        assert len(answer.content) > 1000, url


async def test_usage_counts_the_records_of_the_calling_key(toy, app_gate, key):
    app, gate = app_gate
    other = gate.create_key("other", "test").key
    async with serving(app) as client:
        await client.post(
            f"/v1/models/{toy.name}/predict", json=toy.records(5), headers=bearer(key)
        )
        mine = (await client.get("/v1/usage", headers=bearer(key))).json()
        theirs = (await client.get("/v1/usage", headers=bearer(other))).json()
        anonymous = await client.get("/v1/usage")
    assert mine["units_used"] == 5 and mine["requests"] == 1
    assert mine["remaining_units"] == 1_000_000 - 5
    assert theirs["units_used"] == 0
    assert anonymous.status_code == 401


async def test_idempotent_retry_is_replayed_and_charged_once(toy, app_gate, key):
    app, _ = app_gate
    url = f"/v1/models/{toy.name}/predict"
    headers = {**bearer(key), "Idempotency-Key": "order-7"}
    async with serving(app) as client:
        first = await client.post(url, json=toy.records(3), headers=headers)
        again = await client.post(url, json=toy.records(3), headers=headers)
        other_body = await client.post(url, json=toy.records(2), headers=headers)
        usage = (await client.get("/v1/usage", headers=bearer(key))).json()
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert other_body.status_code == 422
    assert other_body.json()["error"]["code"] == "idempotency_key_reused"
    assert usage["units_used"] == 3


async def test_metrics_expose_requests_latency_batches_and_rejections(toy, tmp_path):
    app, gate = make_app(toy, tmp_path / "gate", metrics="public")
    key = gate.create_key("acme", "slow").key  # 2 requests per minute
    async with serving(app) as client:
        for _ in range(3):
            await client.post(
                f"/v1/models/{toy.name}/predict", json=toy.records(1), headers=bearer(key)
            )
        text = (await client.get("/metrics")).text
    assert 'foundry_requests_total{model="toy",status="200"} 2.0' in text
    assert 'foundry_requests_total{model="toy",status="429"} 1.0' in text
    assert 'foundry_request_latency_seconds_count{model="toy"} 3.0' in text
    assert 'foundry_batch_size_count{model="toy"} 2.0' in text
    assert 'foundry_quota_rejections_total{reason="rate_limit_exceeded"} 1.0' in text


async def test_admin_routes_need_the_admin_token(toy, app_gate):
    app, _ = app_gate
    admin = bearer("admin-secret")
    async with serving(app) as client:
        anonymous = await client.get("/admin/keys")
        wrong = await client.get("/admin/keys", headers=bearer("admin-secre"))
        customer_key = await client.post(
            "/admin/keys", headers=admin, json={"name": "acme", "plan": "test"}
        )
        created = customer_key.json()
        bad_plan = await client.post(
            "/admin/keys", headers=admin, json={"name": "x", "plan": "gold"}
        )
        bad_body = await client.post("/admin/keys", headers=admin, json={"plan": "test"})
        listed = (await client.get("/admin/keys", headers=admin)).json()
        works = await client.post(
            f"/v1/models/{toy.name}/predict", json=toy.records(1), headers=bearer(created["key"])
        )
        rotated = await client.post(
            f"/admin/keys/{created['prefix']}/rotate", headers=admin, json={"grace_hours": 0}
        )
        old_after_rotation = await client.post(
            f"/v1/models/{toy.name}/predict", json=toy.records(1), headers=bearer(created["key"])
        )
        new_key = rotated.json()["key"]
        revoked = await client.delete(f"/admin/keys/{rotated.json()['id']}", headers=admin)
        after_revoke = await client.post(
            f"/v1/models/{toy.name}/predict", json=toy.records(1), headers=bearer(new_key)
        )
    assert anonymous.status_code == 401
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert customer_key.status_code == 201 and created["key"].startswith("fdy_")
    assert bad_plan.status_code == 400 and bad_plan.json()["error"]["param"] == "plan"
    assert bad_body.status_code == 422 and bad_body.json()["error"]["param"] == "name"
    assert [k["prefix"] for k in listed["keys"]] == [created["prefix"]]
    assert "key" not in listed["keys"][0]
    assert works.status_code == 200
    assert rotated.status_code == 201 and new_key != created["key"]
    assert old_after_rotation.json()["error"]["code"] == "key_revoked"
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert after_revoke.status_code == 403
    assert after_revoke.json()["error"]["code"] == "key_revoked"


async def test_admin_routes_without_a_configured_token_say_how_to_set_one(toy, tmp_path):
    app, _ = make_app(toy, tmp_path / "gate", admin_token=None)
    async with serving(app) as client:
        response = await client.get("/admin/keys", headers=bearer("anything"))
    assert response.status_code == 403
    assert "FOUNDRY_ADMIN_TOKEN" in response.json()["error"]["message"]


async def test_bare_app_serves_without_keys_or_metering(toy):
    from foundry.serve.app import create_app

    app = create_app(ServeConfig(), [toy.ref], home=toy.home, bare=True)
    async with serving(app) as client:
        response = await client.post(f"/v1/models/{toy.name}/predict", json=toy.records(4))
        usage = await client.get("/v1/usage")
        admin = await client.get("/admin/keys")
    assert response.status_code == 200
    assert_matches(response.json()["predictions"], toy.expected(toy.records(4)), "tier")
    assert usage.status_code == admin.status_code == 404


def test_serve_config_section_is_read_from_a_full_config(tmp_path):
    from foundry.config.load import load_serve_config

    path = tmp_path / "config.yaml"
    path.write_text(
        "name: toy\ndata: {path: nowhere.csv}\nfeatures: {target: y}\n"
        "serve:\n  port: 9001\n  batching: {max_batch_size: 8}\n"
        "  plans: {gold: {included_units: 5}}\n"
    )
    config = load_serve_config(path)
    assert config.port == 9001 and config.batching.max_batch_size == 8
    assert "gold" in config.all_plans()
    path.write_text("serve:\n  batching: {max_batch_sise: 8}\n")
    with pytest.raises(ConfigError, match="serve.batching.max_batch_sise"):
        load_serve_config(path)


def test_serve_command_pins_versions_and_refuses_unknown_models(toy, monkeypatch, capsys):
    from foundry.serve import cli_serve, server

    calls = []
    monkeypatch.setenv("FOUNDRY_HOME", str(toy.home))
    monkeypatch.delenv("FOUNDRY_ADMIN_TOKEN", raising=False)
    monkeypatch.setattr(server, "run_server", lambda config, refs: calls.append((config, refs)))
    cli_serve.serve([toy.name], None, "127.0.0.1", 8123, 2)
    [(config, refs)] = calls
    assert refs == [toy.ref]  # "toy" pinned to "toy:1"
    assert (config.port, config.workers) == (8123, 2)
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8123" in out and "/docs" in out and toy.ref in out
    assert "FOUNDRY_ADMIN_TOKEN" in out
    with pytest.raises(ModelError):
        cli_serve.serve(["nothing-here"], None, None, None, None)
    with pytest.raises(ConfigError, match="no models"):
        cli_serve.serve([], None, None, None, None)
    # The hostile-client settings travel from the flags to the workers' config.
    cli_serve.serve(
        [toy.name],
        None,
        None,
        None,
        None,
        header_timeout=2.5,
        body_timeout=7,
        max_connections=50,
        metrics="public",
    )
    config = calls[-1][0]
    assert (
        config.header_timeout_s,
        config.body_timeout_s,
        config.max_connections,
        config.metrics,
    ) == (2.5, 7, 50, "public")
    with pytest.raises(ConfigError, match="serve.metrics"):
        cli_serve.serve([toy.name], None, None, None, None, metrics="everyone")


def test_overflowing_outputs_become_null_not_invalid_json(toy):
    import numpy as np

    from foundry.predictor import load
    from foundry.registry import Registry
    from foundry.serve.served_model import ServedModel

    served = ServedModel.from_predictor(load(toy.ref, registry=Registry(toy.home)))
    ok, broken = served._decode(np.array([[0.0, 1.0], [np.nan, 1.0]], dtype=np.float32))
    assert ok["label"] == "low"
    assert broken == {"label": None, "probabilities": {"high": None, "low": None}}
