"""`foundry report`: one self-contained HTML page about one model.

    result = write_report("penguins:latest")            # or a run directory
    result.path                                        # penguins-3-report.html
    result.sections                                    # ("training", "learning_rate", ...)

Read top to bottom: find what is on disk (package, run directory, compress and cost
reports), predict the evaluation rows once, build the sections, render the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import foundry.crypto as crypto
from foundry.report.cost import find_cost
from foundry.report.evaluation import evaluate
from foundry.report.page import render
from foundry.report.sections import Context, Omitted, build_sections, fmt, task_name
from foundry.report.sources import Sources, gather


@dataclass(frozen=True)
class ReportResult:
    path: Path
    """The HTML file written."""
    model_ref: str
    sections: tuple[str, ...]
    """Ids of the sections the page shows, in page order."""
    omitted: dict[str, str]
    """Sections left out, with the one-line reason each does not apply."""
    size_bytes: int


def write_report(
    target: str | Path,
    output: str | Path | None = None,
    *,
    data: str | Path | None = None,
    registry: Any = None,
) -> ReportResult:
    """Write the HTML report of `target`: a model reference (`name`, `name:3`,
    `name:latest`, `name:compressed`), a training run directory, or a package directory.

    `output`: the file to write (default: `<name>-<version>-report.html` in the run
    directory when there is one, else in the current directory). `data`: a labelled file
    to draw the confusion matrix, ROC / PR curves and residuals from (default: the
    model's own evaluation split, read again from its training data).
    Raises ModelError for an unknown model or a run that never finished, DataError for a
    `data` file without the target column."""
    sources = gather(target, registry=registry)
    evaluated = evaluate(sources, data)
    context = Context(sources=sources, evaluated=evaluated, cost=find_cost(sources))
    sections = build_sections(context)
    page = render(header(sources, evaluated), sections,
                  generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    path = (Path(output) if output is not None else default_output(sources)).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    crypto.write_text(tmp, page, fsync=False)  # encrypted when a key is set
    tmp.replace(path)  # a reader never sees half a page
    return ReportResult(
        path=path,
        model_ref=sources.ref,
        sections=tuple(s.id for s in sections if not isinstance(s, Omitted)),
        omitted={s.id: s.reason for s in sections if isinstance(s, Omitted)},
        size_bytes=path.stat().st_size,
    )


def default_output(sources: Sources) -> Path:
    name = sources.ref.replace(":", "-")
    folder = sources.run_dir if sources.run_dir is not None else Path.cwd()
    return folder / f"{name}-report.html"


def header(sources: Sources, evaluated: Any) -> dict[str, Any]:
    """The page's header: what the model is, what it was trained on, when."""
    m = sources.manifest
    config = m.get("config") or {}
    task = m.get("task") if isinstance(m.get("task"), dict) else {}
    data = m.get("data") or {}
    training = m.get("training") or {}
    rows = data.get("rows") or data.get("examples") or {}
    fields: list[tuple[str, Any]] = [
        ("task", task_name(m)),
        ("target", task.get("target")),
        ("classes", fmt(task.get("classes")) if task.get("classes") else None),
        ("model", (config.get("model") or {}).get("type")),
        ("data", data.get("path")),
        ("data fingerprint", m.get("fingerprint")),
        ("rows train / val / test", " / ".join(fmt(rows.get(k)) for k in ("train", "val", "test"))
         if rows else None),
        ("registered", _when(sources.created_at)),
        ("trained", _trained(training)),
        ("training run", str(sources.run_dir) if sources.run_dir else "not found"),
        ("derived from", (m.get("compression") or {}).get("method") and
         f"{m['compression']['method']} of {m.get('parent')}"),
        ("lineage", " → ".join(sources.lineage) if len(sources.lineage) > 1 else None),
        ("predictions drawn from", f"{evaluated.rows:,} rows of {evaluated.source}"
         if hasattr(evaluated, "rows") else evaluated.reason),
        ("versions", fmt(m.get("versions") or {})),
        ("package", str(sources.package_path)),
    ]
    return {"ref": sources.ref, "fields": [(k, str(v)) for k, v in fields if v]}


def _when(iso: str | None) -> str | None:
    """An ISO timestamp as `2026-01-31 14:05 UTC`."""
    if not iso:
        return None
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _trained(training: dict[str, Any]) -> str | None:
    if not training:
        return None
    text = f"{fmt(training.get('epochs_run'))} epochs"
    if training.get("best_epoch"):
        text += f", best {fmt(training['best_epoch'])}"
    if training.get("seconds") is not None:
        text += f", {fmt(training['seconds'])} s"
    return text
