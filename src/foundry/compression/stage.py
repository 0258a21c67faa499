"""The compress stage: a trained model → smaller, faster variants, each registered as a
new version with its parent, measured side by side in one process.

    result = compress("adult:3", CompressConfig(methods=["int8", "onnx"], max_accuracy_drop=0.01))

Read top to bottom: load the parent and its data again, build each variant, register it,
then score every network on the same rows and time it, model only and end to end
(`foundry.compression.timing`: warmed up, interleaved rounds), print and save the table,
and tag the variant fastest end to end within the accuracy budget `name:compressed`.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import foundry.crypto as crypto
from foundry.compression.timing import BATCHES, time_networks
from foundry.config.schema import CompressConfig, FoundryConfig
from foundry.console import Reporter
from foundry.errors import ConfigError, ModelError
from foundry.progress import progress_bar
from foundry.registry import Registry

__all__ = ["CompressResult", "Variant", "compress"]

TAG = "compressed"


@dataclass(frozen=True)
class Variant:
    """One row of the comparison table."""

    method: str
    """`parent`, or the compress method that built it."""
    ref: str
    size_bytes: int
    """The package on disk."""
    parameters: int
    """Numbers in the network (int8 and float alike)."""
    latency_ms: dict[str, float]
    """Median time of the network alone per batch size ("1", "64"), milliseconds (per
    generated token for a language model)."""
    throughput: float
    """Rows per second at the largest batch size, end to end when measured."""
    metrics: dict[str, Any]
    deltas: dict[str, float]
    """metric - parent's metric, for every numeric metric."""
    notes: str = ""
    end_to_end_ms: dict[str, float] = field(default_factory=dict)
    """Median time of a whole `/predict` request's work per batch size, milliseconds:
    raw JSON records parsed, validated, encoded, the network, decoded and written
    (`foundry.compression.timing`). Empty when not measured (language models, inputs
    that cannot be sent as records)."""

    @property
    def timed(self) -> dict[str, float]:
        """What speed is judged by: end to end when measured, else the network alone."""
        return self.end_to_end_ms or self.latency_ms


@dataclass(frozen=True)
class CompressResult:
    parent: str
    variants: list[Variant]
    """The parent first, then one per method, in the order built."""
    tagged: str | None
    """The variant tagged `name:compressed`, or None (no budget, or none within it)."""
    report_dir: Path
    """compress.json and compress.md: the table."""
    selection: str = ""
    """Why the tagged variant was chosen, or why none was."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Methods that could not be applied to this model, and why."""


@dataclass
class _Built:
    method: str
    network: Any
    weights: dict[str, torch.Tensor]
    compression: dict[str, Any]
    model_config: Any = None
    files: dict[str, Path] = field(default_factory=dict)
    training: dict[str, Any] | None = None
    notes: str = ""


