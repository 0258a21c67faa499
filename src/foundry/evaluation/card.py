"""Model cards (Mitchell et al., "Model Cards for Model Reporting", 2019): every package
carries `card.json` (data) and `card.md` (the same card for people).

    card = build_card(manifest, metrics)   # manifest: the package's foundry.json
    text = render_card(card)

`card.json` has these keys, always present, in this order (`CARD_VERSION` changes when
they do). A section whose stage did not run is ``null`` and `missing` says why:

    card_version     int
    model_details    name, version, ref, description, architecture, model_config, task,
                     target, classes, owner, license, created_at, parent, compression
    intended_use     str | null                    (config `card.intended_use`)
    data             source, fingerprint, rows {train, val, test}, target, inputs [{name, type}]
    pii              action, kinds, rows_scanned, columns_scanned, total, rows_with_pii,
                     findings {column: {kind: count}}, identifier_columns [{column, reason,
                     action}]                      counts only, never values
    leakage          threshold, columns [{column, rule, reason, score, input, allowed}]:
                     columns that give the target away (`foundry.data.leakage`)
    training         summary {architecture, epochs, batch_size, loss, optimizer, lr, ...},
                     best_epoch, epochs_run, seconds, stopped_early, config (full, resolved)
    privacy          epsilon, delta, noise_multiplier, max_grad_norm, sample_rate, steps,
                     epochs, accountant, library, fixed_layers   (null: not private)
    metrics          split, values {name: number | null}, confusion_matrix, unmitigated
                     {name: number | null} | null (with fairness mitigation the values
                     score the decisions returned; these, the most probable class)
    fairness         sensitive_features, positive_class, before (audit), after (audit |
                     null), mitigation {constraint, objective, accuracy_before,
                     accuracy_after} | null
    calibration      `foundry.evaluation.calibration.calibrate`'s dict, reliability rows
                     included, plus ece_reduction
    explanations     method, metric, baseline, n_features, top_features [{feature,
                     importance, std}] (the 10 largest)
    limitations      str | null                    (config `card.limitations`)
    warnings         [str]: what a reader must know (personal data kept, no privacy
                     guarantee, small or unequal groups, calibration made worse, ...)
    missing          {section: why it is null}
    versions         {library: version}

Floats keep six significant digits. Nothing here reads the clock or the disk: the same
manifest and metrics give the same card, byte for byte.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["CARD_VERSION", "TOP_FEATURES", "build_card", "render_card"]

CARD_VERSION = 2
"""2: the `leakage` section."""
TOP_FEATURES = 10
"""Features listed under explanations; the full ranking stays in foundry.json."""
FOUR_FIFTHS = 0.8
"""Demographic parity ratios below this are flagged: the US EEOC "four-fifths rule" for
adverse impact."""
WEAK_EPSILON = 10.0
"""ε above this is flagged as a weak guarantee (1-10 is the common range)."""

_SCALAR = (int, float, str, bool, type(None))


# ------------------------------------------------------------------------------ build


def build_card(manifest: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """card.json content from a package manifest (foundry.json) and its metrics."""
    config = manifest.get("config") or {}
    task = _task(manifest)
    is_classifier = task.get("task") in ("binary", "multiclass")
    card_config = config.get("card") or {}
    sections = {
        "pii": _pii(manifest.get("pii")),
        "leakage": _leakage(manifest.get("leakage")),
        "privacy": _privacy(manifest.get("privacy")),
        "fairness": _fairness(manifest.get("fairness")),
        "calibration": _calibration(manifest.get("calibration")),
        "explanations": _explanations(manifest.get("explain")),
    }
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "model_details": _model_details(manifest, config, task),
        "intended_use": card_config.get("intended_use") or None,
        "data": _data(manifest, task),
        "pii": sections["pii"],
        "leakage": sections["leakage"],
        "training": _training(manifest, config),
        "privacy": sections["privacy"],
        "metrics": _metrics(metrics, config),
        "fairness": sections["fairness"],
        "calibration": sections["calibration"],
        "explanations": sections["explanations"],
        "limitations": card_config.get("limitations") or None,
        "warnings": [],
        "missing": _missing(card_config, sections, config, is_classifier, task),
        "versions": {str(k): _clean(v) for k, v in (manifest.get("versions") or {}).items()},
    }
    card["warnings"] = _warnings(card)
    return card


def _task(manifest: dict[str, Any]) -> dict[str, Any]:
    task = manifest.get("task")
    if isinstance(task, dict):
        return task
    # Language-model packages store the task as a bare string ("embedding", ...).
    return {"task": task} if task else {}


def _model_details(
    manifest: dict[str, Any], config: dict[str, Any], task: dict[str, Any]
) -> dict[str, Any]:
    name = manifest.get("name") or config.get("name")
    version = manifest.get("version")
    model = config.get("model") or {}
    compression = manifest.get("compression")
    card_config = config.get("card") or {}
    return {
        "name": name,
        "version": version,
        "ref": f"{name}:{version}" if version is not None else name,
        "description": config.get("description") or None,
        "architecture": model.get("type"),
        "model_config": _clean({k: v for k, v in model.items() if v is not None}),
        "task": task.get("task"),
        "target": (manifest.get("features") or {}).get("target") or task.get("target"),
        "classes": [str(c) for c in task.get("classes") or []],
        "owner": card_config.get("owner") or None,
        "license": card_config.get("license") or None,
        "created_at": manifest.get("created_at"),
        "parent": manifest.get("parent") or (compression or {}).get("parent"),
        "compression": (
            {k: _clean(v) for k, v in compression.items() if isinstance(v, _SCALAR)}
            if compression
            else None
        ),
    }


def _data(manifest: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    data = manifest.get("data") or {}
    features = manifest.get("features") or {}
    # Language-model packages count examples instead of table rows.
    rows = data.get("rows") or data.get("examples") or {}
    return {
        "source": data.get("path"),
        "fingerprint": manifest.get("fingerprint"),
        "rows": {str(k): _clean(v) for k, v in rows.items()},
        "target": features.get("target") or task.get("target"),
        "inputs": [
            {"name": str(f.get("name")), "type": str(f.get("type"))}
            for f in features.get("inputs") or []
        ],
    }


def _pii(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """Counts only. Fields are copied by name, so anything else a scan report might grow
    (an example value, a pattern match) never reaches the card."""
    if report is None:
        return None
    findings = report.get("findings") or {}
    return {
        "action": report.get("action"),
        "kinds": [str(k) for k in report.get("kinds") or []],
        "rows_scanned": _clean(report.get("rows_scanned")),
        "columns_scanned": _clean(report.get("columns_scanned")),
        "total": int(report.get("total") or 0),
        "rows_with_pii": _clean(report.get("rows_with_pii")),
        "findings": {
            str(column): {str(kind): int(n) for kind, n in sorted(kinds.items())}
            for column, kinds in sorted(findings.items())
        },
        "identifier_columns": [
            {k: str(d.get(k)) for k in ("column", "reason", "action")}
            for d in report.get("identifier_columns") or []
        ],
    }


def _leakage(section: dict[str, Any] | None) -> dict[str, Any] | None:
    """Column names, rules and scores; copied by name like `_pii`."""
    if section is None:
        return None
    return {
        "threshold": _clean(section.get("threshold")),
        "columns": [
            {
                "column": str(d.get("column")),
                "rule": str(d.get("rule")),
                "reason": str(d.get("reason")),
                "score": _clean(d.get("score")),
                "input": bool(d.get("input")),
                "allowed": bool(d.get("allowed")),
            }
            for d in section.get("columns") or []
        ],
    }


_PRIVACY_KEYS = (
    "epsilon",
    "delta",
    "noise_multiplier",
    "max_grad_norm",
    "sample_rate",
    "steps",
    "epochs",
    "accountant",
    "library",
    "fixed_layers",
)


def _privacy(privacy: dict[str, Any] | None) -> dict[str, Any] | None:
    if privacy is None:
        return None
    return {k: _clean(privacy.get(k)) for k in _PRIVACY_KEYS}


_TRAIN_SUMMARY = (
    ("epochs", ("epochs",)),
    ("batch_size", ("batch_size",)),
    ("loss", ("loss",)),
    ("optimizer", ("optimizer", "type")),
    ("lr", ("optimizer", "lr")),
    ("weight_decay", ("optimizer", "weight_decay")),
    ("scheduler", ("scheduler", "type")),
    ("early_stopping_metric", ("early_stopping", "metric")),
    ("early_stopping_patience", ("early_stopping", "patience")),
    ("gradient_accumulation", ("gradient_accumulation",)),
    ("precision", ("precision",)),
    ("seed", ("seed",)),
)
"""(summary key, path inside config["train"]): the settings a reader compares runs by."""


def _training(manifest: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    train = config.get("train") or {}
    summary: dict[str, Any] = {"architecture": (config.get("model") or {}).get("type")}
    for key, path in _TRAIN_SUMMARY:
        value: Any = train
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        summary[key] = _clean(value)
    summary["private"] = manifest.get("privacy") is not None
    done = manifest.get("training") or {}
    if isinstance(done.get("settings"), dict):  # a family that does not train by epochs
        summary = {"architecture": summary["architecture"], **_clean(done["settings"])}
    return {
        "summary": summary,
        "unit": done.get("unit", "epoch"),
        "best_epoch": _clean(done.get("best_epoch")),
        "epochs_run": _clean(done.get("epochs_run")),
        "seconds": _clean(done.get("seconds")),
        "stopped_early": _clean(done.get("stopped_early")),
        "config": _clean(config),
    }


def _metrics(metrics: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    matrix = metrics.get("confusion_matrix")
    unmitigated = metrics.get("unmitigated")  # evaluation.metrics.UNMITIGATED
    return {
        "split": (config.get("evaluate") or {}).get("split"),
        "values": _numbers(metrics),
        "confusion_matrix": _clean(matrix) if isinstance(matrix, list) else None,
        "unmitigated": _numbers(unmitigated) if isinstance(unmitigated, dict) else None,
    }


def _numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        str(k): _clean(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float, type(None))) and not isinstance(v, bool)
    }


_GROUP_KEYS = ("count", "accuracy", "selection_rate", "tpr", "fpr")
_GAP_KEYS = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "largest_accuracy_gap",
)


def _audit(audit: dict[str, Any]) -> dict[str, Any]:
    """The audit without its internals (group keys, the fitted mitigation state)."""
    return {
        "overall": {k: _clean(v) for k, v in (audit.get("overall") or {}).items()},
        "by_group": [
            {
                "group": {str(k): str(v) for k, v in (g.get("group") or {}).items()},
                **{k: _clean(g.get(k)) for k in _GROUP_KEYS},
                "small": bool(g.get("small", False)),
            }
            for g in audit.get("by_group") or []
        ],
        **{k: _clean(audit.get(k)) for k in _GAP_KEYS},
        "notes": [str(n) for n in audit.get("notes") or []],
    }


def _fairness(section: dict[str, Any] | None) -> dict[str, Any] | None:
    if not section or not section.get("audit"):
        return None
    audit = section["audit"]
    mitigation = section.get("mitigation")
    after = (mitigation or {}).get("audit_after")
    return {
        "sensitive_features": [str(f) for f in audit.get("sensitive_features") or []],
        "positive_class": _clean(audit.get("positive_class")),
        "before": _audit(audit),
        "after": _audit(after) if after else None,
        "mitigation": (
            {
                k: _clean(mitigation.get(k))
                for k in ("constraint", "objective", "accuracy_before", "accuracy_after")
            }
            if mitigation
            else None
        ),
    }


def _calibration(section: dict[str, Any] | None) -> dict[str, Any] | None:
    if not section:
        return None
    card = _clean(dict(section))
    before, after = card.get("ece_before"), card.get("ece_after")
    card["ece_reduction"] = (
        _clean((before - after) / before) if before and after is not None else None
    )
    return card


def _explanations(section: dict[str, Any] | None) -> dict[str, Any] | None:
    importance = (section or {}).get("permutation_importance")
    if not importance:
        return None
    features = importance.get("features") or []
    ranked = sorted(features, key=lambda f: -(f.get("importance") or 0.0))
    return {
        "method": "permutation_importance",
        "metric": importance.get("metric"),
        "baseline": _clean(importance.get("baseline")),
        "n_features": len(features),
        "top_features": [
            {
                "feature": str(f.get("feature")),
                "importance": _clean(f.get("importance")),
                "std": _clean(f.get("std")),
            }
            for f in ranked[:TOP_FEATURES]
        ],
    }


def _missing(
    card_config: dict[str, Any],
    sections: dict[str, Any],
    config: dict[str, Any],
    is_classifier: bool,
    task: dict[str, Any],
) -> dict[str, str]:
    """Why each null section is null, phrased as the setting that would fill it."""
    why: dict[str, str] = {}
    if not card_config.get("intended_use"):
        why["intended_use"] = "not stated — set card.intended_use"
    if sections["pii"] is None:
        enabled = ((config.get("data") or {}).get("pii") or {}).get("enabled")
        why["pii"] = (
            "not scanned — data.pii.enabled is false"
            if enabled is False
            else "not scanned — no PII report in this package (data.pii.enabled)"
        )
    if sections["leakage"] is None:
        enabled = ((config.get("features") or {}).get("leakage") or {}).get("enabled")
        why["leakage"] = (
            "not checked — features.leakage.enabled is false"
            if enabled is False
            else "not checked — no leakage check in this package (features.leakage.enabled)"
        )
    if sections["privacy"] is None:
        why["privacy"] = (
            "not private — no differential-privacy guarantee; set "
            "train.privacy.target_epsilon to train with DP-SGD"
        )
    if sections["fairness"] is None:
        why["fairness"] = (
            "not audited — set evaluate.fairness.sensitive_features"
            if is_classifier
            else f"not audited — the fairness audit needs a classifier (task: {task.get('task')})"
        )
    if sections["calibration"] is None:
        why["calibration"] = (
            "not measured — calibration needs a validation split (data.split.val > 0)"
            if is_classifier
            else f"not applicable — the model has no class probabilities (task: {task.get('task')})"
        )
    if sections["explanations"] is None:
        why["explanations"] = "not computed — set evaluate.explain.permutation_importance: true"
    if not card_config.get("limitations"):
        why["limitations"] = "not stated — set card.limitations"
    return why


def _warnings(card: dict[str, Any]) -> list[str]:
    """What a reader must not miss, found in the card's own numbers."""
    out: list[str] = []
    pii, privacy = card["pii"], card["privacy"]
    if pii is not None:
        if pii["action"] == "report" and pii["total"]:
            out.append(
                f"{pii['total']} personal-data values were found in "
                f"{len(pii['findings'])} column(s) and kept in the training data "
                "(data.pii.action: report)"
            )
        kept = [d["column"] for d in pii["identifier_columns"] if d["action"] == "report"]
        if kept:
            out.append(
                f"identifier column(s) {', '.join(kept)} were kept as model inputs "
                "(data.pii.identifiers: report, or listed in data.pii.keep_columns)"
            )
        if privacy is None and (pii["total"] or pii["identifier_columns"]):
            out.append(
                "the training data held personal information and the model has no "
                "differential-privacy guarantee: it may reveal individual training rows "
                "(set train.privacy.target_epsilon)"
            )
    leaks = [d["column"] for d in (card["leakage"] or {}).get("columns", [])
             if d["input"] and not d["allowed"]]  # fmt: skip
    if leaks:
        out.append(
            f"input(s) {', '.join(leaks)} give the target away (target leakage): the "
            "metrics overstate what the model does on new cases (see Target leakage)"
        )
    if privacy is not None and (privacy["epsilon"] or 0) > WEAK_EPSILON:
        out.append(
            f"ε = {_fmt(privacy['epsilon'])} is a weak privacy guarantee (above {WEAK_EPSILON:g})"
        )
    fairness = card["fairness"]
    if fairness is not None:
        before, after = fairness["before"], fairness["after"]
        small = [g for g in before["by_group"] if g["small"]]
        if small:
            names = "; ".join(f"{_group_name(g)} ({g['count']} rows)" for g in small)
            out.append(f"small groups, their fairness rates are noisy: {names}")
        ratio = before["demographic_parity_ratio"]
        if ratio is not None and ratio < FOUR_FIFTHS:
            text = (
                f"demographic parity ratio {_fmt(ratio)} is below {FOUR_FIFTHS} "
                "(the four-fifths rule)"
            )
            if after is not None and after["demographic_parity_ratio"] is not None:
                text += (
                    f"; {_fmt(after['demographic_parity_ratio'])} after mitigation, which "
                    "applies only when a request supplies the sensitive features"
                )
            out.append(text)
    calibration = card["calibration"]
    if calibration is not None:
        if calibration.get("note"):
            out.append(f"calibration: {calibration['note']}")
        ece_before, ece_after = calibration.get("ece_before"), calibration.get("ece_after")
        if ece_before is not None and ece_after is not None and ece_after > ece_before:
            out.append(
                f"temperature scaling raised the expected calibration error on the "
                f"{card['metrics']['split']} split ({_fmt(ece_before)} → {_fmt(ece_after)})"
            )
    if card["metrics"]["split"] == "train":
        out.append("metrics are measured on the training split and overestimate quality")
    details = card["model_details"]
    if details["compression"] is not None:
        out.append(
            f"{details['compression'].get('method')} variant of {details['parent']}: the "
            "metrics are this variant's; PII, fairness, calibration and explanations were "
            "measured on the parent"
        )
    return out


