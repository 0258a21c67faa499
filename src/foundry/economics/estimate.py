"""Unit economics of a registered model: what training it cost, what 1,000 predictions
(1M tokens) cost to serve, what each plan earns, and what to charge.

    economics = estimate("adult:3")                  # load-tests a real foundry serve, prices
    economics = estimate("adult:3", measure="model") # in process instead: fast, no HTTP
    economics = estimate("adult:3", throughput=850.0)     # a load test's number instead
    economics.cost_per_1k, economics.plans[0].break_even_customers
    json.dumps(economics.to_dict())                       # what the report / dashboard read

Money is float dollars (or `cost.currency`), kept unrounded in the object and its JSON;
plan prices come from the plans' integer cents (/ 100). Only display rounds
(`format_money`). The formulas (docs/ECONOMICS.md):

    training cost      = training seconds / 3600 × train_machine_per_hour
    cost per 1k units  = serve_machine_per_hour / (3600 × throughput × utilization) × 1000
    plan serving cost  = included_units / 1000 × cost per 1k
    margin             = plan price − plan serving cost          (and / price, in %)
    break-even         = ceil((serve_machine_per_hour × 730 + fixed_monthly) / margin)
                         customers; never when margin ≤ 0
    cost-plus          = cost per 1k × markup
    value-based        = value_per_1k × value_share
    competitive        = max(median competitor price × (1 − competitive_undercut), cost)

A unit is a prediction (one record) for models served on /predict, a recommendation
(one query: a user's top k) on /recommend, and a token for language models (prompt +
completion tokens, as plans meter them).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from foundry.config.schema import CostConfig, PlanConfig, ServeConfig
from foundry.console import Reporter
from foundry.errors import ConfigError

if TYPE_CHECKING:  # the registry imports torch: not needed to import this module
    from foundry.registry import Registry

__all__ = [
    "FORMAT_VERSION",
    "HOURS_PER_MONTH",
    "SECONDS_PER_HOUR",
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
    "plan_economics",
    "price_suggestions",
    "save",
    "saved_path",
    "training_cost",
    "training_cost_line",
]

SECONDS_PER_HOUR = 3600
HOURS_PER_MONTH = 730
"""365 × 24 / 12: the month cloud providers bill a machine for."""
FORMAT_VERSION = 2
"""Of `UnitEconomics.to_dict()` (and the saved cost JSON). 2: `throughput.measure`,
`throughput.server` and `throughput.server_cases` (the served measurement)."""
Basis = Literal["server", "single", "serving", "supplied"]
Measure = Literal["server", "model"]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TrainingCost:
    seconds: float
    """Training time the package's manifest records (`training.seconds`)."""
    machine_per_hour: float
    cost: float
    """seconds / 3600 × machine_per_hour × machines."""
    note: str
    """What the time covers (a compressed variant: its parent's training, or its own
    fine-tune)."""
    machines: int = 1
    """Machines the run occupied (torchrun nodes; `--nproc N` on one machine is one)."""


@dataclass(frozen=True)
class ServerCase:
    """`foundry serve` under `clients` concurrent clients, one record per request."""

    clients: int
    per_second: float
    """Predictions answered per second by the whole server (every worker)."""
    p50_ms: float
    p99_ms: float
    requests: int
    seconds: float
    client_cpu_share: float
    """Share of one core the load clients used (on the same machine): near 1, they may
    have capped the throughput."""


@dataclass(frozen=True)
class Throughput:
    """How fast one serving machine answers, in units per second."""

    unit: Literal["prediction", "token"]
    measure: Literal["server", "model", "supplied"]
    """How it was obtained: `server` (a real `foundry serve` under HTTP load), `model`
    (in process, no HTTP) or `supplied` (`--throughput`)."""
    server: float | None
    """Measured through `foundry serve`: the best of `server_cases`, for the whole
    machine (all workers); None when the server was not measured."""
    server_cases: tuple[ServerCase, ...]
    """The server at each client count (empty when not measured)."""
    single: float | None
    """Measured in process, one record (one prompt, one text) per call, one worker;
    None when not measured in process."""
    serving: float | None
    """Measured in process at `serving_batch` records per forward pass (language models:
    the same as `single`, served one request at a time)."""
    serving_batch: int
    supplied: float | None
    """`--throughput`: measured elsewhere (a load test), for the whole machine."""
    basis: Basis
    """Which of them the cost uses."""
    workers: int
    """Server worker processes per machine (`serve.workers`): the server runs this many;
    an in-process throughput is one worker's and is multiplied by this."""
    threads: int | None
    """PyTorch threads each worker gets (and an in-process measurement used)."""
    per_machine: float
    """The throughput the cost uses: units per second of one machine, fully busy."""
    rows: int
    """Records / prompts timed (0 when supplied)."""
    source: str
    """Where they came from."""
    why: str
    """Why this basis."""


