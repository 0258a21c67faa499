"""The issue's check, end to end: a held-out table with a sensitive attribute and planted
PII goes through `foundry run`; the PII is caught, the audit reports the group gap,
mitigation narrows it within the accuracy budget, DP training reports ε within the
target, and the card carries all of it. Then `foundry predict`, `foundry evaluate`,
`foundry explain` and the serving API use what was saved."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

import foundry
from foundry.registry import Registry

FIRST = ["ana", "ben", "chloe", "dev", "emma", "femi", "gus", "hana", "ivan", "jo"]


def luhn_card(rng: np.random.Generator) -> str:
    """A 16-digit number that passes the Luhn check."""
    digits = [4] + [int(d) for d in rng.integers(0, 10, 14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    digits.append((10 - total % 10) % 10)
    return "".join(map(str, digits))


def loans_table(n: int, seed: int) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Loan decisions that depend on income and history, where income differs by `sex`
    (the group gap to find); free-text notes carry planted emails, phones and card numbers; an
    `email` column and a near-unique `customer_ref` identify people."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["female", "male"], n)
    # `sex` is not a model input, but income (a proxy) carries the gap into the model.
    income = rng.normal(44 + 12 * (sex == "male"), 12, n).round(1)
    history = rng.integers(0, 20, n).astype(float)
    purpose = rng.choice(["car", "home", "study", "business"], n)
    logit = 0.1 * (income - 50) + 0.15 * (history - 10)
    approved = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    planted: dict[str, list[str]] = {"email": [], "phone": [], "credit_card": []}
    notes, emails = [], []
    for i in range(n):
        name = f"{FIRST[i % len(FIRST)]}.{rng.integers(1000, 9999)}"
        email = f"{name}@mail-{i % 7}.example.com"
        emails.append(email)
        kind = i % 5
        if kind == 0:
            planted["email"].append(email)
            notes.append(f"wants the offer sent to {email} soon")
        elif kind == 1:
            phone = f"+44 20 7{rng.integers(100, 999)} {rng.integers(1000, 9999)}"
            planted["phone"].append(phone)
            notes.append(f"call back on {phone} after five")
        elif kind == 2:
            card = luhn_card(rng)
            planted["credit_card"].append(card)
            notes.append(f"paid the fee with card {card}")
        else:
            notes.append(rng.choice(["regular customer", "first visit", "asked about rates"]))
    df = pd.DataFrame(
        {
            "customer_ref": [f"C-{i:06d}-{rng.integers(100, 999)}" for i in range(n)],
            "email": emails,
            "sex": sex,
            "income": income,
            "history": history,
            "purpose": purpose,
            "notes": notes,
            "approved": approved,
        }
    )
    return df, planted


def config(data: str, test: str, **train) -> dict:
    return {
        "name": "loans",
        "description": "Loan approval from application data",
        "data": {"path": data, "test_path": test, "split": {"train": 0.8, "val": 0.2, "test": 0.0}},
        "features": {"target": "approved", "exclude": ["sex"]},
        "model": {"type": "text", "encoder": "bow", "embedding_dim": 16, "layers": [32]},
        "train": {"epochs": 8, "batch_size": 64, "optimizer": {"lr": 0.01}, **train},
        "evaluate": {
            "fairness": {
                "sensitive_features": ["sex"],
                "mitigation": {"constraint": "demographic_parity", "tolerance": 0.1},
            }
        },
        "card": {
            "intended_use": "Ranking loan applications for human review.",
            "limitations": "Trained on synthetic data; not for automated decisions.",
        },
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    home = root / "home"
    patch = pytest.MonkeyPatch()
    patch.setenv("FOUNDRY_HOME", str(home))
    train_df, planted = loans_table(3000, seed=0)
    test_df, planted_test = loans_table(1000, seed=1)
    train_df.to_csv(root / "train.csv", index=False)
    test_df.to_csv(root / "test.csv", index=False)
    (root / "loans.yaml").write_text(yaml.safe_dump(config("train.csv", "test.csv")))
    plain = foundry.run(root / "loans.yaml", quiet=True)
    private_cfg = config("train.csv", "test.csv", privacy={"target_epsilon": 3.0})
    private_cfg["name"] = "loans-dp"
    (root / "loans-dp.yaml").write_text(yaml.safe_dump(private_cfg))
    private = foundry.run(root / "loans-dp.yaml", quiet=True)
    yield {
        "home": home,
        "root": root,
        "plain": plain,
        "private": private,
        "planted": planted,
        "planted_test": planted_test,
        "test": test_df,
    }
    patch.undo()


@pytest.fixture(autouse=True)
def trained_home(request, monkeypatch):
    """The module's registry (conftest gives every test an empty one first)."""
    if "trained" in request.fixturenames:
        monkeypatch.setenv("FOUNDRY_HOME", str(request.getfixturevalue("trained")["home"]))


