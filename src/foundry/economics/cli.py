"""`foundry cost MODEL`: the command function (cli.py registers it as `app.command("cost")`).

foundry cost adult:3                           # load-test a real `foundry serve`, then price
foundry cost adult:3 --measure model           # time the model in process (fast, no HTTP)
foundry cost adult:3 --config prices.yaml      # `cost:` and `serve:` (plans) from a file
foundry cost adult:3 --throughput 850          # a load test's requests/s instead
foundry cost adult:3 --json                    # the JSON on stdout

The tables go to stdout, progress to stderr; the JSON is saved at
`<FOUNDRY_HOME>/economics/<name>/<version>.json` for reports and dashboards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from foundry.errors import ConfigError


def cost(
    model: str = typer.Argument(..., help="Model reference: name, name:latest or name:VERSION."),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="YAML whose `cost:` (prices) and `serve:` (plans, batching, workers) sections "
        "to use (default: the model's own training config).",
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Rows to time predictions on (prompts: a .txt corpus for language models) "
        "[default: the model's validation split].",
    ),
    throughput: float | None = typer.Option(
        None,
        "--throughput",
        help="Units per second of one serving machine measured elsewhere (a load test: "
        "predictions/s, tokens/s); skips the measurement.",
    ),
    measure: str | None = typer.Option(
        None,
        "--measure",
        help="server: load-test a real `foundry serve` of a temporary copy (HTTP, keys, "
        "metering; 1, 8 and 32 clients); model: time the model in process (fast, no HTTP) "
        "[cost.measure, server].",
    ),
    seconds: float | None = typer.Option(
        None, "--seconds", help="Seconds per measured case: each client count (server), each "
        "batch size (model) [cost.measure_seconds, 2]."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Also write the JSON here."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON instead of tables."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
) -> None:
    """Unit economics of MODEL: training cost, serving cost per 1,000 predictions (per 1M
    tokens), plan margins and break-even customers, price suggestions."""
    from foundry.economics.estimate import estimate, save
    from foundry.progress import silenced
    from foundry.registry import Registry

    if measure not in (None, "server", "model"):
        raise ConfigError(f"--measure must be server or model, got {measure!r}")
    cost_section, serve_section = _sections(config, seconds)
    registry = Registry()
    with silenced(quiet or json_out):
        economics = estimate(
            model,
            cost_section,
            serve=serve_section,
            data=data,
            throughput=throughput,
            measure=measure,  # type: ignore[arg-type]  # checked above
            registry=registry,
            quiet=quiet or json_out,
        )
    payload = economics.to_dict()
    path = save(economics, registry)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(payload, indent=2) + "\n")
    if json_out:
        typer.echo(json.dumps(payload))
        return
    from rich.console import Console

    console = Console(highlight=False)
    console.width = max(console.width, 150)  # a pipe reports 80 columns: tables fold less
    for table in tables(economics):
        console.print(table)
    typer.echo(f"saved: {path}")


def _sections(config: Path | None, seconds: float | None) -> tuple[Any, Any]:
    """(CostConfig | None, ServeConfig | None) from `config`'s sections (None: the model's
    own), with `--seconds` applied; errors name the key."""
    from pydantic import ValidationError

    from foundry.config.load import format_error, read_yaml
    from foundry.config.schema import CostConfig, ServeConfig

    raw = read_yaml(config) if config is not None else None
    out: list[Any] = []
    for key, schema in (("cost", CostConfig), ("serve", ServeConfig)):
        section = None if raw is None else raw.get(key) or {}
        if key == "cost" and seconds is not None:
            section = {**(section or {}), "measure_seconds": seconds}
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"{config}: {key} must be a mapping of settings")
        if section is None:
            out.append(None)
            continue
        try:
            out.append(schema.model_validate(section))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = config or "--seconds"
            raise ConfigError(f"{where}: {format_error({**err, 'loc': (key, *err['loc'])})}"
                              ) from None
    return out[0], out[1]


def tables(economics: Any) -> list[Any]:
    """Rich tables of a `UnitEconomics`: summary, plans, price suggestions."""
    from rich.table import Table

    from foundry.economics.estimate import format_money

    e = economics
    unit, units = e.unit, f"{e.unit}s"
    money = lambda x: format_money(x, e.currency)  # noqa: E731
    t = e.throughput
    settings = e.settings

    summary = Table(title=f"{e.ref} — unit economics ({e.kind} model, {e.currency})",
                    show_header=False, title_justify="left")
    summary.add_column("what", style="bold")
    summary.add_column("value")
    if e.training is None:
        summary.add_row("training run", "no training time recorded")
    else:
        on = "" if e.training.machines == 1 else f" x {e.training.machines} machines"
        summary.add_row("training run", f"{money(e.training.cost)}  ({e.training.seconds:.1f} s"
                        f"{on} at {money(e.training.machine_per_hour)}/h; {e.training.note})")
    for case in t.server_cases:  # through foundry serve, per client count
        used = " ← used" if t.basis == "server" and case.per_second == t.server else ""
        summary.add_row(f"server, {case.clients} client(s)",
                        f"{_rate(case.per_second, units)}  (p50 {case.p50_ms:.2f} ms, p99 "
                        f"{case.p99_ms:.2f} ms){used}")
    if t.single is not None:
        summary.add_row(f"in process, 1 {unit}" if unit == "prediction" else "in process",
                        _rate(t.single, units) + (" ← used" if t.basis == "single" else ""))
    if t.serving is not None and t.serving_batch > 1:
        summary.add_row(f"in process, batch {t.serving_batch}",
                        _rate(t.serving, units) + (" ← used" if t.basis == "serving" else ""))
    if t.supplied is not None:
        summary.add_row("throughput, supplied", _rate(t.supplied, units) + " ← used")
    if t.measure == "server":
        summary.add_row("measured", f"through foundry serve ({t.workers} worker(s)), one of "
                        f"{t.rows} rows of {t.source} per request")
    elif t.measure == "model":
        summary.add_row("measured", f"in process on {t.rows} rows of {t.source}, {t.threads} "
                        f"thread(s) per worker × {t.workers} worker(s)")
    summary.add_row("why this throughput", t.why)
    how = {"supplied": "as supplied", "server": "the server's best, all workers"}.get(
        t.measure, f"{t.workers} worker(s) × the one used")
    summary.add_row("one machine, busy", f"{_rate(t.per_machine, units)}  ({how})")
    summary.add_row("utilization", f"{settings['serve_utilization']:.0%} of capacity sold; "
                    f"{e.capacity_per_month:,.0f} {units} a month per machine")
    summary.add_row(f"cost per 1k {units}", f"[bold]{money(e.cost_per_1k)}[/bold]  "
                    f"({money(settings['serve_machine_per_hour'])}/h machine)")
    if e.cost_per_1m_tokens is not None:
        summary.add_row("cost per 1M tokens", f"[bold]{money(e.cost_per_1m_tokens)}[/bold]")
    summary.add_row("fixed per month", f"{money(e.fixed_monthly_total)}  (one machine "
                    f"{money(e.machine_month)} + other {money(settings['fixed_monthly'])})")

    plans = Table(title=f"plans at their included volume of {units} (per customer per month)",
                  title_justify="left")
    for column in ("plan", "price", "included", "serving cost", "margin", "margin %",
                   "break-even customers", "customers per machine", "overage margin / 1k",
                   "note"):
        plans.add_column(column, justify="left" if column in ("plan", "note") else "right")
    for p in e.plans:
        plans.add_row(
            p.name,
            money(p.price),
            f"{p.included_units:,}",
            money(p.serving_cost),
            money(p.margin),
            "—" if p.margin_pct is None else f"{p.margin_pct:.1f}%",
            "never" if p.break_even_customers is None else f"{p.break_even_customers:,}",
            "—" if p.customers_per_machine is None else f"{p.customers_per_machine:,.1f}",
            "—" if p.note.startswith("hard limit") else money(p.overage_margin_per_1k),
            p.note,
        )

    pricing = Table(title=f"suggested price per 1k {units}", title_justify="left")
    for column in ("method", "price / 1k", *(["price / 1M tokens"] if unit == "token" else []),
                   "margin %", "how"):
        pricing.add_column(column, justify="left" if column in ("method", "how") else "right")
    for s in e.pricing:
        price = "—" if s.price_per_1k is None else money(s.price_per_1k)
        cells = [s.method.replace("_", "-"), price]
        if unit == "token":
            cells.append("—" if s.price_per_1k is None else money(s.price_per_1k * 1000))
        cells += ["—" if s.margin_pct is None else f"{s.margin_pct:.1f}%", s.note]
        pricing.add_row(*cells)
    return [summary, plans, pricing]


def _rate(value: float, units: str) -> str:
    return f"{value:,.1f} {units}/s"
