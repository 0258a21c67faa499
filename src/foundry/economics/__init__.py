"""Unit economics: the cost of a training run, of 1,000 predictions (1M tokens), plan
margins, break-even customers and price suggestions (docs/ECONOMICS.md).

    from foundry.economics import estimate
    economics = estimate("adult:3")            # measured through a real `foundry serve`
    economics = estimate("adult:3", measure="model")   # in process: fast, leaves out HTTP
    economics.to_dict()                        # JSON for reports and dashboards

`foundry cost MODEL` prints it and saves the JSON (`saved_path`); `load_saved` reads it.
"""

from foundry.economics.estimate import (
    PlanEconomics,
    PriceSuggestion,
    ServerCase,
    Throughput,
    TrainingCost,
    UnitEconomics,
    cost_per_1k,
    economics_from,
    estimate,
    format_money,
    load_saved,
    save,
    saved_path,
    training_cost,
    training_cost_line,
)

__all__ = [
    "PlanEconomics",
    "PriceSuggestion",
    "ServerCase",
    "Throughput",
    "TrainingCost",
    "UnitEconomics",
    "cost_per_1k",
    "economics_from",
    "estimate",
    "format_money",
    "load_saved",
    "save",
    "saved_path",
    "training_cost",
    "training_cost_line",
]