def package_text(path) -> str:
    return "\n".join(
        (path / name).read_text() for name in ("foundry.json", "card.md", "card.json")
    )


@pytest.mark.slow
def test_pii_is_caught_and_never_stored(trained):
    manifest = Registry().load(trained["plain"].model_ref).manifest
    report = manifest["pii"]
    planted, planted_test = trained["planted"], trained["planted_test"]
    for kind in ("email", "phone", "credit_card"):
        assert report["findings"]["notes"][kind] == len(planted[kind]) + len(planted_test[kind])
    identifiers = {c["column"]: c for c in report["identifier_columns"]}
    assert identifiers["email"]["action"] == "drop"
    assert "customer_ref" in identifiers
    inputs = [f["name"] for f in manifest["features"]["inputs"]]
    assert "email" not in inputs and "customer_ref" not in inputs and "sex" not in inputs
    text = package_text(trained["plain"].package_path)
    for values in planted.values():
        for value in values[:50]:
            assert value not in text


@pytest.mark.slow
def test_audit_finds_the_gap_and_mitigation_narrows_it(trained):
    fairness = Registry().load(trained["plain"].model_ref).manifest["fairness"]
    before = fairness["audit"]["demographic_parity_difference"]
    mitigation = fairness["mitigation"]
    after = mitigation["audit_after"]["demographic_parity_difference"]
    assert before > 0.15
    assert after <= 0.5 * before
    assert mitigation["accuracy_after"] >= mitigation["accuracy_before"] - 0.02
    groups = {g["group"]["sex"] for g in fairness["audit"]["by_group"]}
    assert groups == {"female", "male"}


@pytest.mark.slow
def test_private_training_reports_epsilon_within_the_accuracy_target(trained):
    manifest = Registry().load(trained["private"].model_ref).manifest
    privacy = manifest["privacy"]
    assert 0 < privacy["epsilon"] <= 3.0
    plain = trained["plain"].metrics["accuracy"]
    private = trained["private"].metrics["accuracy"]
    assert private >= plain - 0.03
    card = json.loads((trained["private"].package_path / "card.json").read_text())
    assert card["privacy"]["epsilon"] == pytest.approx(privacy["epsilon"], rel=1e-3)


@pytest.mark.slow
def test_card_carries_everything(trained):
    path = trained["plain"].package_path
    card = json.loads((path / "card.json").read_text())
    text = (path / "card.md").read_text()
    assert "Ranking loan applications for human review." in text
    assert "not for automated decisions" in text
    for section in ("pii", "fairness", "calibration", "explanations"):
        assert card.get(section), section
    assert "demographic parity" in text.lower()
    assert "calibration" in text.lower()