def compress(
    ref: str,
    config: CompressConfig | None = None,
    *,
    registry: Registry | None = None,
    out_dir: Path | None = None,
    quiet: bool = False,
) -> CompressResult:
    """Build, register and measure the compressed variants of model `ref`.

    `config`: the compress section (default: the one in the model's training config).
    Raises ModelError for models that cannot be compressed (fine-tuned Hugging Face
    models, variants that are already int8 or ONNX) and ConfigError for settings that do
    not fit. GPT models go to `foundry.compression.lm.compress_gpt` (int8 only)."""
    from foundry.config.load import LoadedConfig
    from foundry.data.dataset import load_splits
    from foundry.lm.load import is_language_package, model_type
    from foundry.predictor import Predictor

    say = Reporter(quiet=quiet)
    registry = registry or Registry()
    record = registry.resolve(ref)
    package = registry.load(record.ref)
    manifest = package.manifest
    if model_type(manifest) == "gpt":
        from foundry.compression.lm import compress_gpt

        return compress_gpt(
            record, package, config, registry=registry, out_dir=out_dir, say=say
        )
    if manifest.get("task") == "recommend":
        from foundry.recommend.compress import compress_recommender

        return compress_recommender(
            record, package, config, registry=registry, out_dir=out_dir, say=say
        )
    if is_language_package(manifest):
        raise ModelError(
            f"model {record.ref} is a fine-tuned Hugging Face model: foundry compress "
            "handles mlp, cnn, text and gpt models",
            hint="serve it as it is, or train a smaller model",
        )
    from foundry.families import family_of_package

    family = family_of_package(manifest)
    if "compress" not in getattr(family, "supports", frozenset()):  # gbm: it says why
        raise ModelError(
            f"model {record.ref} has no compressed variant: "
            + getattr(family, "why_not_compress", "its model family cannot be compressed"),
            hint=getattr(family, "smaller_model_hint", "serve it as it is"),
        )
    done = (manifest.get("compression") or {}).get("method")
    if done in ("int8", "onnx", "onnx_int8"):
        raise ModelError(
            f"model {record.ref} is already a compressed variant ({done})",
            hint=f"compress its parent {manifest.get('parent')} instead",
        )
    cfg = FoundryConfig.model_validate(manifest["config"])
    config = config or cfg.compress
    retrained = [m for m in config.methods if m in ("prune", "distill")]
    if manifest.get("privacy") and retrained:
        raise ModelError(
            f"model {record.ref} was trained with differential privacy: {retrained} would "
            "train again on the same data without a privacy guarantee",
            hint="compress it with int8, onnx or onnx_int8 (no retraining)",
        )
    if any(m.startswith("onnx") for m in config.methods):
        from foundry.compression.onnx import require_onnx

        require_onnx("ONNX compression (compress.methods onnx, onnx_int8)")
    parent = Predictor.from_package(package, ref=record.ref)
    started = time.perf_counter()

    # ---- data: the model's own splits again (seeded), or the file the config names
    base_dir = Path((manifest.get("data") or {}).get("base_dir") or Path.cwd())
    loaded = LoadedConfig(cfg, base_dir)
    splits, resolved = load_splits(loaded, say)
    from foundry.families.neural import image_augmenter

    augment = image_augmenter(cfg, resolved)  # prune's fine-tune and distill train as training did
    if config.data is not None:
        from foundry.data import read_table

        data_path = loaded.resolve(config.data)  # relative: to the training config's folder
        assert data_path is not None
        # the training's PII rule, as predictions apply it
        eval_df, eval_name = parent.scrub(read_table(data_path)), str(config.data)
    else:
        eval_df, eval_name = splits.evaluation(cfg.evaluate.split)
    preprocessor = parent.preprocessor
    eval_enc = preprocessor.transform(eval_df, with_target=True)
    say.info(f"compressing {record.ref}: measured on {eval_name} ({len(eval_df)} rows)")

    out_dir = report_dir(out_dir, base_dir, cfg)

    # ---- build and register each variant
    builders: dict[str, Callable[[], _Built]] = {
        "int8": lambda: _int8(parent),
        "onnx": lambda: _onnx(parent, eval_enc, out_dir, quantized=False),
        "onnx_int8": lambda: _onnx(parent, eval_enc, out_dir, quantized=True),
        "prune": lambda: _prune(parent, cfg, config, splits, out_dir, say, augment),
        "distill": lambda: _distill(parent, cfg, config, splits, out_dir, registry, say, augment),
        "sparsity": lambda: _sparsity(parent, config),
    }
    built: list[_Built] = []
    skipped: dict[str, str] = {}
    n = len(config.methods)
    # steps: build each method, score each network, warm up + each timing round,
    # register each variant (the total shrinks when a method does not apply)
    steps = n + (1 + n) + (1 + config.repeats) + n
    with progress_bar(f"compressing {record.ref}", steps, unit="steps",
                      enabled=False if quiet else None) as bar:
        for method in config.methods:
            say.info(f"building {method} ...")
            bar.describe(f"{record.ref}: building {method}")
            try:
                built.append(builders[method]())
            except _NotApplicable as exc:
                skipped[method] = str(exc)
                say.warn(f"{method}: {exc}")
            bar.advance()
        k = len(built)
        steps = n + (1 + k) + (1 + config.repeats) + k
        bar.describe(f"{record.ref}: scoring {1 + k} networks", total=steps)

        # ---- measure everything in this process: metrics, then round-robin timings
        from foundry.evaluation.metrics import compute_metrics, returned_metrics
        from foundry.predictor import run_model

        networks = [parent.model] + [b.network for b in built]
        y = eval_enc["target"].numpy()
        # Variants of the same network keep the parent's temperature and fairness
        # thresholds (their metrics score the decisions they return, as the parent's
        # registered ones do); retrained ones keep neither.
        scaled = [True] + [b.training is None for b in built]
        scored = []
        for net, same_network in zip(networks, scaled, strict=True):
            out = run_model(net, eval_enc, len(eval_df))
            scored.append(
                returned_metrics(parent, eval_df, y, parent.calibrated(out))
                if same_network
                else compute_metrics(parent.task, y, out)
            )
            bar.advance()
        bar.describe(
            f"{record.ref}: timing {len(networks)} networks at batch "
            f"{', '.join(map(str, BATCHES))} ({config.repeats} rounds)"
        )
        timings, unmeasured = time_networks(
            parent, networks, scaled, eval_enc, eval_df, config.repeats,
            workers=cfg.serve.workers, on_round=bar.advance,
        )
        if unmeasured:
            say.warn(unmeasured)

        # ---- register each variant with what was measured (its metrics on these rows)
        refs = [record.ref]
        for variant, metrics in zip(built, scored[1:], strict=True):
            bar.describe(f"{record.ref}: registering {variant.method}")
            refs.append(_register(registry, record.ref, manifest, variant, cfg, metrics, out_dir))
            say.info(f"registered {refs[-1]} ({variant.method})")
            bar.advance()
        bar.describe(f"compressed {record.ref}")
    largest = str(BATCHES[-1])
    variants = [
        Variant(
            method=method,
            ref=vref,
            size_bytes=registry.resolve(vref).size_bytes,
            parameters=_parameters(net),
            latency_ms=timing.model_ms,
            throughput=round(
                BATCHES[-1] / (timing.end_to_end_ms or timing.model_ms)[largest] * 1000, 1
            ),
            metrics=metrics,
            deltas=_deltas(metrics, scored[0]),
            notes=notes,
            end_to_end_ms=timing.end_to_end_ms,
        )
        for method, vref, net, timing, metrics, notes in zip(
            ["parent", *(b.method for b in built)],
            refs,
            networks,
            timings,
            scored,
            ["", *(b.notes for b in built)],
            strict=True,
        )
    ]

    # ---- choose, tag, report
    return finish(
        variants,
        parent_ref=record.ref,
        name=cfg.name,
        registry=registry,
        budget=config.max_accuracy_drop,
        classification=parent.task.is_classification,
        skipped=skipped,
        out_dir=out_dir,
        data=eval_name,
        started=started,
        say=say,
    )


