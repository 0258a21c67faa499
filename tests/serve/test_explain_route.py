"""POST /v1/models/{name}/explain on a real small model: attributions for every input,
metered like predict, and the API's errors for bad keys, fields and sizes."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from tests.serve.serve_app_support import bearer, make_app, serving, shared_toy

from foundry.serve.store import usage_events

pytestmark = pytest.mark.anyio

INPUTS = {"age", "income", "color", "member"}


@pytest.fixture
def app_gate(toy, tmp_path):
    return make_app(toy, tmp_path / "gate")


@pytest.fixture
def key(app_gate):
    return app_gate[1].create_key("acme", "test").key


async def test_explanations_cover_every_input_and_are_metered(toy, app_gate, key):
    app, gate = app_gate
    records = toy.records(4)
    async with serving(app) as client:
        url = f"/v1/models/{toy.name}"
        predicted = await client.post(f"{url}/predict", json=records, headers=bearer(key))
        response = await client.post(
            f"{url}/explain", json={"records": records, "steps": 16}, headers=bearer(key)
        )
        usage = (await client.get("/v1/usage", headers=bearer(key))).json()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == toy.ref and body["method"] == "integrated_gradients"
    assert body["steps"] == 16 and body["usage"] == {"units": 4}
    assert set(body["baseline"]) == INPUTS
    labels = [p["label"] for p in predicted.json()["predictions"]]
    assert [row["prediction"] for row in body["rows"]] == labels
    for row in body["rows"]:
        assert set(row["attributions"]) == INPUTS
        assert row["target_class"] == row["prediction"]
        gap = row["output"] - row["baseline_output"]
        assert sum(row["attributions"].values()) - gap == pytest.approx(
            row["convergence_delta"], abs=1e-4
        )
    # Metered as predict is, one unit per record; the usage event says it explained.
    assert usage["units_used"] == 4 + 4 and usage["requests"] == 2
    assert response.headers["x-request-id"].startswith("explain-")
    with gate.store.read() as conn:
        events = conn.execute(select(usage_events.c.request_id, usage_events.c.units)).all()
    assert sorted((r.startswith("explain-"), units) for r, units in events) == [
        (False, 4),
        (True, 4),
    ]


async def test_a_chosen_class_and_the_model_default_steps(toy, app_gate, key):
    app, _ = app_gate
    async with serving(app) as client:
        response = await client.post(
            f"/v1/models/{toy.name}/explain",
            json={"records": toy.records(2), "target": "high"},
            headers=bearer(key),
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["steps"] == 50  # evaluate.explain.steps of the model's config
    assert [row["target_class"] for row in body["rows"]] == ["high", "high"]


async def test_errors_name_the_field_and_are_not_charged(toy, app_gate, key):
    app, _ = app_gate
    url = f"/v1/models/{toy.name}/explain"
    good = toy.records(1)
    async with serving(app) as client:
        anonymous = await client.post(url, json={"records": good})
        typo = await client.post(
            url, json={"records": [{**good[0], "agee": 3}]}, headers=bearer(key)
        )
        wrong_type = await client.post(
            url, json={"records": [{**good[0], "age": "old"}]}, headers=bearer(key)
        )
        steps = await client.post(url, json={"records": good, "steps": 5000}, headers=bearer(key))
        target = await client.post(
            url, json={"records": good, "target": "medium"}, headers=bearer(key)
        )
        extra = await client.post(url, json={"records": good, "stepz": 3}, headers=bearer(key))
        bare = await client.post(url, json=good, headers=bearer(key))
        too_many = await client.post(
            url,
            json={"records": toy.records(51)},  # plan: 50
            headers=bearer(key),
        )
        unknown = await client.post(
            "/v1/models/nope/explain", json={"records": good}, headers=bearer(key)
        )
        usage = (await client.get("/v1/usage", headers=bearer(key))).json()

    def error(response, status: int, code: str, param: str | None) -> dict:
        assert response.status_code == status, response.text
        err = response.json()["error"]
        assert (err["code"], err["param"]) == (code, param)
        return err

    error(anonymous, 401, "missing_api_key", None)
    assert "agee" in error(typo, 422, "invalid_field", "records[0].agee")["message"]
    error(wrong_type, 422, "invalid_field", "records[0].age")
    assert "2 to 200" in error(steps, 422, "invalid_field", "steps")["message"]
    assert "high, low" in error(target, 422, "invalid_field", "target")["message"]
    error(extra, 422, "invalid_field", "stepz")
    error(bare, 422, "missing_field", "records")
    error(too_many, 413, "too_many_records", "records")
    error(unknown, 404, "model_not_found", "model")
    assert usage["units_used"] == 0


async def test_regressors_explain_their_value(tmp_path_factory, tmp_path):
    toy = shared_toy(tmp_path_factory, regression=True)
    app, gate = make_app(toy, tmp_path / "gate")
    key = gate.create_key("acme", "test").key
    async with serving(app) as client:
        response = await client.post(
            f"/v1/models/{toy.name}/explain",
            json={"records": toy.records(3), "steps": 20},
            headers=bearer(key),
        )
        wrong = await client.post(
            f"/v1/models/{toy.name}/explain",
            json={"records": toy.records(1), "target": "high"},
            headers=bearer(key),
        )
    assert response.status_code == 200, response.text
    for row in response.json()["rows"]:
        assert row["target_class"] is None
        assert row["output"] == pytest.approx(row["prediction"], rel=1e-4)
    assert wrong.status_code == 422 and wrong.json()["error"]["param"] == "target"


async def test_openapi_describes_the_explain_body(toy, app_gate):
    app, _ = app_gate
    async with serving(app) as client:
        spec = (await client.get("/openapi.json")).json()
    route = spec["paths"]["/v1/models/{name}/explain"]["post"]
    assert "ExplainRequest" in str(route["requestBody"])
    assert "ExplainResponse" in str(route["responses"]["200"])
    assert spec["components"]["schemas"]["ExplainRequest"]["properties"]["steps"]["anyOf"]


async def test_idempotent_retries_replay_and_charge_once(toy, app_gate, key):
    app, _ = app_gate
    url = f"/v1/models/{toy.name}"
    headers = {**bearer(key), "Idempotency-Key": "why-7"}
    body = {"records": toy.records(2), "steps": 8}
    async with serving(app) as client:
        first = await client.post(f"{url}/explain", json=body, headers=headers)
        again = await client.post(f"{url}/explain", json=body, headers=headers)
        as_predict = await client.post(f"{url}/predict", json=body["records"], headers=headers)
        usage = (await client.get("/v1/usage", headers=bearer(key))).json()
    assert first.status_code == again.status_code == 200, first.text
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    # The same key on another route's body is another request: refused, not replayed.
    assert as_predict.json()["error"]["code"] == "idempotency_key_reused"
    assert usage["units_used"] == 2