@pytest.mark.slow
def test_predict_applies_scrubbing_calibration_and_mitigation(trained):
    predictor = foundry.load(trained["plain"].model_ref)
    test = trained["test"]
    # the fitted temperature is applied only when it lowered the validation ECE
    calibration = Registry().load(trained["plain"].model_ref).manifest["calibration"]
    assert calibration["fitted_temperature"] not in (None, 1.0)
    kept = calibration["val_ece_after"] < calibration["val_ece_before"]
    assert calibration["kept"] is kept
    assert predictor.temperature == (calibration["fitted_temperature"] if kept else 1.0)
    with_sex = predictor.predict(test)
    without_sex = predictor.predict(test.drop(columns=["sex"]))
    # the probabilities do not depend on the sensitive column; the decisions do
    assert np.allclose(with_sex["probability_yes"], without_sex["probability_yes"])
    rates = with_sex.groupby(test["sex"])["approved"].apply(lambda s: (s == "yes").mean())
    plain_rates = without_sex.groupby(test["sex"])["approved"].apply(
        lambda s: (s == "yes").mean()
    )
    assert abs(rates["male"] - rates["female"]) < abs(plain_rates["male"] - plain_rates["female"])
    # an email in the notes reaches the model as the mask training used
    row = test.iloc[[0]].copy()
    masked = row.copy()
    row["notes"] = "wants the offer sent to someone.else@example.org soon"
    masked["notes"] = "wants the offer sent to [EMAIL] soon"
    assert np.allclose(predictor.predict_proba(row), predictor.predict_proba(masked))


@pytest.mark.slow
def test_served_predictions_match_the_predictor(trained):
    from foundry.serve.served_model import ServedModel

    served = ServedModel.load(trained["plain"].model_ref)
    predictor = served.predictor
    test = trained["test"].head(20)
    records = test.drop(columns=["approved", "email", "customer_ref"]).to_dict("records")
    answers = served.predict_records([dict(r) for r in records])
    expected = predictor.predict(test)
    assert [a["label"] for a in answers] == expected["approved"].tolist()
    assert all(a.get("mitigated") for a in answers)
    assert np.allclose([a["probabilities"]["yes"] for a in answers], expected["probability_yes"])


@pytest.mark.slow
def test_evaluate_reports_the_audit_on_a_new_file(trained, cli):
    root = trained["root"]
    result = cli("evaluate", trained["plain"].model_ref, "--data", root / "test.csv", "--json")
    assert result.code == 0, result.err
    metrics = json.loads(result.out)
    assert metrics["fairness"]["demographic_parity_difference"] > (
        metrics["fairness_mitigated"]["demographic_parity_difference"]
    )
    assert 0 <= metrics["ece"] < 0.2


@pytest.mark.slow
def test_the_api_scrubs_pii_in_the_request_path_small_and_large_bodies(trained):
    """The server scrubs in the request's own path (inline for a small body, on a worker
    thread past a few KB), not on the model's batching thread: both give the masked
    record's answer."""
    import asyncio

    import httpx

    from foundry.config.schema import ServeConfig
    from foundry.serve.app import create_app
    from foundry.serve.gate import Gate

    ref = trained["plain"].model_ref
    gate = Gate(home=trained["home"])
    key = gate.create_key("trust-api", "pro").key
    test = trained["test"]
    row = json.loads(test.drop(columns=["approved", "email", "customer_ref"]).head(1)
                     .to_json(orient="records"))[0]
    leaked = {**row, "notes": "wants the offer sent to someone.else@example.org soon"}
    masked = {**row, "notes": "wants the offer sent to [EMAIL] soon"}
    padding = [{**row, "notes": "x" * 200}] * 40  # past the 4 KB inline limit

    async def ask() -> list[dict]:
        app = create_app(ServeConfig(), [ref], gate=gate, home=trained["home"])
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                url = f"/v1/models/{ref.split(':')[0]}/predict"
                answers = []
                for records in ([leaked], [masked], [leaked, *padding]):
                    response = await client.post(url, json={"records": records},
                                                 headers={"authorization": f"Bearer {key}"})
                    assert response.status_code == 200, response.text
                    answers.append(response.json()["predictions"][0])
                return answers

    try:
        small, reference, large = asyncio.run(ask())
    finally:
        gate.close()
    assert small["probabilities"] == pytest.approx(reference["probabilities"])
    assert large["probabilities"] == pytest.approx(reference["probabilities"])
    served_text = json.dumps([small, large])
    assert "someone.else" not in served_text