def report_dir(out_dir: Path | None, base_dir: Path, cfg: FoundryConfig) -> Path:
    """`out_dir`, or `<output_dir>/<name>-compress-<UTC time>` beside the training config."""
    stamp = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    out_dir = out_dir or (base_dir / cfg.output_dir / f"{cfg.name}-compress-{stamp}")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def finish(
    variants: list[Variant],
    *,
    parent_ref: str,
    name: str,
    registry: Registry,
    budget: float | None,
    classification: bool,
    skipped: dict[str, str],
    out_dir: Path,
    data: str,
    started: float,
    say: Reporter,
    perplexity: bool = False,
    units: dict[str, str] | None = None,
) -> CompressResult:
    """The end every compress run shares: choose the fastest variant within `budget` and
    tag it, write compress.json / compress.md (`units` describes what the timings mean
    when they are not forward passes), print the table."""
    tagged, why = _select(variants, budget, classification, perplexity=perplexity)
    if tagged is not None:
        registry.tag(tagged, TAG)
        why += f"; tagged {name}:{TAG} → {tagged}"
    say.info(why)
    result = CompressResult(
        parent=parent_ref,
        variants=variants,
        tagged=tagged,
        report_dir=out_dir,
        selection=why,
        skipped=skipped,
    )
    _write_report(result, out_dir, data, time.perf_counter() - started, units or {})
    # The folder's ONNX exports hold weights, its reports the measurements: encrypted now
    # when a key is set (the variants were registered through the registry already).
    crypto.seal_tree(out_dir)
    if not say.quiet:
        say.table(comparison_table(result), width=150)
        say.info(f"table and every metric: {out_dir / 'compress.md'}, compress.json")
    return result