# ----------------------------------------------------------------------------- render


def render_card(card: dict[str, Any]) -> str:
    """card.md: the card as markdown, missing sections and warnings spelled out."""
    d = card["model_details"]
    missing = card.get("missing") or {}
    title = d["ref"] if d["version"] is not None else f"{d['name'] or 'model'} (unregistered)"
    lines = [f"# Model card: {title}", ""]
    lines += [d["description"] or "_No description given (set `description` in the config)._"]
    lines += [""]
    if card["warnings"]:
        lines += ["> **Warnings**", ">"]
        lines += [f"> - {w}" for w in card["warnings"]]
        lines += [""]
    lines += _render_details(d)
    lines += ["## Intended use", "", card["intended_use"] or _missing_line(missing, "intended_use")]
    lines += [""]
    lines += _render_data(card["data"])
    lines += _render_pii(card["pii"], missing)
    lines += _render_leakage(card["leakage"], missing)
    lines += _render_training(card["training"])
    lines += _render_privacy(card["privacy"], missing)
    lines += _render_metrics(card["metrics"], d["classes"])
    lines += _render_fairness(card["fairness"], missing)
    lines += _render_calibration(card["calibration"], missing, card["metrics"]["split"])
    lines += _render_explanations(card["explanations"], missing)
    lines += ["## Limitations", "", card["limitations"] or _missing_line(missing, "limitations")]
    if card["warnings"]:
        lines += ["", "See also the warnings at the top of this card."]
    lines += [""]
    if card["versions"]:
        lines += ["## Versions", "", "| library | version |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in card["versions"].items()]
        lines += [""]
    return "\n".join(lines)


def _render_details(d: dict[str, Any]) -> list[str]:
    config = ", ".join(f"{k}={v}" for k, v in d["model_config"].items() if k != "type")
    task = d["task"] or "n/a"
    if d["classes"]:
        task += f" ({len(d['classes'])} classes: {', '.join(d['classes'])})"
    rows = [
        ("name", d["name"] or "n/a"),
        ("version", d["version"] if d["version"] is not None else "assigned at registration"),
        ("architecture", (d["architecture"] or "n/a") + (f" ({config})" if config else "")),
        ("task", task),
        ("target", _code(d["target"])),
        ("owner", d["owner"] or "_not stated (set card.owner)_"),
        ("license", d["license"] or "_not stated (set card.license)_"),
        ("created", d["created_at"] or "n/a"),
    ]
    if d["parent"]:
        rows.append(("parent", d["parent"]))
    if d["compression"]:
        rows.append(("compression", ", ".join(f"{k}={v}" for k, v in d["compression"].items())))
    return (
        ["## Model details", "", "| | |", "|---|---|"]
        + [f"| {k} | {_cell(v)} |" for k, v in rows]
        + [""]
    )


def _render_data(data: dict[str, Any]) -> list[str]:
    rows = ", ".join(f"{k} {v}" for k, v in data["rows"].items()) or "n/a"
    inputs = ", ".join(f"{f['name']} ({f['type']})" for f in data["inputs"]) or "n/a"
    return [
        "## Data",
        "",
        f"- source: {_code(data['source'])}",
        f"- fingerprint: {_code(data['fingerprint'])}",
        f"- rows: {rows}",
        f"- target: {_code(data['target'])}",
        f"- inputs ({len(data['inputs'])}): {inputs}",
        "",
    ]


def _render_pii(pii: dict[str, Any] | None, missing: dict[str, str]) -> list[str]:
    lines = ["## Personal data (PII)", ""]
    if pii is None:
        return lines + [_missing_line(missing, "pii"), ""]
    scanned = pii["columns_scanned"]
    n_columns = len(scanned) if isinstance(scanned, list) else scanned
    lines += [
        f"- scanned: {pii['rows_scanned']} rows, {n_columns} columns, for "
        f"{', '.join(pii['kinds']) or 'n/a'}",
        f"- found: {pii['total']} values in {pii['rows_with_pii']} rows",
        f"- action on values found: `{pii['action']}`",
        "",
    ]
    counts = [
        (column, kind, n) for column, kinds in pii["findings"].items() for kind, n in kinds.items()
    ]
    if counts:
        lines += ["| column | kind | values |", "|---|---|---:|"]
        lines += [f"| {_cell(c)} | {_cell(k)} | {n} |" for c, k, n in counts]
        lines += [""]
    if pii["identifier_columns"]:
        lines += ["Identifier columns:", "", "| column | why | action |", "|---|---|---|"]
        lines += [
            f"| {_cell(d['column'])} | {_cell(d['reason'])} | {_cell(d['action'])} |"
            for d in pii["identifier_columns"]
        ]
        lines += [""]
    return lines


def _render_leakage(leakage: dict[str, Any] | None, missing: dict[str, str]) -> list[str]:
    lines = ["## Target leakage", ""]
    if leakage is None:
        return lines + [_missing_line(missing, "leakage"), ""]
    if not leakage["columns"]:
        return lines + ["No column gives the target away (`foundry.data.leakage` rules).", ""]
    lines += ["| column | why | used as input |", "|---|---|---|"]
    for d in leakage["columns"]:
        used = "yes (allowed)" if d["input"] and d["allowed"] else "**yes**" if d["input"] else "no"
        lines.append(f"| {_cell(d['column'])} | {_cell(d['reason'])} | {used} |")
    return lines + [""]


def _render_training(training: dict[str, Any]) -> list[str]:
    s = training["summary"]
    rows = [(k.replace("_", " "), v) for k, v in s.items() if v is not None]
    rows += [
        (f"{training.get('unit', 'epoch')}s run", training["epochs_run"]),
        (f"best {training.get('unit', 'epoch')}", training["best_epoch"]),
        ("stopped early", training["stopped_early"]),
        ("training time", None if training["seconds"] is None else f"{training['seconds']:.1f} s"),
    ]
    return (
        ["## Training", "", "| setting | value |", "|---|---|"]
        + [f"| {k} | {_cell(_fmt(v))} |" for k, v in rows if v is not None]
        + ["", "The full resolved config is in `card.json` (training.config).", ""]
    )


def _render_privacy(privacy: dict[str, Any] | None, missing: dict[str, str]) -> list[str]:
    lines = ["## Privacy", ""]
    if privacy is None:
        return lines + [f"**{_missing_line(missing, 'privacy', italic=False)}**", ""]
    lines += [
        f"Trained with differential privacy (DP-SGD): **ε = {_fmt(privacy['epsilon'])}**, "
        f"δ = {_fmt(privacy['delta'])}.",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    for key in _PRIVACY_KEYS[2:]:
        value = privacy[key]
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        if value is not None:
            lines.append(f"| {key.replace('_', ' ')} | {_cell(_fmt(value))} |")
    return lines + [""]


def _render_metrics(metrics: dict[str, Any], classes: list[str]) -> list[str]:
    lines = [f"## Metrics ({metrics['split'] or 'evaluation'} split)", ""]
    unmitigated = metrics.get("unmitigated")
    if metrics["values"] and unmitigated:
        lines += [
            "Of the decisions the model returns: fairness mitigation's group thresholds "
            "apply when a request supplies the sensitive features. Without them (the most "
            "probable class) in the last column; the probability metrics are the same.",
            "",
            "| metric | returned decisions | without mitigation |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {_cell(k)} | {_fmt(v)} | "
            f"{_fmt(unmitigated[k]) if k in unmitigated else 'same'} |"
            for k, v in metrics["values"].items()
        ]
    elif metrics["values"]:
        lines += ["| metric | value |", "|---|---:|"]
        lines += [f"| {_cell(k)} | {_fmt(v)} |" for k, v in metrics["values"].items()]
    else:
        lines.append("_No metrics recorded._")
    matrix = metrics["confusion_matrix"]
    # Past ~20 classes the table is wider than any page; card.json keeps it.
    if matrix and len(matrix) == len(classes) and len(classes) <= 20:
        what = "returned decision" if unmitigated else "predicted"
        lines += ["", f"Confusion matrix (rows: true class, columns: {what}):", ""]
        lines += ["| | " + " | ".join(_cell(c) for c in classes) + " |"]
        lines += ["|---|" + "---:|" * len(classes)]
        lines += [
            f"| {_cell(c)} | " + " | ".join(str(n) for n in row) + " |"
            for c, row in zip(classes, matrix, strict=True)
        ]
    return lines + [""]


def _render_fairness(fairness: dict[str, Any] | None, missing: dict[str, str]) -> list[str]:
    lines = ["## Fairness", ""]
    if fairness is None:
        return lines + [_missing_line(missing, "fairness"), ""]
    before, after, mitigation = fairness["before"], fairness["after"], fairness["mitigation"]
    head = f"Audited by {', '.join(fairness['sensitive_features'])}"
    if fairness["positive_class"] is not None:
        head += f"; selected class: `{fairness['positive_class']}`"
    lines += [head + ".", ""]
    lines += _group_table(before)
    lines += ["", "| gap | " + ("before | after |" if after else "value |")]
    lines += ["|---|---:|" + ("---:|" if after else "")]
    for key in _GAP_KEYS:
        row = f"| {key.replace('_', ' ')} | {_fmt(before[key])} |"
        lines.append(row + (f" {_fmt(after[key])} |" if after else ""))
    if mitigation:
        lines.append(
            f"| accuracy | {_fmt(mitigation['accuracy_before'])} | "
            f"{_fmt(mitigation['accuracy_after'])} |"
        )
        lines += [
            "",
            f"Mitigation: group thresholds (Fairlearn ThresholdOptimizer) for "
            f"`{mitigation['constraint']}`, maximising `{mitigation['objective']}`, fitted "
            "on the validation split; applied when a request supplies the sensitive "
            "features. Per group after mitigation:",
            "",
        ]
        lines += _group_table(after)
    else:
        lines += ["", "No mitigation (set evaluate.fairness.mitigation)."]
    notes = before["notes"] + (
        [n for n in after["notes"] if n not in before["notes"]] if after else []
    )
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return lines + [""]


def _group_table(audit: dict[str, Any]) -> list[str]:
    lines = [
        "| group | rows | accuracy | selection rate | TPR | FPR |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = [("overall", audit["overall"])] + [
        (_group_name(g) + (" ⚠ small" if g["small"] else ""), g) for g in audit["by_group"]
    ]
    for name, g in rows:
        cells = [_fmt(g.get(k)) for k in _GROUP_KEYS]
        lines.append(f"| {_cell(name)} | " + " | ".join(cells) + " |")
    return lines


def _render_calibration(
    calibration: dict[str, Any] | None, missing: dict[str, str], split: str | None
) -> list[str]:
    lines = ["## Calibration", ""]
    if calibration is None:
        return lines + [_missing_line(missing, "calibration"), ""]
    bins = calibration.get("bins")
    fitted = calibration.get("fitted_temperature")
    val_ece = " → ".join(_fmt(calibration.get(f"val_ece_{k}")) for k in ("before", "after"))
    if calibration.get("method") == "temperature" and calibration.get("kept", fitted is None):
        lines.append(
            f"Temperature scaling: T = {_fmt(calibration['temperature'])}, fitted on the "
            f"validation split ({calibration.get('n_val')} rows); predictions divide the "
            "logits by T (the predicted class does not change)."
            + (f" Kept: it lowered the validation ECE ({val_ece})." if fitted else "")
        )
    elif calibration.get("method") == "temperature" and fitted is not None:
        lines.append(
            f"Temperature scaling: **not applied** (T = 1). The fitted T = {_fmt(fitted)} "
            f"did not lower the expected calibration error on the validation split "
            f"({calibration.get('n_val')} rows; {val_ece}), so predictions keep the "
            "model's own probabilities."
        )
    elif calibration.get("method") == "temperature":
        lines.append("Temperature scaling: not applied (T = 1); see the note below.")
    else:
        lines.append("Temperature scaling is off (evaluate.calibration.temperature_scaling).")
    lines += [
        "",
        f"| {split or 'evaluation'} split ({calibration.get('n_eval')} rows) | before | after |",
        "|---|---:|---:|",
    ]
    for key, label in (
        ("ece", f"expected calibration error ({bins} bins)"),
        ("accuracy", "accuracy"),
        ("nll", "negative log-likelihood"),
    ):
        lines.append(
            f"| {label} | {_fmt(calibration.get(f'{key}_before'))} | "
            f"{_fmt(calibration.get(f'{key}_after'))} |"
        )
    reduction = calibration.get("ece_reduction")
    if reduction is not None and calibration.get("temperature") != 1.0:
        change = "reduced" if reduction >= 0 else "increased"
        lines += ["", f"Temperature scaling {change} the ECE by {abs(reduction):.1%}."]
    if calibration.get("note"):
        lines += ["", f"Note: {calibration['note']}."]
    lines += ["", "Reliability-diagram data (per bin) is in `card.json` (calibration)."]
    return lines + [""]


def _render_explanations(explanations: dict[str, Any] | None, missing: dict[str, str]) -> list[str]:
    lines = ["## Explanations", ""]
    if explanations is None:
        return lines + [_missing_line(missing, "explanations"), ""]
    shown = len(explanations["top_features"])
    lines += [
        f"Permutation importance: the drop in {explanations['metric']} (baseline "
        f"{_fmt(explanations['baseline'])}) when one input is shuffled; top {shown} of "
        f"{explanations['n_features']}.",
        "",
        "| rank | feature | importance | std |",
        "|---:|---|---:|---:|",
    ]
    lines += [
        f"| {i} | {_cell(f['feature'])} | {_fmt(f['importance'])} | {_fmt(f['std'])} |"
        for i, f in enumerate(explanations["top_features"], start=1)
    ]
    return lines + [""]


# ---------------------------------------------------------------------------- values


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy and tuples to Python, floats to six significant digits,
    NaN and infinities to None (not valid JSON)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _clean(value.tolist())  # numpy scalar or array
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    return str(value)


def _fmt(value: Any) -> str:
    """A number for a table: floats to 4 decimals (small ones in scientific notation)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.4f}"
    return str(value)


def _cell(value: Any) -> str:
    """Text safe inside a markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _code(value: Any) -> str:
    return f"`{value}`" if value is not None else "n/a"


def _group_name(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group["group"].items()) or "n/a"


def _missing_line(missing: dict[str, str], key: str, *, italic: bool = True) -> str:
    text = missing.get(key, "not available")
    text = text[0].upper() + text[1:]
    return f"_{text}._" if italic else f"{text}."
