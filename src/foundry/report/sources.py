"""What a report reads, found from a model reference or a run directory.

    sources = gather("penguins:3")            # or gather(Path("runs/penguins-20260101-..."))
    sources.manifest["calibration"]           # the package's foundry.json
    sources.history                            # metrics.jsonl of the training run, per epoch
    sources.compression                        # compress.json of a compress run it took part in

Nothing here is written or pickled: the package is read as JSON (its weights are loaded
later, by `foundry.predictor.load`, only to predict the evaluation rows).

Where each thing lives (written by the stage that owns it):
- run directory `<output_dir>/<name>-<time>/` (`foundry.pipeline.run_directory`):
  `config.json`, `metrics.jsonl` (one line per epoch, `foundry.training.loop.fit`),
  `metrics.json`, and `COMPLETED` holding the registered reference once the run finished;
- the package (`foundry.registry`): `foundry.json` (the manifest: `training`,
  `calibration`, `fairness`, `explain`, `pii`, `privacy`, `compression`), `metrics.json`;
- `<output_dir>/<name>-compress-<time>/compress.json` (`foundry.compression.stage`): every
  variant of one compress run, the parent first.
A model found by reference gets its run directory back by looking for the run whose
`COMPLETED` names it (or names its nearest ancestor, for a compressed variant).

Only folders foundry recorded are read: the registry home and the run folders the index
records for the model's names (`Registry.run_dirs`); a manifest naming any other folder
(`training.run_dir: /etc`) is not followed, and the refusal is listed in `Sources.refused`
(`foundry.registry.integrity.Confinement`). A run directory given on the command line is
the user's own choice and is read; the package its `COMPLETED` names must lie inside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import foundry.crypto as crypto
from foundry.errors import ModelError
from foundry.registry.integrity import Confinement

COMPLETED = "COMPLETED"
"""The file a finished training run writes, holding the registered reference."""
UNREGISTERED = "unregistered:"
"""How `COMPLETED` starts when the package went to `<run_dir>/package` (tuning trials)."""


@dataclass(frozen=True)
class Sources:
    """Everything the report shows that is already on disk."""

    ref: str
    """`name:version` of the model (pinned), or `name:unregistered`."""
    package_path: Path
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    """The package's metrics.json (the evaluation split at training time)."""
    run_dir: Path | None
    """The training run the model (or, for a variant, its ancestor) came from."""
    run_ref: str | None
    """The reference `run_dir/COMPLETED` names (differs from `ref` for a variant)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """metrics.jsonl of `run_dir`: one dict per epoch."""
    compression: dict[str, Any] | None = None
    compression_path: Path | None = None
    lineage: list[str] = field(default_factory=list)
    """This model and its ancestors, nearest first."""
    created_at: str | None = None
    registry: Any = None
    """The `Registry` the model was found in (None for an unregistered package)."""
    refused: list[str] = field(default_factory=list)
    """Paths the manifest named outside the allowed folders, not read (one sentence each)."""


def gather(target: str | Path, *, registry: Any = None) -> Sources:
    """Find the package, run directory, history and compress report of `target`: a model
    reference (`name`, `name:3`, `name:latest`, `name:compressed`), a run directory, or a
    package directory. ModelError when it names no model or a run that never finished."""
    from foundry.registry import Registry, is_package_dir

    path = Path(target)
    if path.is_dir():
        if is_package_dir(path):
            return _from_package(path.resolve(), run_dir=None, run_ref=None, registry=None)
        return _from_run_dir(path.resolve(), registry or Registry())
    if isinstance(target, Path) or "/" in str(target):
        raise ModelError(f"{target}: no such run directory or model package")
    return _from_ref(str(target), registry or Registry())


def _from_run_dir(run_dir: Path, registry: Any) -> Sources:
    if not ((run_dir / "config.json").is_file() or (run_dir / "metrics.jsonl").is_file()):
        raise ModelError(
            f"{run_dir} is not a training run directory (it has no config.json or "
            "metrics.jsonl)",
            hint="pass a model reference (name, name:3) or a directory output_dir/NAME-TIME",
        )
    done = run_dir / COMPLETED
    if not done.is_file():
        raise ModelError(
            f"the run in {run_dir} never finished: it has no {COMPLETED} file and "
            "registered no model",
            hint="continue it with `foundry train CONFIG --resume`, then report the model",
        )
    ref = done.read_text(encoding="utf-8").strip()
    if ref.startswith(UNREGISTERED):
        package = Confinement([run_dir]).require(
            run_dir / ref[len(UNREGISTERED):].strip().rstrip("/"),
            what=f"the package {done} names,",
        )
        return _from_package(package, run_dir=run_dir, run_ref=None, registry=None)
    record = registry.resolve(ref)
    return _sources(record, registry, run_dir=run_dir, run_ref=record.ref)


def _from_ref(ref: str, registry: Any) -> Sources:
    record = registry.resolve(ref)  # ModelError with suggestions for an unknown name
    return _sources(record, registry, run_dir=None, run_ref=None)


def _sources(record: Any, registry: Any, *, run_dir: Path | None, run_ref: str | None) -> Sources:
    manifest = registry.read_manifest(record)  # ModelError if changed after registration
    lineage = [r.ref for r in registry.lineage(record.ref)]
    confinement = registry.confinement(lineage)
    if run_dir is None:
        run_dir, run_ref = find_run_dir(manifest, lineage, registry, confinement)
    compression, compression_path = find_compression(record.ref, lineage, registry)
    return Sources(
        ref=record.ref,
        package_path=record.path,
        manifest=manifest,
        metrics=_read_json(record.path / "metrics.json"),
        run_dir=run_dir,
        run_ref=run_ref,
        history=read_history(run_dir),
        compression=compression,
        compression_path=compression_path,
        lineage=lineage,
        created_at=record.created_at.isoformat(),
        registry=registry,
        refused=confinement.refused,
    )


def _from_package(
    package: Path, *, run_dir: Path | None, run_ref: str | None, registry: Any
) -> Sources:
    from foundry.registry import is_package_dir

    if not is_package_dir(package):
        raise ModelError(f"{package} is not a model package directory")
    manifest = _read_json(package / "foundry.json")
    name = manifest.get("name") or (manifest.get("config") or {}).get("name") or package.name
    version = manifest.get("version")
    return Sources(
        ref=f"{name}:{version if version is not None else 'unregistered'}",
        package_path=package,
        manifest=manifest,
        metrics=_read_json(package / "metrics.json"),
        run_dir=run_dir,
        run_ref=run_ref,
        history=read_history(run_dir),
        lineage=[],
        created_at=manifest.get("created_at"),
        registry=registry,
    )


def find_run_dir(
    manifest: dict[str, Any], lineage: list[str], registry: Any, confinement: Confinement
) -> tuple[Path | None, str | None]:
    """The run directory whose COMPLETED names the model or, failing that, its nearest
    ancestor (a compressed variant was not trained in a run of its own): the one the
    manifest records (`training.run_dir`) if `confinement` allows it, else one of the run
    folders the index records for the lineage's names, newest first."""
    candidates: list[Path] = []
    recorded = (manifest.get("training") or {}).get("run_dir")
    if isinstance(recorded, str) and recorded:
        allowed = confinement.allow(recorded, what="training.run_dir of foundry.json:")
        candidates += [allowed] if allowed is not None else []
    candidates += registry.run_dirs(_names(lineage))
    finished: dict[str, Path] = {}
    for run in candidates:
        done = run / COMPLETED
        if done.is_file():
            finished.setdefault(done.read_text(encoding="utf-8").strip(), run)
    for ref in lineage:
        if ref in finished:
            return finished[ref], ref
    return None, None