class _NotApplicable(Exception):
    """A method that does not apply to this model (a note in the report, not a failure)."""


# ----------------------------------------------------------------------- builders


def _int8(parent: Any) -> _Built:
    import copy

    from foundry.compression.quantize import quantize_linears

    model = copy.deepcopy(parent.model).cpu()
    count = quantize_linears(model)
    if count == 0:
        raise _NotApplicable("the model has no Linear layers to quantize")
    model.eval()
    return _Built(
        "int8",
        model,
        model.state_dict(),
        {"method": "int8", "linear_layers": count, "scheme": "per-channel int8 weights, "
         "per-row dynamic int8 activations"},
    )


def _onnx(
    parent: Any, eval_enc: dict[str, torch.Tensor], out_dir: Path, *, quantized: bool
) -> _Built:
    from foundry.compression.onnx import OnnxRunner, export_onnx, quantize_onnx

    example = {k: v[:BATCHES[-1]] for k, v in eval_enc.items() if k != "target"}
    fp32 = out_dir / "model.onnx"
    if not fp32.is_file():  # onnx and onnx_int8 share one export
        exported = export_onnx(parent.model.cpu().eval(), example, fp32)
        info = {
            "input_names": exported.input_names,
            "max_abs_diff": exported.max_abs_diff,
            "opset": exported.opset,
        }
        (out_dir / "model.onnx.json").write_text(json.dumps(info))
    info = json.loads((out_dir / "model.onnx.json").read_text())
    path = fp32
    if quantized:
        path = quantize_onnx(fp32, out_dir / "model.int8.onnx")
    runner = OnnxRunner(path, info["input_names"])
    method = "onnx_int8" if quantized else "onnx"
    return _Built(
        method,
        runner,
        {},
        {
            "method": method,
            "file": "model.onnx",
            "input_names": info["input_names"],
            "opset": info["opset"],
            "export_max_abs_diff": info["max_abs_diff"],
        },
        files={"model.onnx": path},
    )


def _finetune_config(cfg: FoundryConfig, epochs: int, lr: float | None) -> Any:
    train = cfg.train
    optimizer = train.optimizer.model_copy(update={"lr": lr or train.optimizer.lr / 10})
    return train.model_copy(update={"epochs": epochs, "optimizer": optimizer})


