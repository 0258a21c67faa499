"""The arithmetic of unit economics, checked against the formulas of docs/ECONOMICS.md
with a supplied throughput (no model: these are the numbers `estimate` feeds it)."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from pydantic import ValidationError

from foundry.config.schema import BUILTIN_PLANS, CostConfig, FoundryConfig, PlanConfig
from foundry.economics import Throughput, cost_per_1k, economics_from, format_money
from foundry.economics.estimate import plan_economics, price_suggestions


def supplied(units_per_second: float, unit: str = "prediction") -> Throughput:
    return Throughput(
        unit=unit, measure="supplied", server=None, server_cases=(), single=None,
        serving=None, serving_batch=64, supplied=units_per_second,
        basis="supplied", workers=1, threads=None, per_machine=units_per_second, rows=0,
        source="test", why="test",
    )


def test_cost_per_1k_is_the_machine_hour_spread_over_the_units_it_sells():
    # $0.10 an hour, 500 predictions/s at 50% sold: 900,000 predictions an hour
    assert cost_per_1k(0.10, 500.0, 0.5) == pytest.approx(0.10 / 900_000 * 1000, rel=1e-15)
    assert cost_per_1k(0.10, 500.0, 0.5) == 0.10 / (3600 * 500.0 * 0.5) * 1000
    assert cost_per_1k(2.0, 10.0, 1.0) == 2.0 / 36_000 * 1000
    # twice the throughput or twice the utilization halves the cost
    assert cost_per_1k(1.0, 200.0, 0.5) == pytest.approx(cost_per_1k(1.0, 100.0, 0.5) / 2)
    assert cost_per_1k(1.0, 100.0, 1.0) == pytest.approx(cost_per_1k(1.0, 100.0, 0.5) / 2)


def test_economics_of_the_builtin_plans_follow_the_formulas():
    cost = CostConfig(serve_machine_per_hour=0.25, serve_utilization=0.4, fixed_monthly=100.0)
    e = economics_from(ref="m:1", kind="tabular", throughput=supplied(1.5),
                       training_seconds=5400.0, cost=cost, plans=dict(BUILTIN_PLANS))
    per_1k = 0.25 / (3600 * 1.5 * 0.4) * 1000
    assert e.cost_per_1k == per_1k
    assert e.cost_per_unit == per_1k / 1000
    assert e.cost_per_1m_tokens is None  # predictions, not tokens
    assert e.training is not None
    assert e.training.cost == 5400.0 / 3600 * cost.train_machine_per_hour
    assert e.machine_month == 0.25 * 730
    fixed = 0.25 * 730 + 100.0
    assert e.fixed_monthly_total == fixed
    assert e.capacity_per_month == 1.5 * 0.4 * 3600 * 730
    assert [p.name for p in e.plans] == ["trial", "starter", "pro", "enterprise"]
    for p in e.plans:
        plan = BUILTIN_PLANS[p.name]
        price = plan.price_cents / 100
        serving = plan.included_units / 1000 * per_1k
        assert p.price == price
        assert p.serving_cost == serving
        assert p.margin == price - serving
        assert p.customers_per_machine == e.capacity_per_month / plan.included_units
        assert p.overage_margin_per_1k == plan.overage_cents_per_1k / 100 - per_1k
        if price - serving > 0:
            assert p.margin_pct == (price - serving) / price * 100
            assert p.break_even_customers == math.ceil(fixed / (price - serving))
        else:
            assert p.break_even_customers is None
    by_name = {p.name: p for p in e.plans}
    # 1.5 predictions/s (a heavy model) on a $0.25/h machine: $0.116 per 1k, so 10M
    # predictions cost more than enterprise's $999 and 1M less than pro's $199
    assert by_name["enterprise"].margin < 0 and by_name["enterprise"].break_even_customers is None
    assert "never breaks even" in by_name["enterprise"].note
    assert by_name["pro"].margin > 0 and by_name["pro"].break_even_customers == math.ceil(
        fixed / (199.0 - 1000 * per_1k))
    assert by_name["trial"].margin_pct is None and by_name["trial"].note.startswith("free")


def test_a_plan_priced_below_its_serving_cost_never_breaks_even():
    plan = PlanConfig(price_cents=1_000, included_units=2_000_000, overage_cents_per_1k=1)
    p = plan_economics("cheap", plan, cost_1k=0.01, fixed_monthly_total=73.0,
                       capacity_per_month=1e9)
    assert p.serving_cost == 20.0 and p.margin == -10.0 and p.margin_pct == -100.0
    assert p.break_even_customers is None
    assert p.note == "never breaks even: loses $10.00 per customer a month"
    assert p.overage_margin_per_1k == 0.01 - 0.01
    zero = plan_economics("break-even", PlanConfig(price_cents=2_000, included_units=2_000_000),
                          cost_1k=0.01, fixed_monthly_total=73.0, capacity_per_month=1e9)
    assert zero.margin == 0 and zero.break_even_customers is None  # 0 margin: never either


def test_break_even_rounds_up_to_whole_customers_and_is_zero_without_fixed_costs():
    plan = PlanConfig(price_cents=1_000, included_units=0)
    assert plan_economics("p", plan, cost_1k=1.0, fixed_monthly_total=73.0,
                          capacity_per_month=1.0).break_even_customers == 8  # 73 / 10 = 7.3
    assert plan_economics("p", plan, cost_1k=1.0, fixed_monthly_total=0.0,
                          capacity_per_month=1.0).break_even_customers == 0
    assert plan_economics("p", plan, cost_1k=1.0, fixed_monthly_total=0.0,
                          capacity_per_month=1.0).customers_per_machine is None


def test_three_pricing_methods():
    cost = CostConfig(markup=2.5, value_per_1k=4.0, value_share=0.25,
                      competitor_prices_per_1k={"a": 1.0, "b": 3.0, "c": 2.0},
                      competitive_undercut=0.2)
    plus, value, competitive = price_suggestions(0.5, cost)
    assert (plus.method, plus.price_per_1k) == ("cost_plus", 0.5 * 2.5)
    assert plus.margin_pct == pytest.approx((1.25 - 0.5) / 1.25 * 100)
    assert (value.method, value.price_per_1k) == ("value_based", 4.0 * 0.25)
    assert "below" not in value.note
    median = statistics.median([1.0, 3.0, 2.0])
    assert (competitive.method, competitive.price_per_1k) == ("competitive", median * 0.8)
    assert competitive.margin_pct == pytest.approx((1.6 - 0.5) / 1.6 * 100)
    assert "20% under the median competitor $2.00 of 3" in competitive.note


def test_pricing_below_cost_is_said_and_competitive_never_goes_below_cost():
    cost = CostConfig(value_per_1k=1.0, value_share=0.1,
                      competitor_prices_per_1k={"a": 0.2, "b": 0.3})
    _, value, competitive = price_suggestions(0.5, cost)
    assert value.price_per_1k == pytest.approx(0.1)  # what the value allows, flagged
    assert "below the cost $0.50" in value.note and value.margin_pct < 0
    assert competitive.price_per_1k == 0.5 and competitive.margin_pct == 0
    assert "the median competitor is below our cost $0.50: priced at cost" in competitive.note
    undercut = price_suggestions(0.5, CostConfig(competitor_prices_per_1k={"a": 0.55}))[2]
    assert undercut.price_per_1k == 0.5  # 0.55 × 0.9 = 0.495 < cost
    assert "the undercut would be below our cost" in undercut.note


def test_pricing_methods_without_inputs_say_what_is_missing():
    plus, value, competitive = price_suggestions(0.5, CostConfig())
    assert plus.price_per_1k == 0.5 * 3  # default markup 3
    assert value.price_per_1k is None and "value_per_1k" in value.note
    assert competitive.price_per_1k is None and "competitor_prices_per_1k" in competitive.note


def test_language_models_cost_per_million_tokens():
    e = economics_from(ref="g:1", kind="language", throughput=supplied(40.0, "token"),
                       training_seconds=None, cost=CostConfig(), plans={})
    per_1k = 0.10 / (3600 * 40.0 * 0.5) * 1000
    assert e.unit == "token" and e.cost_per_1k == per_1k
    assert e.cost_per_1m_tokens == per_1k * 1000
    assert e.training is None and e.plans == ()


def test_to_dict_is_plain_json_with_never_as_null():
    e = economics_from(ref="m:1", kind="tabular", throughput=supplied(1.0),
                       training_seconds=1.0, cost=CostConfig(), plans=dict(BUILTIN_PLANS))
    data = json.loads(json.dumps(e.to_dict(), allow_nan=False))
    assert data["format_version"] == 2 and data["ref"] == "m:1"
    assert data["cost_per_1k"] == e.cost_per_1k
    assert data["throughput"]["basis"] == "supplied"
    assert data["settings"]["serve_utilization"] == 0.5
    trial = next(p for p in data["plans"] if p["name"] == "trial")
    assert trial["break_even_customers"] is None
    assert [s["method"] for s in data["pricing"]] == ["cost_plus", "value_based", "competitive"]


def test_money_display_rounding():
    assert format_money(1234.567) == "$1,234.57"
    assert format_money(0.1) == "$0.10"
    assert format_money(0.0159) == "$0.0159"
    assert format_money(0.00001594) == "$0.0000159"
    assert format_money(-0.5) == "-$0.50"
    assert format_money(2.5, "EUR") == "2.50 EUR"


@pytest.mark.parametrize(
    "section",
    [
        {"train_machine_per_hour": -1},
        {"serve_machine_per_hour": -0.01},
        {"serve_utilization": 0},
        {"serve_utilization": 1.5},
        {"fixed_monthly": -5},
        {"markup": 0.5},
        {"value_share": 0},
        {"competitor_prices_per_1k": {"a": -1.0}},
        {"competitive_undercut": 1},
        {"throughput_batch": "huge"},
        {"measure": "http"},
        {"measure_seconds": 0},
        {"serve_utilisation": 0.5},
    ],
)
def test_cost_section_refuses_bad_values(section):
    with pytest.raises(ValidationError):
        CostConfig.model_validate(section)


def test_cost_section_is_optional_in_a_config():
    cfg = FoundryConfig.model_validate({"data": {"path": "x.csv"}, "features": {"target": "y"}})
    assert cfg.cost == CostConfig()
    assert cfg.cost.serve_utilization == 0.5 and cfg.cost.markup == 3.0
    assert cfg.cost.measure == "server"  # through a real `foundry serve` by default
    custom = FoundryConfig.model_validate(
        {"data": {"path": "x.csv"}, "features": {"target": "y"},
         "cost": {"serve_machine_per_hour": 1.2, "competitor_prices_per_1k": {"v": 0.4}}}
    )
    assert custom.cost.serve_machine_per_hour == 1.2
    assert custom.cost.competitor_prices_per_1k == {"v": 0.4}


def test_public_api_is_curated():
    import foundry.economics

    assert sorted(foundry.economics.__all__) == [
        "PlanEconomics", "PriceSuggestion", "ServerCase", "Throughput", "TrainingCost",
        "UnitEconomics",
        "cost_per_1k", "economics_from", "estimate", "format_money", "load_saved", "save",
        "saved_path", "training_cost", "training_cost_line",
    ]
    for name in foundry.economics.__all__:
        assert getattr(foundry.economics, name).__doc__, name


def test_training_cost_line():
    from foundry.economics import training_cost_line

    cost = CostConfig(train_machine_per_hour=1.2)
    assert training_cost_line(43.2, cost) == "training cost: $0.0144 (43.2 s at $1.20/h)"
    assert training_cost_line(43.2, cost, machines=2) == (
        "training cost: $0.0288 (43.2 s x 2 machines at $1.20/h)"
    )


def test_a_multi_machine_run_costs_every_machine():
    cost = CostConfig(train_machine_per_hour=3.0)
    e = economics_from(ref="m:1", kind="tabular", throughput=supplied(1.0),
                       training_seconds=1800.0, cost=cost, plans={}, training_machines=4)
    assert e.training is not None and e.training.machines == 4
    assert e.training.cost == 0.5 * 3.0 * 4
    assert e.to_dict()["training"]["machines"] == 4
