"""The admin dashboard of `foundry serve`: open `/dashboard` in a browser.

    GET /dashboard                        the page: static HTML + script, no data, no secrets
    GET /dashboard/static/{file}          its script and style sheet
    GET /admin/dashboard/models           every model: versions, lineage, tags, training
                                          (epochs, seconds, curves), metrics, fairness,
                                          compression, unit economics
    GET /admin/dashboard/keys             keys: id, name, prefix, plan, status, dates
    GET /admin/dashboard/usage?days=30    billable requests and units per UTC day, per key,
                                          model and plan
    GET /admin/dashboard/revenue?period=  billing's report for a period (default: this month)
    GET /admin/dashboard/view             all of it as an HTML fragment (what the page shows)
    GET /admin/dashboard/report/{name}/{version}   `foundry report` of a version (download)

**Auth.** A browser cannot type a Bearer header, so the page itself is public and holds
nothing: it asks for the admin token (FOUNDRY_ADMIN_TOKEN), keeps it in the tab's
`sessionStorage` (gone when the tab closes; never in a cookie, a URL or the server's
logs) and sends it as `Authorization: Bearer` on every call to `/admin/dashboard/...`,
which check it like every admin route (constant time; 401 in the one error shape; 403
`admin_disabled` when the server has no token). The page is locked down by its
Content-Security-Policy: scripts and styles only from this server, no inline script, no
framing, no form submission; everything shown is escaped (Jinja2 autoescape).

Everything is read-only. Database reads (keys, usage, billing) run on the thread pool
with their own pooled connections, so a dashboard refresh never holds up admissions on
the gate's thread; the registry and packages are read as JSON (never the weights).
A version's summary is `foundry.serve.dashboard_models`; charts are inline SVG from
`foundry.serve.dashboard_charts`. Revenue is `foundry.serve.billing.usage_report`, the
numbers `foundry usage report` prints; unit economics are what `foundry cost MODEL`
saved (`foundry.economics`).
"""

from __future__ import annotations

import logging
import tempfile
from datetime import datetime, timedelta, timezone
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import Integer, and_, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from starlette.concurrency import run_in_threadpool

import foundry.crypto as crypto
from foundry.errors import FoundryError
from foundry.serve import billing
from foundry.serve.dashboard_charts import bar_chart, line_chart, number, sparkline
from foundry.serve.dashboard_models import bare_summary, economics_summary, version_summary
from foundry.serve.errors import ApiError
from foundry.serve.routes_admin import check_admin_token
from foundry.serve.store import ServeStore, api_keys, usage_events

if TYPE_CHECKING:
    from foundry.registry import ModelRecord, Registry
    from foundry.serve.app import Service