def _prune(
    parent: Any,
    cfg: FoundryConfig,
    config: CompressConfig,
    splits: Any,
    out_dir: Path,
    say: Reporter,
    augment: Any = None,
) -> _Built:
    import copy

    from foundry.compression.prune import prune_model
    from foundry.evaluation.metrics import compute_metrics
    from foundry.training import fit

    if cfg.model.type not in ("mlp", "cnn"):
        raise _NotApplicable(
            f"structured pruning handles mlp and cnn models, not {cfg.model.type}"
        )
    amount = config.prune.amount
    new_config, model = prune_model(
        copy.deepcopy(parent.model).cpu(),
        cfg.model,
        amount,
        schema=parent.preprocessor.schema,
        n_outputs=int(parent.manifest["n_outputs"]),
    )
    training = None
    if config.prune.finetune_epochs:
        pre = parent.preprocessor
        train_enc = pre.transform(pre.prepare(splits.train))
        val_enc = pre.transform(splits.val) if len(splits.val) else None
        train_cfg = _finetune_config(cfg, config.prune.finetune_epochs, config.prune.finetune_lr)
        fitted = fit(
            model,
            train_enc,
            val_enc,
            train_cfg,
            parent.task,
            out_dir / "prune",
            n_outputs=int(parent.manifest["n_outputs"]),
            progress=False,
            augment=augment,
            metric_fn=lambda y, out: compute_metrics(parent.task, y, out),
            log=say.info if not say.quiet else None,
        )
        training = {"epochs_run": fitted.epochs_run, "best_epoch": fitted.best_epoch,
                    "train": train_cfg.model_dump(mode="json")}
    model.eval()
    return _Built(
        "prune",
        model,
        model.state_dict(),
        {"method": "prune", "amount": amount,
         "finetune_epochs": config.prune.finetune_epochs},
        model_config=new_config,
        training=training,
    )


def _distill(
    parent: Any,
    cfg: FoundryConfig,
    config: CompressConfig,
    splits: Any,
    out_dir: Path,
    registry: Registry,
    say: Reporter,
    augment: Any = None,
) -> _Built:
    from foundry.compression.distill import build_student, distill
    from foundry.predictor import Predictor

    spec = config.distill
    teacher = parent
    if spec.teacher is not None:
        teacher_record = registry.resolve(spec.teacher)
        teacher = Predictor.from_package(registry.load(teacher_record.ref), ref=teacher_record.ref)
        same = teacher.task.to_dict() == parent.task.to_dict()
        if not same or teacher.input_columns != parent.input_columns:
            raise ConfigError(
                f"compress.distill.teacher {teacher.ref} predicts another target or reads "
                f"other columns than {parent.ref}: a teacher must share the task and inputs"
            )
    torch.manual_seed(cfg.train.seed)
    student = build_student(spec.student, teacher)
    pre = teacher.preprocessor
    train_enc = pre.transform(pre.prepare(splits.train))
    val_enc = pre.transform(splits.val) if len(splits.val) else None
    train_cfg = cfg.train.model_copy(update={"epochs": spec.epochs or cfg.train.epochs})
    fitted = distill(
        teacher.model.cpu().eval(),
        student,
        train_enc,
        val_enc,
        train_cfg,
        teacher.task,
        out_dir / "distill",
        n_outputs=int(teacher.manifest["n_outputs"]),
        alpha=spec.alpha,
        temperature=spec.temperature,
        progress=False,
        log=say.info if not say.quiet else None,
        augment=augment,
    )
    student.eval()
    return _Built(
        "distill",
        student,
        student.state_dict(),
        {"method": "distill", "teacher": teacher.ref, "alpha": spec.alpha,
         "temperature": spec.temperature},
        model_config=spec.student,
        training={"epochs_run": fitted.epochs_run, "best_epoch": fitted.best_epoch,
                  "train": train_cfg.model_dump(mode="json")},
    )


def _sparsity(parent: Any, config: CompressConfig) -> _Built:
    import copy

    from foundry.compression.prune import magnitude_prune

    model = copy.deepcopy(parent.model).cpu().eval()
    report = magnitude_prune(model, config.prune.amount)
    return _Built(
        "sparsity",
        model,
        model.state_dict(),
        {"method": "sparsity", **report},
        notes=f"{report['sparsity']:.0%} of weights zero; dense kernels run no faster",
    )


# ------------------------------------------------------------------- registering