@dataclass(frozen=True)
class PlanEconomics:
    name: str
    price: float
    """Monthly price (the plan's price_cents / 100)."""
    included_units: int
    serving_cost: float
    """Serving the included units: included_units / 1000 × cost per 1k."""
    margin: float
    """price − serving_cost, per customer per month."""
    margin_pct: float | None
    """margin / price × 100; None for a free plan."""
    break_even_customers: int | None
    """Customers on this plan that pay the fixed monthly cost; None: never (margin ≤ 0)."""
    customers_per_machine: float | None
    """Customers using their whole included volume that one machine serves at the
    configured utilization; None when nothing is included."""
    overage_price_per_1k: float
    overage_margin_per_1k: float
    """overage price − cost per 1k (what each 1,000 units beyond the included earn)."""
    note: str


@dataclass(frozen=True)
class PriceSuggestion:
    method: Literal["cost_plus", "value_based", "competitive"]
    price_per_1k: float | None
    """None when the method has no input (no value, no competitor prices configured)."""
    margin_pct: float | None
    """(price − cost) / price × 100."""
    note: str


@dataclass(frozen=True)
class UnitEconomics:
    """Everything `foundry cost` computes for one model version (see the module doc)."""

    ref: str
    kind: str
    """tabular, text (served on /predict), recommend (/recommend), language or embedding
    (OpenAI routes)."""
    unit: Literal["prediction", "token"]
    currency: str
    settings: dict[str, Any]
    """The `cost:` section used."""
    training: TrainingCost | None
    """None when the manifest records no training time."""
    throughput: Throughput
    cost_per_unit: float
    cost_per_1k: float
    """Serving cost of 1,000 units."""
    cost_per_1m_tokens: float | None
    """Language and embedding models: serving cost of 1,000,000 tokens."""
    machine_month: float
    """One serving machine for a month: serve_machine_per_hour × 730."""
    fixed_monthly_total: float
    """machine_month + fixed_monthly: what break-even customers must pay for."""
    capacity_per_month: float
    """Units one machine sells per month: per_machine × utilization × 3600 × 730."""
    plans: tuple[PlanEconomics, ...]
    pricing: tuple[PriceSuggestion, ...]
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (no NaN or infinity: `never` is null)."""
        return {"format_version": FORMAT_VERSION, **asdict(self)}


# ------------------------------------------------------------------------ arithmetic


def training_cost(seconds: float, cost: CostConfig, machines: int = 1) -> float:
    """What `seconds` on `machines` training machines cost."""
    return seconds / SECONDS_PER_HOUR * cost.train_machine_per_hour * machines


def training_cost_line(seconds: float, cost: CostConfig, machines: int = 1) -> str:
    """One line for the end of a training run: `training cost: $0.0012 (43.2 s at
    $0.10/h)`, or `(43.2 s x 2 machines at $0.10/h)`."""
    money = format_money(training_cost(seconds, cost, machines), cost.currency)
    rate = format_money(cost.train_machine_per_hour, cost.currency)
    on = "" if machines == 1 else f" x {machines} machines"
    return f"training cost: {money} ({seconds:.1f} s{on} at {rate}/h)"


def cost_per_1k(price_per_hour: float, units_per_second: float, utilization: float) -> float:
    """Serving cost of 1,000 units on a machine answering `units_per_second` when fully
    busy and sold `utilization` of the time."""
    return price_per_hour / (SECONDS_PER_HOUR * units_per_second * utilization) * 1000


def plan_economics(
    name: str,
    plan: PlanConfig,
    *,
    cost_1k: float,
    fixed_monthly_total: float,
    capacity_per_month: float,
    currency: str = "USD",
) -> PlanEconomics:
    """Margin and break-even of one plan at its included volume."""
    price = plan.price_cents / 100
    serving = plan.included_units / 1000 * cost_1k
    margin = price - serving
    margin_pct = margin / price * 100 if price > 0 else None
    break_even = math.ceil(fixed_monthly_total / margin) if margin > 0 else None
    per_machine = capacity_per_month / plan.included_units if plan.included_units else None
    overage = plan.overage_cents_per_1k / 100
    if margin <= 0:
        loss = format_money(-margin, currency)
        note = (f"never breaks even: loses {loss} per customer a month" if price > 0
                else f"free: costs {loss} per customer a month")
    elif plan.hard_limit:
        note = "hard limit: no overage"
    elif plan.overage_cents_per_1k and overage < cost_1k:
        note = "overage is priced below cost"
    else:
        note = ""
    return PlanEconomics(
        name=name,
        price=price,
        included_units=plan.included_units,
        serving_cost=serving,
        margin=margin,
        margin_pct=margin_pct,
        break_even_customers=break_even,
        customers_per_machine=per_machine,
        overage_price_per_1k=overage,
        overage_margin_per_1k=overage - cost_1k,
        note=note,
    )


def price_suggestions(cost_1k: float, cost: CostConfig) -> tuple[PriceSuggestion, ...]:
    """Cost-plus, value-based and competitive prices per 1,000 units."""
    money = lambda x: format_money(x, cost.currency)  # noqa: E731

    def margin(price: float | None) -> float | None:
        return (price - cost_1k) / price * 100 if price else None

    plus = cost_1k * cost.markup
    out = [PriceSuggestion("cost_plus", plus, margin(plus),
                           f"cost {money(cost_1k)} × markup {cost.markup:g}")]
    if cost.value_per_1k is None:
        out.append(PriceSuggestion("value_based", None, None,
                                   "no cost.value_per_1k configured"))
    else:
        value = cost.value_per_1k * cost.value_share
        note = f"{cost.value_share:.0%} of the value {money(cost.value_per_1k)}"
        if value < cost_1k:
            note += (f"; below the cost {money(cost_1k)}: the value captured does not pay "
                     "for serving")
        out.append(PriceSuggestion("value_based", value, margin(value), note))
    prices = cost.competitor_prices_per_1k
    if not prices:
        out.append(PriceSuggestion("competitive", None, None,
                                   "no cost.competitor_prices_per_1k configured"))
    else:
        median = statistics.median(prices.values())
        target = median * (1 - cost.competitive_undercut)
        note = (f"{cost.competitive_undercut:.0%} under the median competitor "
                f"{money(median)} of {len(prices)}")
        if median < cost_1k:
            note += f"; the median competitor is below our cost {money(cost_1k)}: priced at cost"
        elif target < cost_1k:
            note += f"; the undercut would be below our cost {money(cost_1k)}: priced at cost"
        price = max(target, cost_1k)
        out.append(PriceSuggestion("competitive", price, margin(price), note))
    return tuple(out)


def economics_from(
    *,
    ref: str,
    kind: str,
    throughput: Throughput,
    training_seconds: float | None,
    cost: CostConfig,
    plans: dict[str, PlanConfig],
    training_note: str = "",
    training_machines: int = 1,
) -> UnitEconomics:
    """The arithmetic, from numbers already measured (`estimate` measures them)."""
    units_per_second = throughput.per_machine
    cost_1k = cost_per_1k(cost.serve_machine_per_hour, units_per_second, cost.serve_utilization)
    machine_month = cost.serve_machine_per_hour * HOURS_PER_MONTH
    fixed = machine_month + cost.fixed_monthly
    capacity = units_per_second * cost.serve_utilization * SECONDS_PER_HOUR * HOURS_PER_MONTH
    training = None
    if training_seconds is not None:
        training = TrainingCost(training_seconds, cost.train_machine_per_hour,
                                training_cost(training_seconds, cost, training_machines),
                                training_note, training_machines)
    return UnitEconomics(
        ref=ref,
        kind=kind,
        unit=throughput.unit,
        currency=cost.currency,
        settings=cost.model_dump(mode="json"),
        training=training,
        throughput=throughput,
        cost_per_unit=cost_1k / 1000,
        cost_per_1k=cost_1k,
        cost_per_1m_tokens=cost_1k * 1000 if throughput.unit == "token" else None,
        machine_month=machine_month,
        fixed_monthly_total=fixed,
        capacity_per_month=capacity,
        plans=tuple(
            plan_economics(name, plan, cost_1k=cost_1k, fixed_monthly_total=fixed,
                           capacity_per_month=capacity, currency=cost.currency)
            for name, plan in plans.items()
        ),
        pricing=price_suggestions(cost_1k, cost),
        created_at=datetime.now(timezone.utc).isoformat(),
    )


def format_money(amount: float, currency: str = "USD") -> str:
    """Display rounding: cents from $1 up; below, 3 significant digits and at least 2
    decimals ($0.10, $0.0159, $0.0000159: a prediction costs a small fraction of a cent)."""
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    symbol = "$" if currency == "USD" else ""
    suffix = "" if symbol else f" {currency}"
    if amount >= 1 or amount == 0:
        text = f"{amount:,.2f}"
    elif amount >= 1e-8:
        decimals = max(2, 2 - math.floor(math.log10(amount)))
        text = f"{amount:.{decimals}f}"
        whole, _, fraction = text.partition(".")
        text = f"{whole}.{fraction[:2]}{fraction[2:].rstrip('0')}"
    else:
        text = f"{amount:.2e}"
    return f"{sign}{symbol}{text}{suffix}"


# ------------------------------------------------------------------------- measuring


def estimate(
    ref: str,
    cost: CostConfig | None = None,
    *,
    serve: ServeConfig | None = None,
    data: str | Path | None = None,
    throughput: float | None = None,
    measure: Measure | None = None,
    registry: Registry | None = None,
    quiet: bool = True,
) -> UnitEconomics:
    """Unit economics of model `ref` (`name`, `name:3`, `name:latest`).

    cost / serve: the `cost:` and `serve:` sections (default: those of the model's own
    training config; serve gives the plans, batching and workers). data: rows (prompts)
    to time predictions on (default: the model's validation split). measure: `server`
    (a real `foundry serve` of a temporary copy under HTTP load) or `model` (in process,
    fast); default `cost.measure`. throughput: units per second of one serving machine
    measured elsewhere; skips the measurement. quiet: no progress lines (stderr).
    Raises ModelError (unknown model, a server that fails to start or answers errors),
    DataError (data without the model's inputs), ConfigError (a throughput that is not a
    positive number)."""
    from foundry.economics import throughput as measuring
    from foundry.lm.load import read_manifest
    from foundry.registry import Registry

    registry = registry or Registry()
    say = Reporter(quiet=quiet)
    pinned, manifest = read_manifest(ref, registry=registry)
    own = manifest.get("config") or {}
    cost = cost or CostConfig.model_validate(own.get("cost") or {})
    serve = serve or ServeConfig.model_validate(own.get("serve") or {})
    kind = measuring.serving_kind(manifest)
    predicted = ("tabular", "text", "recommend")  # one unit a record / query, as metered
    unit: Literal["prediction", "token"] = "prediction" if kind in predicted else "token"
    name = pinned.split(":")[0]
    batching = serve.model_batching.get(name, serve.batching)
    serving_batch = batching.max_batch_size if batching.enabled and unit == "prediction" else 1
    if throughput is not None:
        if not (isinstance(throughput, int | float) and math.isfinite(throughput)
                and throughput > 0):
            raise ConfigError(
                f"--throughput must be a positive number of {unit}s per second, got {throughput}"
            )
        measured = Throughput(
            unit=unit, measure="supplied", server=None, server_cases=(), single=None,
            serving=None, serving_batch=serving_batch, supplied=float(throughput),
            basis="supplied", workers=serve.workers, threads=None,
            per_machine=float(throughput), rows=0, source="supplied (--throughput)",
            why="measured elsewhere for the whole machine (e.g. a load test), used as given",
        )
    else:
        measured = _measure(pinned, kind, unit, manifest, registry, cost, serve,
                            serving_batch, None if data is None else Path(data),
                            measure or cost.measure, say)
    seconds = (manifest.get("training") or {}).get("seconds")
    machines = (manifest.get("training") or {}).get("machines")  # absent before 0.x: one
    return economics_from(
        ref=pinned,
        kind=kind,
        throughput=measured,
        training_seconds=float(seconds) if isinstance(seconds, int | float) else None,
        cost=cost,
        plans=serve.all_plans(),
        training_note=_training_note(manifest),
        training_machines=machines if isinstance(machines, int) and machines >= 1 else 1,
    )


def _measure(
    ref: str,
    kind: str,
    unit: Literal["prediction", "token"],
    manifest: dict[str, Any],
    registry: Registry,
    cost: CostConfig,
    serve: ServeConfig,
    serving_batch: int,
    data: Path | None,
    measure: Measure,
    say: Reporter,
) -> Throughput:
    from foundry.economics import throughput as measuring
    from foundry.serve.app import inference_threads

    served = measuring.load_served(ref, kind, registry)
    if kind == "recommend":
        rows, source = measuring.recommend_queries(served)
    elif unit == "prediction":
        rows, source = measuring.prediction_records(served, data=data, manifest=manifest)
    else:
        rows, source = measuring.prompts_for(served, data=data, manifest=manifest)
    threads = inference_threads(serve.workers)
    common = dict(unit=unit, serving_batch=serving_batch, supplied=None,
                  workers=serve.workers, threads=threads, rows=len(rows), source=source)
    if unit == "prediction" and measure == "server":
        del served  # the server loads its own copy; free this one's memory first
        say.info(f"measuring {ref} through foundry serve on {len(rows)} rows of {source} "
                 f"(1 row per request; {', '.join(map(str, measuring.CLIENTS))} clients, "
                 f"{cost.measure_seconds:g} s each)")
        results = measuring.measure_server(
            ref, registry=registry, serve=serve, records=rows, seconds=cost.measure_seconds,
            say=say, route="recommend" if kind == "recommend" else "predict",
        )
        cases = tuple(
            ServerCase(clients=r.clients, per_second=r.per_second, p50_ms=r.p50_ms,
                       p99_ms=r.p99_ms, requests=r.ok, seconds=r.seconds,
                       client_cpu_share=r.client_cpu_share)
            for r in results
        )
        best = max(cases, key=lambda c: c.per_second)
        return Throughput(
            **common, measure="server", server=best.per_second, server_cases=cases,
            single=None, serving=None, basis="server", per_machine=best.per_second,
            why=(f"a real `foundry serve` ({serve.workers} worker(s); HTTP, JSON, keys, "
                 f"metering, batching) at its best of {len(cases)} client counts "
                 f"({best.clients} clients), one record per request; the load clients ran "
                 "on the same machine"),
        )
    say.info(f"timing {ref} in process on {len(rows)} rows of {source} "
             f"({threads} thread(s), {cost.measure_seconds:g} s per batch size)")
    restore = measuring.torch_threads(serve.workers)
    try:
        if unit == "prediction":
            single = measuring.measure_predictions(
                served, rows, batch_size=1, seconds=cost.measure_seconds)
            batched = single if serving_batch == 1 else measuring.measure_predictions(
                served, rows, batch_size=serving_batch, seconds=cost.measure_seconds)
        elif kind == "embedding":
            single = batched = measuring.measure_embedding(
                served, rows, seconds=cost.measure_seconds)
        else:
            single = batched = measuring.measure_generation(
                served, rows, seconds=cost.measure_seconds)
    finally:
        restore()
    if unit == "token":
        basis: Basis = "single"
        why = ("in process (the OpenAI routes are not load-tested): a language model's "
               "serving thread runs one request at a time, so one prompt per call is how "
               "it is served")
    elif cost.throughput_batch == "serving":
        basis = "serving"
        why = (f"in process, no HTTP (measure: model); cost.throughput_batch is serving: "
               f"full batches of {serving_batch}, which the batcher forms only when "
               "requests queue")
    else:
        basis = "single"
        why = ("in process, no HTTP (measure: model): one record per forward pass, as a "
               "lone request runs; it leaves out HTTP, JSON, keys and metering, so it "
               "understates the cost (measure: server includes them)")
    per_worker = batched if basis == "serving" else single
    return Throughput(
        **common, measure="model", server=None, server_cases=(), single=single,
        serving=batched, basis=basis, per_machine=per_worker * serve.workers, why=why,
    )


def _training_note(manifest: dict[str, Any]) -> str:
    compression = manifest.get("compression") or {}
    method = compression.get("method")
    if method is None:
        return "this model's training run"
    if method in ("prune", "distill"):
        return f"the {method} fine-tune of this variant (not its parent's training)"
    return f"its parent {compression.get('parent')}'s training ({method} adds none)"


# --------------------------------------------------------------------------- saving


def saved_path(ref: str, registry: Registry | None = None) -> Path:
    """Where `save` writes the economics of `ref`: `<FOUNDRY_HOME>/economics/<name>/
    <version>.json` (packages are immutable once registered, so not inside them)."""
    from foundry.registry import Registry

    registry = registry or Registry()
    record = registry.resolve(ref)
    return registry.home / "economics" / record.name / f"{record.version}.json"


def save(economics: UnitEconomics, registry: Registry | None = None) -> Path:
    """Write `economics.to_dict()` as JSON at `saved_path` (atomically); returns the path."""
    from foundry.registry.package import write_json

    path = saved_path(economics.ref, registry)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write_json(tmp, economics.to_dict())
    tmp.replace(path)
    return path


def load_saved(ref: str, registry: Registry | None = None) -> dict[str, Any] | None:
    """The last saved economics of `ref` as a dict (None when `foundry cost` never ran)."""
    import json

    path = saved_path(ref, registry)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