def find_compression(
    ref: str, lineage: list[str], registry: Any
) -> tuple[dict[str, Any] | None, Path | None]:
    """The newest compress.json in which `ref` is the parent or one of the variants,
    among the run folders the index records for the lineage's names (a compress run
    records its folder with each variant it registers)."""
    for run in registry.run_dirs(_names(lineage)):
        path = run / "compress.json"
        if not path.is_file():
            continue
        try:
            payload = json.loads(crypto.read_text(path))
        except (OSError, json.JSONDecodeError, crypto.EncryptionError):
            continue  # a compress run that died while writing: not this model's report
        refs = {payload.get("parent")} | {v.get("ref") for v in payload.get("variants") or []}
        if ref in refs:
            return payload, path
    return None, None


def _names(lineage: list[str]) -> set[str]:
    return {ref.partition(":")[0] for ref in lineage}


def read_history(run_dir: Path | None) -> list[dict[str, Any]]:
    """The per-epoch records of a run (`metrics.jsonl`); [] when there is none."""
    if run_dir is None or not (run_dir / "metrics.jsonl").is_file():
        return []
    records = []
    for line in crypto.read_text(run_dir / "metrics.jsonl").splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a crash: the epochs before it still count
    return records


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(crypto.read_text(path))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read it as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data
