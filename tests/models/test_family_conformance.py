"""The model-family contract, checked on every registered family the way scikit-learn's
`check_estimator` checks an estimator: one tiny example per family (and per task a family
has; family_examples.py) is trained once through `foundry.train`, then

- fit → package → load gives the same outputs (the in-memory model vs the package);
- served equals local: the API app, in process, answers what the loaded model does;
- the optional hooks the family declares (`supports`) work: explanations, fairness
  audit, calibration; a family that does not explain says so with a 4xx, not a 500;
- bad inputs get clear errors, locally (a FoundryError naming the problem) and served
  (a 4xx with the API's error shape).

Registering a family without an example here fails the first test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from tests.serve.serve_app_support import assert_matches, bearer, serving

import foundry
from foundry.config.schema import PlanConfig, ServeConfig
from foundry.errors import FoundryError
from foundry.families import family_for, family_of_package, registered_families
from foundry.registry import Registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))  # hf_tiny

from family_examples import EXAMPLES, Example  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

PLANS = {
    "test": PlanConfig(
        included_units=1_000_000, requests_per_minute=100_000, tokens_per_minute=10_000_000
    )
}


@pytest.fixture
def anyio_backend():
    return "asyncio"


_TRAINED: dict[str, tuple[Example, object, Path]] = {}


@pytest.fixture(params=list(EXAMPLES))
def trained(request, tmp_path_factory):
    """(example, TrainResult, registry home) of one case, trained once per session."""
    case = request.param
    if case not in _TRAINED:
        root = tmp_path_factory.mktemp("conformance") / case
        root.mkdir()
        example = EXAMPLES[case](root)
        home = root / "home"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FOUNDRY_HOME", str(home))
            result = foundry.train(example.config, progress=False, quiet=True)
        _TRAINED[case] = (example, result, home)
    return _TRAINED[case]


def _model_type(case: str) -> str:
    return case.split("-")[0]


def _loaded(result, home: Path):
    """(family, the registered package loaded by the family that trained it)."""
    package = Registry(home).load(result.model_ref)
    family = family_of_package(package.manifest)
    return family, family.load(package, result.model_ref)


def _same(a, b) -> None:
    if isinstance(a, np.ndarray):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    else:
        assert list(a) == list(b)


def test_every_registered_model_type_has_an_example():
    types = {t for listed in registered_families().values() for t in listed}
    assert types <= {_model_type(case) for case in EXAMPLES}, (
        "a registered model type has no conformance example: add one to "
        "tests/models/family_examples.py"
    )


def test_fit_package_load_gives_the_same_outputs(trained):
    example, result, home = trained
    family, loaded = _loaded(result, home)
    assert type(loaded) is type(result.model)  # the in-memory model is what load returns
    _same(family.outputs(result.model, example.batch), family.outputs(loaded, example.batch))


async def test_served_equals_local(trained, tmp_path):
    example, result, home = trained
    family, loaded = _loaded(result, home)
    name = result.model_ref.split(":")[0]
    app, key = _app(result.model_ref, home, tmp_path)
    async with serving(app) as client:
        if example.route == "predict":
            records = example.served_records()
            response = await client.post(
                f"/v1/models/{name}/predict", json=records, headers=bearer(key)
            )
            assert response.status_code == 200, response.text
            expected = loaded.predict(example.batch)
            assert_matches(response.json()["predictions"], expected, loaded.task.target)
            # the ready-to-send request GET /v1/models/{name} shows a client is answered
            detail = (await client.get(f"/v1/models/{name}", headers=bearer(key))).json()
            assert all(row["example"] is not None for row in detail["inputs"]), detail
            response = await client.post(
                f"/v1/models/{name}/predict", json=detail["example"], headers=bearer(key)
            )
            assert response.status_code == 200, response.text
        elif example.route == "recommend":
            body = {"queries": [{"user": user, "k": 5} for user in example.batch]}
            response = await client.post(
                f"/v1/models/{name}/recommend", json=body, headers=bearer(key)
            )
            assert response.status_code == 200, response.text
            answers = response.json()["recommendations"]
            for served, user in zip(answers, example.batch, strict=True):
                local = loaded.recommend(user, k=5)
                items = [r["item"] for r in local["items"]]
                assert [r["item"] for r in served["items"]] == items
                _same(np.array([r["score"] for r in served["items"]]),
                      np.array([r["score"] for r in local["items"]]))
        elif example.route == "completions":
            body = {"model": name, "prompt": example.batch, "max_tokens": 8, "temperature": 0}
            response = await client.post("/v1/completions", json=body, headers=bearer(key))
            assert response.status_code == 200, response.text
            texts = [choice["text"] for choice in response.json()["choices"]]
            assert texts == family.outputs(loaded, example.batch)
        else:
            body = {"model": name, "input": example.batch}
            response = await client.post("/v1/embeddings", json=body, headers=bearer(key))
            assert response.status_code == 200, response.text
            served = np.array([row["embedding"] for row in response.json()["data"]])
            _same(served.astype(np.float32), family.outputs(loaded, example.batch))


async def test_optional_hooks_work_where_declared(trained, tmp_path):
    example, result, home = trained
    family, loaded = _loaded(result, home)
    supports = getattr(family, "supports", frozenset())
    assert set(example.checks) <= supports, "an example checks a hook its family lacks"
    manifest = Registry(home).load(result.model_ref).manifest
    for section in example.checks:
        assert section in manifest, f"training wrote no '{section}' section"
    if "calibration" in supports:  # the loaded model applies the temperature it was given
        expected = (manifest.get("calibration") or {}).get("temperature", 1.0)
        assert loaded.temperature == pytest.approx(expected)
    if example.route != "predict":
        return
    name = result.model_ref.split(":")[0]
    app, key = _app(result.model_ref, home, tmp_path)
    records = example.served_records()[:2]
    async with serving(app) as client:
        response = await client.post(
            f"/v1/models/{name}/explain", json={"records": records}, headers=bearer(key)
        )
    if "explain" in supports:
        assert response.status_code == 200, response.text
        assert len(response.json()["rows"]) == 2
    else:
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["error"]["message"]


async def test_bad_inputs_get_clear_errors(trained, tmp_path):
    example, result, home = trained
    family, loaded = _loaded(result, home)
    if example.bad is not None:
        with pytest.raises(FoundryError, match=example.bad_match):
            family.outputs(loaded, example.bad)
    name = result.model_ref.split(":")[0]
    app, key = _app(result.model_ref, home, tmp_path)
    async with serving(app) as client:
        if example.route == "predict":
            response = await client.post(
                f"/v1/models/{name}/predict", json=[{"no_such_input": 1}], headers=bearer(key)
            )
        elif example.route == "recommend":  # a query with neither a user nor items
            response = await client.post(
                f"/v1/models/{name}/recommend", json={"k": 3}, headers=bearer(key)
            )
        elif example.route == "completions":  # no prompt
            response = await client.post(
                "/v1/completions", json={"model": name, "max_tokens": 4}, headers=bearer(key)
            )
        else:  # a language model's route
            response = await client.post(
                "/v1/completions", json={"model": name, "prompt": "hi"}, headers=bearer(key)
            )
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["message"]


def _app(ref: str, home: Path, gate_home: Path):
    from foundry.serve.app import create_app
    from foundry.serve.gate import Gate

    serve_config = ServeConfig(plans=PLANS)
    gate = Gate(serve_config.all_plans(), home=gate_home / "gate")
    app = create_app(serve_config, [ref], gate=gate, home=home)
    return app, gate.create_key("acme", "test").key


def test_an_unknown_model_type_names_the_registered_ones():
    with pytest.raises(FoundryError, match="model.type") as caught:
        family_for("no-such-type")
    assert "mlp" in str(caught.value.hint) and "hf" in str(caught.value.hint)
