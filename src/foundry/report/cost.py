"""The cost section: the unit economics `foundry cost MODEL` saved, as tables and a chart.

The report measures no costs itself: `foundry.economics` does (`foundry cost MODEL`
times the model as a server runs it and saves `UnitEconomics.to_dict()` under
`<FOUNDRY_HOME>/economics/<name>/<version>.json`, read back by `load_saved`). A model
without a saved estimate gets a one-line pointer to `foundry cost` instead.
"""

from __future__ import annotations

from typing import Any

from foundry.report.sources import Sources


def find_cost(sources: Sources) -> tuple[dict[str, Any], str] | None:
    """(the saved unit economics, where they came from), or None."""
    if sources.registry is None:  # an unregistered package has no saved economics
        return None
    from foundry.economics import load_saved, saved_path

    saved = load_saved(sources.ref, sources.registry)
    if not saved:
        return None
    return saved, str(saved_path(sources.ref, sources.registry))


def cost_blocks(cost: dict[str, Any], source: str = "") -> list[Any]:
    """Tables of `UnitEconomics.to_dict()`: the serving and training costs, each plan's
    margin and break-even, the price suggestions; a chart of plan price against the cost
    of serving what it includes."""
    from foundry.report import figures
    from foundry.report.sections import Chart, Note, Table, fmt

    currency = cost.get("currency", "USD")
    unit = cost.get("unit", "prediction")

    def money(value: Any) -> str:
        if value is None:
            return "n/a"
        from foundry.economics import format_money

        return format_money(float(value), currency)

    throughput = cost.get("throughput") or {}
    training = cost.get("training") or {}
    rows = [
        [f"serving cost per 1,000 {unit}s", money(cost.get("cost_per_1k"))],
        [f"serving cost per {unit}", money(cost.get("cost_per_unit"))],
    ]
    if cost.get("cost_per_1m_tokens") is not None:
        rows.append(["serving cost per 1M tokens", money(cost["cost_per_1m_tokens"])])
    rows += [
        [f"throughput of one machine ({unit}s/s)", fmt(throughput.get("per_machine"))],
        ["one serving machine per month", money(cost.get("machine_month"))],
        ["fixed monthly total", money(cost.get("fixed_monthly_total"))],
        [f"capacity per machine per month ({unit}s)", fmt(cost.get("capacity_per_month"))],
    ]
    if training:
        machines = training.get("machines") or 1
        on = "" if machines == 1 else f" x {machines} machines"
        seconds = fmt(training.get("seconds"))
        rows.append([f"training ({seconds} s{on})", money(training.get("cost"))])
    blocks: list[Any] = [Note(
        f"Estimated {str(cost.get('created_at', ''))[:19]} by `foundry cost {cost.get('ref', '')}`"
        + (f" ({source})" if source else "") + "; throughput basis: "
        + f"{throughput.get('basis', '?')} — {throughput.get('why', '')}"),
        Table(["", "value"], rows)]
    if training.get("note"):
        blocks.append(Note(f"Training: {training['note']}"))
    plans = cost.get("plans") or []
    if plans:
        blocks.append(Chart(figures.plans(plans, currency)))
        blocks.append(Table(
            ["plan", "price / month", f"included {unit}s", "serving cost", "margin",
             "margin %", "break-even customers", "customers per machine",
             f"overage margin per 1k {unit}s"],
            [[p.get("name", ""), money(p.get("price")), fmt(p.get("included_units")),
              money(p.get("serving_cost")), money(p.get("margin")), fmt(p.get("margin_pct")),
              fmt(p.get("break_even_customers")) if p.get("break_even_customers") is not None
              else "never", fmt(p.get("customers_per_machine")),
              money(p.get("overage_margin_per_1k"))] for p in plans],
            caption="per customer using the whole included volume"))
    pricing = [p for p in cost.get("pricing") or [] if p.get("price_per_1k") is not None]
    if pricing:
        blocks.append(Table(
            ["pricing method", f"price per 1k {unit}s", "margin %", "how"],
            [[p.get("method", ""), money(p.get("price_per_1k")), fmt(p.get("margin_pct")),
              p.get("note", "")] for p in pricing]))
    return blocks
