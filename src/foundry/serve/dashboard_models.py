"""What the dashboard shows of one model version, read from the registry's index row and
the package's JSON (foundry.json, metrics.json; never the weights), plus what other stages
left on disk: the training run's `metrics.jsonl` and the compress run's `compress.json`
(found as `foundry report` finds them, `foundry.report.sources`) and the unit economics
`foundry cost` saved (`foundry.economics.load_saved`).

One hostile or damaged package never fails the page: a foundry.json changed after
registration is shown as that version's `problem`, and a folder its manifest names outside
the registry and recorded run folders is not read, with a warning (`Registry.confinement`).

    version_summary(record, registry, by_ref)   # → a JSON-able dict (see its keys)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import foundry.crypto as crypto
from foundry.errors import FoundryError

if TYPE_CHECKING:
    from foundry.registry import ModelRecord, Registry

KEY_METRICS = ("accuracy", "r2", "perplexity", "f1", "roc_auc", "rmse", "mae", "loss")
"""The metric a version is summarised by: the first of these its metrics.json has (a
recommender: its ndcg@k, with the popularity baseline's beside it)."""


def version_summary(
    record: ModelRecord, registry: Registry, by_ref: dict[str, ModelRecord]
) -> dict[str, Any]:
    """One version as the dashboard shows it, from its index row and its package's JSON
    (foundry.json, metrics.json; the weights are never read)."""
    from foundry.evaluation.card import build_card

    summary = bare_summary(record)
    try:
        manifest = registry.read_manifest(record)  # checked against the index
        metrics = read_json(registry.package_dir(record) / "metrics.json")
    except (OSError, ValueError, FoundryError) as exc:
        summary["problem"] = f"cannot read the package: {exc}"
        return summary
    summary["lineage"] = [r.ref for r in registry.lineage(record.ref)]
    confinement = registry.confinement(summary["lineage"])
    training = manifest.get("training") or None
    if training:
        summary["training"] = {k: training.get(k) for k in
                               ("epochs_run", "best_epoch", "seconds", "stopped_early")}
        summary["training"]["best_metrics"] = scalars(training.get("best_metrics") or {})
    summary["run_dir"], summary["history"] = history_of(
        manifest, summary["lineage"], registry, confinement
    )
    card = build_card(manifest, metrics)
    summary["fairness"] = fairness_summary(card.get("fairness"))
    summary["fairness_missing"] = (card.get("missing") or {}).get("fairness")
    summary["compression"] = compression_summary(record, manifest, by_ref, registry)
    summary["leaderboard"] = leaderboard_summary(manifest.get("leaderboard"))
    summary["warnings"] = [str(w) for w in card.get("warnings") or []] + confinement.refused
    return summary


def bare_summary(record: ModelRecord) -> dict[str, Any]:
    """What the index row alone says about a version (the package not read yet)."""
    return {
        "ref": record.ref,
        "version": record.version,
        "created_at": record.created_at.isoformat(timespec="seconds"),
        "parent": record.parent,
        "tags": list(record.tags),
        "task": record.task,
        "size_bytes": record.size_bytes,
        "description": record.description,
        "metrics": scalars(record.metrics),
        # with fairness mitigation, `metrics` score the decisions returned; these the
        # most probable class (shown beside them)
        "unmitigated": scalars((record.metrics or {}).get("unmitigated") or {}),
        # a recommender's popularity baseline on the same split (shown beside)
        "baseline": scalars((record.metrics or {}).get("popularity") or {}),
        "key_metric": key_metric(record.metrics),
        "lineage": [record.ref],
        "training": None,
        "run_dir": None,
        "history": [],
        "fairness": None,
        "fairness_missing": None,
        "compression": None,
        "leaderboard": None,
        "warnings": [],
        "problem": None,
    }


def key_metric(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """{name, value} of the first of KEY_METRICS present, else of the first number; with
    fairness mitigation also "unmitigated": its value for the most probable class."""
    values = scalars(metrics)
    without = scalars((metrics or {}).get("unmitigated") or {})
    baseline = scalars((metrics or {}).get("popularity") or {})
    ranking = [name for name in values if name.startswith("ndcg@")]  # recommenders
    for name in (*KEY_METRICS, *ranking, *values):
        value = values.get(name)
        if value is not None and not isinstance(value, str):
            found = {"name": name, "value": value}
            if without.get(name) is not None:
                found["unmitigated"] = without[name]
            if baseline.get(name) is not None:
                found["baseline"] = baseline[name]
            return found
    return None


def fairness_summary(card_fairness: dict[str, Any] | None) -> dict[str, Any] | None:
    """The model card's fairness section, flattened for a table: gaps before / after
    mitigation and the per-group rates."""
    if not card_fairness:
        return None
    before, after = card_fairness.get("before") or {}, card_fairness.get("after")
    gaps = [{"name": k.replace("_", " "), "before": before.get(k),
             "after": after.get(k) if after else None}
            for k in ("demographic_parity_difference", "demographic_parity_ratio",
                      "equalized_odds_difference", "largest_accuracy_gap")]
    groups = [{"group": ", ".join(f"{k}={v}" for k, v in (g.get("group") or {}).items()),
               **{k: g.get(k) for k in ("count", "accuracy", "selection_rate", "tpr", "fpr")},
               "small": bool(g.get("small"))}
              for g in before.get("by_group") or []]
    return {
        "sensitive_features": card_fairness.get("sensitive_features") or [],
        "positive_class": card_fairness.get("positive_class"),
        "gaps": gaps,
        "groups": groups,
        "mitigation": card_fairness.get("mitigation"),
        "notes": before.get("notes") or [],
    }


def compression_summary(
    record: ModelRecord, manifest: dict[str, Any], by_ref: dict[str, ModelRecord],
    registry: Registry,
) -> dict[str, Any] | None:
    """A compressed variant against its parent: method, size ratio, metric changes, and
    the timings of the compress run (`compress.json`) when it is found."""
    section = manifest.get("compression")
    if not section:
        return None
    parent_ref = section.get("parent") or record.parent
    parent = by_ref.get(parent_ref) if parent_ref else None
    if parent is None and parent_ref:
        try:
            parent = registry.resolve(parent_ref)
        except FoundryError:
            parent = None
    mine, theirs = scalars(record.metrics), scalars(parent.metrics) if parent else {}
    out: dict[str, Any] = {
        "method": section.get("method"),
        "parent": parent_ref,
        "details": {k: v for k, v in scalars(section).items() if k not in ("method", "parent")},
        "size_bytes": record.size_bytes,
        "parent_size_bytes": parent.size_bytes if parent else None,
        "size_ratio": (record.size_bytes / parent.size_bytes
                       if parent and parent.size_bytes else None),
        "deltas": {k: mine[k] - theirs[k] for k in mine
                   if mine[k] is not None and theirs.get(k) is not None},
        "latency_ms": None,
        "parent_latency_ms": None,
        "end_to_end_ms": None,
        "parent_end_to_end_ms": None,
    }
    from foundry.report.sources import find_compression

    try:
        lineage = [record.ref, *([parent_ref] if parent_ref else [])]
        payload, _ = find_compression(record.ref, lineage, registry)
    except (OSError, ValueError):
        payload = None
    for variant in (payload or {}).get("variants") or []:
        if variant.get("ref") == record.ref:
            out["latency_ms"] = variant.get("latency_ms")
            out["end_to_end_ms"] = variant.get("end_to_end_ms") or None
        if variant.get("ref") == parent_ref:
            out["parent_latency_ms"] = variant.get("latency_ms")
            out["parent_end_to_end_ms"] = variant.get("end_to_end_ms") or None
    return out


def economics_summary(saved: dict[str, Any]) -> dict[str, Any]:
    """What the dashboard shows of a saved `UnitEconomics.to_dict()`: money formatted
    with `foundry.economics.format_money`."""
    from foundry.economics import format_money

    currency = saved.get("currency") or "USD"

    def money(value: Any) -> str | None:
        return format_money(float(value), currency) if isinstance(value, int | float) else None

    training = saved.get("training") or {}
    throughput = saved.get("throughput") or {}
    return {
        "unit": saved.get("unit"),
        "currency": currency,
        "cost_per_1k": saved.get("cost_per_1k"),
        "cost_per_1k_text": money(saved.get("cost_per_1k")),
        "cost_per_1m_tokens_text": money(saved.get("cost_per_1m_tokens")),
        "training_cost_text": money(training.get("cost")),
        "throughput": throughput.get("per_machine"),
        "throughput_basis": throughput.get("basis"),
        "plans": [
            {"name": p.get("name"), "price": money(p.get("price")),
             "serving_cost": money(p.get("serving_cost")), "margin": money(p.get("margin")),
             "margin_pct": p.get("margin_pct"),
             "break_even_customers": p.get("break_even_customers")}
            for p in saved.get("plans") or []
        ],
        "created_at": saved.get("created_at"),
    }


def leaderboard_summary(board: Any) -> dict[str, Any] | None:
    """A model search's leaderboard (`model.type: auto`) as the table the report and
    the run's output show; None for a model not picked by a search."""
    from foundry.evaluation.leaderboard import leaderboard_caption, leaderboard_table

    if not isinstance(board, dict):
        return None
    columns, rows = leaderboard_table(board)
    return {"caption": leaderboard_caption(board), "columns": columns, "rows": rows}


def read_json(path: Path) -> dict[str, Any]:
    data = json.loads(crypto.read_text(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def scalars(values: dict[str, Any]) -> dict[str, Any]:
    """The finite numbers (and booleans / short strings) of a dict, for tables."""
    out: dict[str, Any] = {}
    for k, v in (values or {}).items():
        if isinstance(v, bool) or (isinstance(v, str) and len(v) <= 200):
            out[str(k)] = v
        elif isinstance(v, int | float):
            out[str(k)] = v if math.isfinite(v) else None
    return out


def history_of(
    manifest: dict[str, Any], lineage: list[str], registry: Registry, confinement: Any
) -> tuple[str | None, list[dict]]:
    """The run directory that trained this version (or its nearest ancestor) and its
    per-epoch records (`metrics.jsonl`), found as `foundry report` finds them, inside
    `confinement` (`foundry.registry.integrity.Confinement`)."""
    from foundry.report.sources import find_run_dir, read_history

    try:
        run_dir, _ = find_run_dir(manifest, lineage, registry, confinement)
        history = read_history(run_dir)
    except (OSError, ValueError):
        return None, []
    rows = [{k: v for k, v in scalars(r).items() if not isinstance(v, str)}
            for r in history[:5000] if isinstance(r, dict)]
    return (str(run_dir) if run_dir else None), rows