def _register(
    registry: Registry,
    parent_ref: str,
    manifest: dict[str, Any],
    variant: _Built,
    cfg: FoundryConfig,
    metrics: dict[str, Any],
    run_dir: Path,
) -> str:
    """Register one variant; `run_dir` (this compress run's folder, compress.json's) is
    recorded in the index: the report and dashboard read no other folder outside the
    home."""
    new_manifest = {
        k: v for k, v in manifest.items() if k not in ("name", "version", "parent", "created_at")
    }
    new_manifest["compression"] = {**variant.compression, "parent": parent_ref}
    new_manifest["created_at"] = datetime.now(timezone.utc).isoformat()
    if variant.model_config is not None:
        new_cfg = cfg.model_copy(update={"model": variant.model_config})
        new_manifest["config"] = new_cfg.model_dump(mode="json")
    if variant.training is not None:
        new_manifest["training"] = variant.training
        # The parent's temperature, fairness thresholds and importances were fitted to
        # the parent's outputs, not to a retrained network's.
        for section in ("calibration", "fairness", "explain"):
            new_manifest.pop(section, None)
    record = registry.register(
        cfg.name,
        weights={k: v.detach().cpu().contiguous() for k, v in variant.weights.items()},
        manifest=new_manifest,
        metrics=metrics,
        parent=parent_ref,  # card.md is rendered from card.json, compression included
        tags=[variant.method],
        description=f"{variant.method} variant of {parent_ref}",
        files=variant.files or None,
        run_dir=run_dir,
    )
    return record.ref


# ------------------------------------------------------------------- measuring


def _parameters(network: Any) -> int:
    if isinstance(network, torch.nn.Module):
        tensors = {id(t): t for t in (*network.parameters(), *network.buffers())}
        return int(sum(t.numel() for t in tensors.values() if t.dtype != torch.bool))
    return int(network.num_parameters())


def _deltas(metrics: dict[str, Any], parent: dict[str, Any]) -> dict[str, float]:
    return {
        k: round(float(v) - float(parent[k]), 6)
        for k, v in metrics.items()
        if isinstance(v, (int, float))
        and not isinstance(v, bool)
        and isinstance(parent.get(k), (int, float))
        and np.isfinite(v)
    }


def _select(
    variants: list[Variant],
    budget: float | None,
    classification: bool,
    *,
    perplexity: bool = False,
) -> tuple[str | None, str]:
    """The fastest variant whose quality drop is within `budget`. Speed is the geometric
    mean of its latency ratios to the parent at the batch sizes both were timed at (1 and
    64; a language model's 1 and 8), end to end when both were measured so (`timed`);
    it must be below 1.

    The drop is accuracy (R² for regressors) lost, in points; with `perplexity` (language
    models) it is the relative perplexity increase, variant / parent - 1."""
    if budget is None:
        return None, "no max_accuracy_drop given: nothing tagged"
    key = "perplexity" if perplexity else "accuracy" if classification else "r2"
    limit = (
        f"a {budget:.2%} perplexity increase" if perplexity else f"{key} {budget} below the parent"
    )
    parent = variants[0]
    candidates = []
    for v in variants[1:]:
        if v.method == "sparsity" or key not in v.metrics or v.metrics[key] is None:
            continue
        if perplexity:
            drop = float(v.metrics[key]) / float(parent.metrics[key]) - 1
        else:
            drop = float(parent.metrics[key]) - float(v.metrics[key])
        speed = _speed(v, parent)
        if drop <= budget + 1e-9 and speed < 1:
            candidates.append((speed, v))
    if not candidates:
        return None, f"no variant is faster than the parent within {limit}: nothing tagged"
    speed, best = min(candidates, key=lambda c: c[0])
    how = "end to end" if best.end_to_end_ms and parent.end_to_end_ms else "model only"
    return best.ref, (
        f"fastest within {limit}: {best.method} ({best.ref}), "
        f"{1 / speed:.2f}x the parent's speed ({how}), {key} {best.deltas.get(key, 0):+.4f}"
    )


def _speed(variant: Variant, parent: Variant) -> float:
    """Geometric mean of variant / parent latency over the batch sizes both have: end to
    end when both were measured so, else the network alone. Below 1: faster."""
    mine, theirs = (
        (variant.end_to_end_ms, parent.end_to_end_ms)
        if variant.end_to_end_ms and parent.end_to_end_ms
        else (variant.latency_ms, parent.latency_ms)
    )
    ratios = [mine[b] / theirs[b] for b in theirs if b in mine]
    return float(np.prod(ratios) ** (1 / len(ratios)))


