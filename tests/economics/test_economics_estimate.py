"""`foundry.economics.estimate` on a real trained model: the throughput is measured on the
model as `foundry serve` loads it, and the money follows from it by the formulas."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from tests.serve.serve_app_support import shared_toy

from foundry.config.schema import BatchingConfig, CostConfig, PlanConfig, ServeConfig
from foundry.economics import estimate
from foundry.errors import ConfigError, DataError, ModelError
from foundry.lm.load import read_manifest
from foundry.registry import Registry

QUICK = CostConfig(measure_seconds=0.05, measure="model")
"""In process, short timings: these tests check what is measured and used, not how fast
it is (test_economics_server.py measures through a real server)."""


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return shared_toy(tmp_path_factory)


@pytest.fixture
def registry(toy):
    return Registry(toy.home)


def per_1k(cost: CostConfig, throughput: float) -> float:
    return cost.serve_machine_per_hour / (3600 * throughput * cost.serve_utilization) * 1000


def test_supplied_throughput_gives_the_formulas_exactly(toy, registry):
    cost = CostConfig(serve_machine_per_hour=0.34, serve_utilization=0.7, fixed_monthly=20.0,
                      train_machine_per_hour=2.5)
    serve = ServeConfig(plans={"gold": PlanConfig(price_cents=2_500, included_units=50_000),
                               "pro": PlanConfig(price_cents=100, included_units=10_000_000)})
    e = estimate(toy.ref, cost, serve=serve, throughput=123.0, registry=registry)
    assert e.ref == toy.ref and e.kind == "tabular" and e.unit == "prediction"
    assert e.throughput.basis == "supplied" and e.throughput.per_machine == 123.0
    assert e.throughput.measure == "supplied" and e.throughput.server_cases == ()
    assert e.throughput.single is None and e.throughput.rows == 0  # nothing measured
    assert e.cost_per_1k == per_1k(cost, 123.0)
    seconds = read_manifest(toy.ref, registry=registry)[1]["training"]["seconds"]
    assert e.training is not None and e.training.seconds == seconds > 0
    assert e.training.cost == seconds / 3600 * 2.5
    plans = {p.name: p for p in e.plans}
    assert list(plans) == ["trial", "starter", "pro", "enterprise", "gold"]  # built-ins + own
    gold = plans["gold"]
    assert gold.serving_cost == 50 * e.cost_per_1k
    assert gold.margin == 25.0 - 50 * e.cost_per_1k
    assert gold.break_even_customers == math.ceil((0.34 * 730 + 20.0) / gold.margin)
    # the configured pro replaces the built-in: $1 for 10M predictions loses money
    assert plans["pro"].price == 1.0 and plans["pro"].break_even_customers is None
    assert plans["pro"].margin == 1.0 - 10_000 * e.cost_per_1k < 0


def test_measured_throughput_is_positive_and_is_what_the_cost_uses(toy, registry):
    threads = torch.get_num_threads()
    e = estimate(toy.ref, QUICK, registry=registry)
    t = e.throughput
    assert torch.get_num_threads() == threads  # the server's thread count is undone
    assert t.basis == "single" and t.unit == "prediction" and t.measure == "model"
    assert t.server is None and t.server_cases == ()
    assert t.single > 0 and t.serving > 0 and t.serving_batch == 64
    assert t.per_machine == t.single  # one worker
    assert e.cost_per_1k == per_1k(QUICK, t.single)
    assert t.rows == len(pd.read_csv(toy.csv)) // 10  # the validation split (10%)
    assert "val split" in t.source and t.threads >= 1


def test_serving_batch_basis_and_workers(toy, registry):
    serve = ServeConfig(workers=2, batching=BatchingConfig(max_batch_size=16))
    cost = QUICK.model_copy(update={"throughput_batch": "serving"})
    e = estimate(toy.ref, cost, serve=serve, registry=registry)
    t = e.throughput
    assert t.basis == "serving" and t.serving_batch == 16 and t.workers == 2
    assert t.per_machine == 2 * t.serving
    assert e.cost_per_1k == per_1k(cost, 2 * t.serving)
    off = ServeConfig(batching=BatchingConfig(enabled=False))
    t_off = estimate(toy.ref, cost, serve=off, registry=registry).throughput
    assert t_off.serving_batch == 1 and t_off.serving == t_off.single


def test_rows_from_a_data_file(toy, registry, tmp_path):
    e = estimate(toy.ref, QUICK, data=toy.csv, registry=registry)  # the target column rides along
    assert e.throughput.rows == 160 and e.throughput.source == str(toy.csv)
    assert e.throughput.single > 0


def test_a_data_file_without_the_model_inputs_is_one_clear_error(toy, registry, tmp_path):
    missing = tmp_path / "missing.csv"
    pd.read_csv(toy.csv).drop(columns=["color"]).to_csv(missing, index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) 'color'; model toy:\d+ needs"):
        estimate(toy.ref, QUICK, data=missing, registry=registry)
    wrong = tmp_path / "wrong.csv"
    pd.read_csv(toy.csv).assign(age="old").to_csv(wrong, index=False)
    with pytest.raises(DataError, match="age"):
        estimate(toy.ref, QUICK, data=wrong, registry=registry)
    with pytest.raises(DataError, match="not found"):
        estimate(toy.ref, QUICK, data=tmp_path / "nope.csv", registry=registry)


def test_unknown_model_and_bad_throughput(toy, registry):
    with pytest.raises(ModelError, match="nope"):
        estimate("nope", QUICK, throughput=1.0, registry=registry)
    for bad in (0.0, -5.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="--throughput must be a positive number"):
            estimate(toy.ref, QUICK, throughput=bad, registry=registry)