log = logging.getLogger("foundry.serve")
ASSETS = "dashboard_static"
"""Package data folder (next to this module) with the page, script, style and template."""
_STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
DAY_S = 86_400
MAX_DAYS = 366
_NOT_CURVES = {"epoch", "seconds", "lr", "epsilon", "step"}
"""History columns that are not quality curves (lr and ε get no chart of their own)."""
_CURVE_PREFERENCE = ("accuracy", "f1_macro", "roc_auc", "r2", "rmse", "mae", "perplexity")
"""Per-epoch metrics charted first (at most four per chart)."""
PAGE_HEADERS = {
    # The page loads its script and style from here only and runs no inline script, so
    # even a value that slipped past escaping could not run; it may not be framed
    # (clickjacking) and its form never submits (the script reads the token instead).
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


# --------------------------------------------------------------------------- routes


def dashboard_routers(service: Service) -> list[APIRouter]:
    """The public page (`/dashboard`) and its admin-token data routes."""
    board = Dashboard(service)

    def require_admin(request: Request) -> None:
        check_admin_token(request.headers.get("authorization"), service.admin_token)

    page = APIRouter(include_in_schema=False)

    @page.get("/dashboard")
    async def dashboard_page() -> Response:
        if not service.admin_token:  # same answer as every admin route without a token
            check_admin_token(None, None)
        return HTMLResponse(_asset("index.html"), headers=PAGE_HEADERS)

    @page.get("/favicon.ico")
    async def favicon() -> Response:  # browsers ask for it; an empty answer, not a 404
        return Response(status_code=204)

    @page.get("/dashboard/static/{file}")
    async def dashboard_static(file: str) -> Response:
        if file not in _STATIC:
            raise ApiError(404, "not_found", f"no dashboard file {file!r}")
        return Response(_asset(file), media_type=_STATIC[file],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    data = APIRouter(prefix="/admin/dashboard", tags=["dashboard"],
                     dependencies=[Depends(require_admin)])
    security = {"security": [{"bearerAuth": []}]}
    days_query = Query(30, ge=1, le=MAX_DAYS, description="Days of usage, today included.")
    period_query = Query(None, description="Billing period YYYY-MM (default: this month).")

    @data.get("/models", openapi_extra=security)
    async def models() -> Response:
        """Every registered model and version: lineage, tags, metrics, training, fairness,
        compression and the saved unit economics."""
        return JSONResponse({"models": await run_in_threadpool(board.models)},
                            headers=_NO_STORE)

    @data.get("/keys", openapi_extra=security)
    async def keys() -> Response:
        """Every key (id, name, prefix, plan, status, dates); never the secret or its hash."""
        return JSONResponse({"keys": await run_in_threadpool(board.keys)}, headers=_NO_STORE)

    @data.get("/usage", openapi_extra=security)
    async def usage(days: int = days_query) -> Response:
        """Billable requests and units per UTC day over the last `days`, in total and per
        key, model and plan."""
        return JSONResponse(await run_in_threadpool(board.usage, days), headers=_NO_STORE)

    @data.get("/revenue", openapi_extra=security)
    async def revenue(period: str | None = period_query) -> Response:
        """What each account owes for `period`, exactly as `foundry usage report`."""
        return JSONResponse(await run_in_threadpool(board.revenue, period), headers=_NO_STORE)

    @data.get("/view", include_in_schema=False)
    async def view(days: int = days_query, period: str | None = period_query) -> Response:
        return HTMLResponse(await run_in_threadpool(board.render, days, period),
                            headers=_NO_STORE)

    @data.get("/report/{name}/{version}", include_in_schema=False)
    async def report(name: str, version: int) -> Response:
        html, filename = await run_in_threadpool(board.report, name, version)
        return HTMLResponse(html, headers={
            **_NO_STORE, "Content-Disposition": f'attachment; filename="{filename}"'})

    return [page, data]


@cache
def _asset(name: str) -> str:
    return (resources.files("foundry.serve") / ASSETS / name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- data


class Dashboard:
    """What the dashboard shows, read from the registry and the serving tables. One per
    app; every method is synchronous (the routes call them on the thread pool)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._registry: Registry | None = None
        self._versions: dict[tuple[str, str], dict[str, Any]] = {}
        """Version summaries by (package path, registration time): packages never change."""

    # -- sources

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            from foundry.registry import Registry

            home = self.service.home
            self._registry = Registry(home) if home is not None else Registry()
        return self._registry

    @property
    def store(self) -> ServeStore:
        gate = self.service.gate
        if gate is None:
            raise ApiError(404, "not_found", "this server runs without a gate: no dashboard")
        return gate.store

    def now(self) -> float:
        assert self.service.gate is not None
        return self.service.gate.clock()

    # -- sections

    def models(self) -> list[dict[str, Any]]:
        """Per model name: its versions oldest first, each with `version_summary`."""
        served = {m.ref for m in self.service.models.values()}
        served |= {m.ref for m in self.service.language_models.values()}
        out = []
        for latest in self.registry.list_models():
            records = self.registry.versions(latest.name)
            by_ref = {r.ref: r for r in records}
            versions = [self._version(r, by_ref) for r in records]
            for v in versions:
                v["served"] = v["ref"] in served
                v["economics"] = self._economics(v["ref"])
            out.append({"name": latest.name, "task": latest.task, "latest": latest.version,
                        "versions": versions})
        return out

    def keys(self) -> list[dict[str, Any]]:
        assert self.service.gate is not None
        return [record.to_dict() for record in self.service.gate.list_keys()]

    def usage(self, days: int = 30, keys: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Billable (status < 500) requests and units per UTC day for the last `days`;
        `keys`: `self.keys()` when the caller has read them already."""
        days = max(1, min(MAX_DAYS, int(days)))
        today = int(self.now() // DAY_S)
        first = today - days + 1
        since, until = first * DAY_S, (today + 1) * DAY_S
        # this process's answers settled first (they are buffered up to ~0.2 s), as
        # /v1/usage and the usage report do, so a request just answered is on the page
        self.service.gate.flush()
        rows = usage_by_day(self.store, since, until)
        labels = [_day_label(d) for d in range(first, today + 1)]
        names = {r["id"]: r for r in (self.keys() if keys is None else keys)}
        totals = [{"day": label, "requests": 0, "units": 0} for label in labels]
        groups: dict[str, dict[Any, dict[str, Any]]] = {"key": {}, "model": {}, "plan": {}}
        for row in rows:
            i = row["day"] - first
            if not 0 <= i < days:
                continue
            totals[i]["requests"] += row["requests"]
            totals[i]["units"] += row["units"]
            key = names.get(row["key_id"], {})
            for group, ident, extra in (
                ("key", row["key_id"], {"key_id": row["key_id"], "name": key.get("name"),
                                        "prefix": key.get("prefix"), "plan": row["plan"]}),
                ("model", row["model"], {"model": row["model"]}),
                ("plan", row["plan"], {"plan": row["plan"]}),
            ):
                entry = groups[group].setdefault(
                    ident, {**extra, "requests": 0, "units": 0, "daily_units": [0] * days})
                entry["requests"] += row["requests"]
                entry["units"] += row["units"]
                entry["daily_units"][i] += row["units"]

        def ordered(group: str) -> list[dict[str, Any]]:
            return sorted(groups[group].values(), key=lambda e: (-e["units"], str(e)))

        return {
            "days": labels,
            "since": _day_label(first),
            "until": _day_label(today),
            "daily": totals,
            "requests": sum(t["requests"] for t in totals),
            "units": sum(t["units"] for t in totals),
            "by_key": ordered("key"),
            "by_model": ordered("model"),
            "by_plan": ordered("plan"),
        }

    def revenue(self, period: str | None = None) -> dict[str, Any]:
        """`billing.usage_report` for `period` (default this month), amounts in cents."""
        assert self.service.gate is not None
        report = self.service.gate.usage_report(period or None)
        return {**report.to_dict(),
                "amount_due": billing.format_cents(report.totals["amount_due_cents"])}

    def render(self, days: int = 30, period: str | None = None) -> str:
        """The HTML fragment the page shows (every section; errors of one section are
        shown in it, not raised)."""
        keys = self.keys()
        usage = self.usage(days, keys)
        try:
            revenue: dict[str, Any] = self.revenue(period)
        except ApiError as exc:
            if exc.status < 500:
                raise
            revenue = {"error": exc.message}
        models = self.models()
        for model in models:
            for v in model["versions"]:
                v["charts"] = _curves(v)
        context = {
            "generated": datetime.fromtimestamp(self.now(), timezone.utc)
            .strftime("%Y-%m-%d %H:%M UTC"),
            "models": models,
            "served": sorted({m.ref for m in self.service.models.values()}
                             | {m.ref for m in self.service.language_models.values()}),
            "keys": keys,
            "active_keys": sum(1 for k in keys if k["status"] in ("active", "grace")),
            "usage": usage,
            "usage_chart": bar_chart(
                usage["days"], [d["units"] for d in usage["daily"]],
                title=f"billable units per day (UTC), {usage['since']} to {usage['until']}",
                notes=[f"{d['requests']:,} requests" for d in usage["daily"]]),
            "revenue": revenue,
        }
        return _template().render(**context)

    def report(self, name: str, version: int) -> tuple[str, str]:
        """`foundry report name:version` as HTML, and a file name for it."""
        from foundry.report import write_report

        ref = f"{name}:{version}"
        with tempfile.TemporaryDirectory(prefix="foundry-report-") as tmp:
            path = Path(tmp) / "report.html"
            try:
                write_report(ref, path, registry=self.registry)
            except FoundryError as exc:
                raise ApiError(404, "model_not_found", f"no report for {ref}: {exc}",
                               param="model") from None
            html = crypto.read_text(path)  # written encrypted when a key is set
        return html, f"{name}-{version}-report.html"

    # -- one version

    def _version(self, record: ModelRecord, by_ref: dict[str, ModelRecord]) -> dict[str, Any]:
        try:  # a foundry.json changed since it was summarised is read (and refused) again
            changed = (record.path / "foundry.json").stat().st_mtime_ns
        except OSError:
            changed = None
        cache_key = (str(record.path), record.created_at.isoformat(), changed)
        if cache_key not in self._versions:
            if len(self._versions) > 1024:
                self._versions.clear()
            try:
                self._versions[cache_key] = version_summary(record, self.registry, by_ref)
            except Exception as exc:  # one odd package must not take the dashboard down
                log.exception("dashboard: cannot summarise %s", record.ref)
                return {**bare_summary(record), "problem": f"cannot summarise it: {exc}"}
        return dict(self._versions[cache_key])

    def _economics(self, ref: str) -> dict[str, Any] | None:
        """What `foundry cost REF` saved, summarised; None when it never ran."""
        from foundry.economics import load_saved

        try:
            saved = load_saved(ref, self.registry)
        except (FoundryError, OSError, ValueError):
            return None
        return economics_summary(saved) if saved else None


# --------------------------------------------------------------------------- usage SQL


class utc_day(FunctionElement):  # noqa: N801 - an SQL function, named like one
    """The UTC day number of an epoch-seconds column: floor(ts / 86400). PostgreSQL has
    FLOOR; SQLite builds may lack its math functions, and there CAST to INTEGER
    truncates, which is the floor for times after 1970."""

    type = Integer()
    inherit_cache = True
    name = "utc_day"


@compiles(utc_day)
def _utc_day(element: utc_day, compiler: Any, **kw: Any) -> str:
    return f"FLOOR({compiler.process(element.clauses, **kw)} / 86400.0)"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} / 86400.0 AS INTEGER)"


def usage_by_day(store: ServeStore, since: float, until: float) -> list[dict[str, Any]]:
    """Billable usage in [since, until) grouped by UTC day, key, model and the key's plan:
    [{day, key_id, model, plan, requests, units}]. One portable GROUP BY (SQLite and
    PostgreSQL); the `period` condition lets the (period, key_id) index narrow the scan."""
    day = utc_day(usage_events.c.created_at)
    periods = sorted({billing.period_of(t) for t in range(int(since), int(until), DAY_S)}
                     | {billing.period_of(until - 1)})
    query = (
        select(
            day.label("day"),
            usage_events.c.key_id,
            usage_events.c.model,
            api_keys.c.plan,
            func.count(usage_events.c.id).label("requests"),
            func.coalesce(func.sum(usage_events.c.units), 0).label("units"),
        )
        .select_from(usage_events.join(api_keys, api_keys.c.id == usage_events.c.key_id))
        .where(and_(usage_events.c.period.in_(periods),
                    usage_events.c.created_at >= since,
                    usage_events.c.created_at < until,
                    usage_events.c.status < 500))
        .group_by(day, usage_events.c.key_id, usage_events.c.model, api_keys.c.plan)
    )
    with store.read() as conn:
        return [{"day": int(r.day), "key_id": int(r.key_id), "model": r.model, "plan": r.plan,
                 "requests": int(r.requests), "units": int(r.units)}
                for r in conn.execute(query)]


# --------------------------------------------------------------------------- helpers


def _day_label(day: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(days=day)).strftime("%Y-%m-%d")


def _curves(version: dict[str, Any]) -> list[Any]:
    """Training charts of a version: the losses, then the other per-epoch metrics."""
    history = version.get("history") or []
    if not history:
        return []
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(history)]
    columns = list(dict.fromkeys(k for r in history for k in r if k not in _NOT_CURVES))
    losses = _pick([c for c in columns if c.endswith("loss")], ("train_loss", "val_loss"))
    others = _pick([c for c in columns if not c.endswith("loss")], _CURVE_PREFERENCE)
    best = (version.get("training") or {}).get("best_epoch")
    charts = []
    for title, keys in (("loss", losses), ("metrics", others)):
        if keys:
            charts.append(line_chart(epochs, {k: [r.get(k) for r in history] for k in keys},
                                     title=f"{version['ref']} {title} per epoch",
                                     marker_x=best))
    return charts


def _pick(columns: list[str], preferred: tuple[str, ...], most: int = 4) -> list[str]:
    """At most `most` columns, the preferred (by name or `val_` + name) first, so a chart
    keeps a readable legend when a classifier logs a dozen metrics per epoch."""
    ranked = [c for p in preferred for c in columns if c in (p, f"val_{p}")]
    return list(dict.fromkeys([*ranked, *columns]))[:most]


@lru_cache(maxsize=1)
def _template() -> Any:
    from jinja2 import Environment, select_autoescape

    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = number
    env.filters["cents"] = billing.format_cents
    env.filters["size"] = _size
    env.filters["pct"] = lambda v: "n/a" if v is None else f"{v:.1f}%"
    env.filters["signed"] = lambda v: "n/a" if v is None else f"{v:+.4g}"
    env.filters["spark"] = sparkline
    env.filters["when"] = _when
    return env.from_string(_asset("view.html.j2"))


def _when(iso: str | None) -> str:
    """`2026-11-03T12:00:00.123+00:00` → `2026-11-03 12:00 UTC`."""
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError):
        return str(iso)


def _size(n: int | None) -> str:
    if n is None:
        return "n/a"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GB"