# ------------------------------------------------------------------- reporting


def comparison_table(result: CompressResult, *, metrics: int = 2) -> Any:
    """The table as printed: size, parameters, latency at every batch size the variants
    were timed at (the network alone, and end to end when measured), the speed-up over
    the parent (end to end when measured: what a request gains), throughput and the first
    `metrics` metrics with their change from the parent (compress.json has them all). A
    language model's latencies are per generated token and its throughput is in tokens
    (its metrics hold a perplexity)."""
    from rich.table import Table

    parent = result.variants[0]
    first = parent.metrics
    names = [
        k for k, v in first.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    ][:metrics]
    batches = sorted({b for v in result.variants for b in v.latency_ms}, key=int)
    per_token = "perplexity" in first
    e2e = bool(parent.end_to_end_ms)
    unit = "ms/token" if per_token else "ms"
    latency = [f"{'model ' if e2e else ''}b={b} {unit}" for b in batches]
    whole = [f"end-to-end b={b} ms" for b in batches] if e2e else []
    speedup = f"speed-up{' end-to-end' if e2e else ''} b={'/'.join(batches)}"
    rate = "tokens/s" if per_token else "rows/s"
    table = Table(title=f"compress {result.parent}  (* = tagged {TAG})")
    for column in ("variant", "ref", "size", "params", *latency, *whole, speedup, rate, *names):
        table.add_column(column, justify="left" if column in ("variant", "ref") else "right")
    for v in result.variants:
        ratios = [
            f"{parent.timed[b] / v.timed[b]:.2f}x" if b in v.timed and v.timed[b] else "n/a"
            for b in batches
        ]
        cells = [
            v.method + (" *" if v.ref == result.tagged else ""),
            v.ref,
            _size(v.size_bytes),
            f"{v.parameters:,}",
            *(f"{v.latency_ms[b]:.3f}" if b in v.latency_ms else "n/a" for b in batches),
            *(f"{v.end_to_end_ms[b]:.3f}" if b in v.end_to_end_ms else "n/a" for b in batches
              if e2e),
            " / ".join(ratios),
            f"{v.throughput:,.0f}",
        ]
        for name in names:
            value, delta = v.metrics.get(name), v.deltas.get(name)
            digits = 0 if isinstance(value, int) else 4  # counts (tokens scored) as counts
            text = "n/a" if value is None else f"{value:,.{digits}f}"
            if v.method != "parent" and delta is not None:
                text += f" ({delta:+,.{digits}f})"
            cells.append(text)
        table.add_row(*cells)
    return table


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _write_report(
    result: CompressResult, out_dir: Path, data: str, seconds: float, units: dict[str, str]
) -> None:
    payload = {
        "parent": result.parent,
        "tagged": result.tagged,
        "selection": result.selection,
        "skipped": result.skipped,
        "data": data,
        "seconds": round(seconds, 3),
        "batch_sizes": [int(b) for b in result.variants[0].latency_ms],
        **units,
        "variants": [asdict(v) for v in result.variants],
    }
    (out_dir / "compress.json").write_text(json.dumps(payload, indent=2, default=str))
    from rich.console import Console

    with tempfile.TemporaryFile("w+") as buffer:
        Console(file=buffer, width=400, no_color=True).print(
            comparison_table(result, metrics=100)  # every metric
        )
        buffer.seek(0)
        table = buffer.read()
    (out_dir / "compress.md").write_text(
        f"# compress {result.parent}\n\nmeasured on {data}, one process; timings warmed "
        "up and interleaved (foundry.compression.timing): the network alone (model) and a "
        "whole /predict request's work from raw JSON records (end-to-end), whose ratio to "
        f"the parent is the speed-up\n\n```\n{table}```\n\n{result.selection}\n"
    )

