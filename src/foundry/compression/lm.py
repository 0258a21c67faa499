"""`foundry compress` for GPT language models: an int8 variant, registered with its parent
and measured against it in one process.

    result = compress("gpt-corpus:1", CompressConfig(methods=["int8"], max_accuracy_drop=0.02))

Read top to bottom: load the parent GPT and its held-out text again, build the int8
variant (every Linear of the blocks in int8; the head, tied to the token embedding by
default, stays fp32), register it, then score both on the same tokens (loss, perplexity)
and time greedy generation round-robin at batch 1 and 8, print and save the table, and
tag the variant `name:compressed` when it is faster within the perplexity budget.

What the numbers mean:

    latency_ms["1"], ["8"]   median milliseconds per generated token of one sequence at
                             batch 1 and 8 (one decoding step of the batch; the prompt's
                             forward pass is spread over the tokens, as a client sees it)
    throughput               tokens generated per second at batch 8, all sequences
    metrics                  perplexity, loss (nats per token) and tokens scored
    max_accuracy_drop        read as the relative perplexity increase allowed:
                             0.01 = the variant's perplexity at most 1% above the parent's
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from foundry.compression.stage import (
    CompressResult,
    Variant,
    _Built,
    _deltas,
    _register,
    finish,
    report_dir,
)
from foundry.compression.timing import round_robin
from foundry.config.schema import CompressConfig, FoundryConfig, GenerationConfig
from foundry.console import Reporter
from foundry.errors import DataError, ModelError
from foundry.lm.evaluate import encode_as_trained
from foundry.registry import ModelRecord, Package, Registry

__all__ = ["GENERATION_BATCHES", "compress_gpt"]

GENERATION_BATCHES = (1, 8)
"""Prompts generated at once when timing: one chat request, and a small batch of them."""
PROMPT_TOKENS = 8
"""Tokens of held-out text each timing prompt starts with."""
MAX_TOKENS = 32
"""Tokens generated per prompt when timing (fewer when the context has less room)."""
METHOD_FOR_LMS = "int8"


def compress_gpt(
    record: ModelRecord,
    package: Package,
    config: CompressConfig | None,
    *,
    registry: Registry,
    out_dir: Path | None,
    say: Reporter,
) -> CompressResult:
    """Build, register and measure the int8 variant of the GPT in `package` (`record` is
    its registry entry). `config` None: the compress section of its training config;
    `out_dir` None: `<output_dir>/<name>-compress-<time>` next to the training config."""
    from foundry.config.load import LoadedConfig
    from foundry.lm.gpt_model import load_gpt_package

    manifest = package.manifest
    done = (manifest.get("compression") or {}).get("method")
    if done is not None:
        raise ModelError(
            f"model {record.ref} is already a compressed variant ({done})",
            hint=f"compress its parent {manifest.get('parent')} instead",
        )
    cfg = FoundryConfig.model_validate(manifest["config"])
    config = config or cfg.compress
    started = time.perf_counter()
    parent = load_gpt_package(package, record.ref)

    # ---- data: the held-out split of the model's own text again, or config.data
    base_dir = Path((manifest.get("data") or {}).get("base_dir") or Path.cwd())
    loaded = LoadedConfig(cfg, base_dir)
    examples, eval_name = _held_out(loaded, config, record.ref)
    tokens = encode_as_trained(examples, parent.tokenizer, package)
    if not tokens.n_targets:
        raise DataError(f"{eval_name}: no target tokens to score the language model on")
    prompts = _prompts(examples, parent.tokenizer, cfg, parent.context_length)
    say.info(
        f"compressing {record.ref}: measured on {eval_name} ({len(examples)} "
        f"{'documents' if examples.kind == 'corpus' else 'conversations'}, "
        f"{tokens.n_targets} tokens)"
    )

    out_dir = report_dir(out_dir, base_dir, cfg)

    # ---- build and register: int8 is the one method for language models
    reason = f"{METHOD_FOR_LMS} is the method for language models"
    skipped = {m: reason for m in config.methods if m != METHOD_FOR_LMS}
    for method in skipped:
        say.warn(f"{method}: {reason}")
    models: list[tuple[str, Any, str, str]] = [("parent", parent.model, record.ref, "")]
    built = None
    if METHOD_FOR_LMS in config.methods:
        say.info(f"building {METHOD_FOR_LMS} ...")
        built = _int8(parent.model, package)
        models.append((built.method, built.network, "", built.notes))  # ref: registered below

    # ---- measure everything in this process: perplexity, then round-robin timings
    from foundry.lm.train import evaluate_tokens, exp_loss

    scored = {}
    for method, model, _, _ in models:
        loss, count = evaluate_tokens(model, tokens, batch_size=cfg.train.batch_size)
        scored[method] = {"perplexity": exp_loss(loss), "loss": loss, "tokens": count}
    timings = _time_generation(
        [model for _, model, _, _ in models], parent.tokenizer, prompts, config.repeats
    )
    if built is not None:  # registered with what was measured
        ref = _register(registry, record.ref, manifest, built, cfg, scored[built.method], out_dir)
        models[1] = (built.method, built.network, ref, built.notes)
        say.info(f"registered {ref} ({built.method})")
    largest = str(GENERATION_BATCHES[-1])
    variants = [
        Variant(
            method=method,
            ref=ref,
            size_bytes=registry.resolve(ref).size_bytes,
            parameters=_stored_numbers(model),
            latency_ms=latency,
            throughput=round(GENERATION_BATCHES[-1] / latency[largest] * 1000, 1),
            metrics=scored[method],
            deltas=_deltas(scored[method], scored["parent"]),
            notes=notes,
        )
        for (method, model, ref, notes), latency in zip(models, timings, strict=True)
    ]

    # ---- choose: faster than the parent within the relative perplexity budget
    return finish(
        variants,
        parent_ref=record.ref,
        name=cfg.name,
        registry=registry,
        budget=config.max_accuracy_drop,
        classification=False,
        perplexity=True,
        skipped=skipped,
        out_dir=out_dir,
        data=eval_name,
        started=started,
        say=say,
        units={
            "latency": "median milliseconds per generated token of one sequence (greedy, "
            f"{MAX_TOKENS} tokens at most after {PROMPT_TOKENS}-token prompts)",
            "throughput": f"tokens generated per second at batch {GENERATION_BATCHES[-1]}",
            "selection_metric": "relative perplexity increase",
        },
    )


# ------------------------------------------------------------------------ data


def _held_out(loaded: Any, config: CompressConfig, ref: str) -> tuple[Any, str]:
    """(LMExamples, what they are called in the report): `config.data`, or the training
    config's `evaluate.split` (val, then train when it is empty)."""
    from foundry.lm.data import load_lm_data, read_lm_file

    cfg = loaded.config
    if config.data is not None:
        path = loaded.resolve(config.data)  # relative: to the training config's folder
        assert path is not None
        return read_lm_file(path, cfg.lm), str(config.data)
    try:
        data = load_lm_data(loaded)
    except DataError as exc:
        raise DataError(
            f"cannot read {ref}'s training data again to measure its variants: {exc.message}",
            hint="give the held-out text with --data (compress.data)",
        ) from exc
    splits = {"test": data.test, "val": data.val, "train": data.train}
    for name in (cfg.evaluate.split, "val", "train"):
        if len(splits[name]):
            return splits[name], name
    raise DataError(f"{ref}: its data has no documents to measure on")  # (split refuses it)


def _prompts(
    examples: Any, tokenizer: Any, cfg: FoundryConfig, context_length: int
) -> list[list[int]]:
    """GENERATION_BATCHES[-1] prompts: the first PROMPT_TOKENS tokens of held-out
    documents (or rendered conversations), reused in turn when there are fewer."""
    from foundry.lm.data import tokenizer_texts

    length = max(1, min(PROMPT_TOKENS, context_length // 2))
    prompts = []
    for text in tokenizer_texts(examples, cfg.lm.chat_template):
        ids = tokenizer.encode(text)[:length]
        if ids:
            prompts.append(ids)
        if len(prompts) == GENERATION_BATCHES[-1]:
            break
    if not prompts:
        prompts = [[tokenizer.eos_id]]  # what precedes a new document in training
    return [prompts[i % len(prompts)] for i in range(GENERATION_BATCHES[-1])]


# ------------------------------------------------------------------------ building


def _int8(model: Any, package: Package) -> _Built:
    from foundry.compression.quantize import quantize_linears

    network = copy.deepcopy(model).cpu().eval()  # deepcopy keeps a tied head tied
    count = quantize_linears(network)
    notes = "head tied to the token embedding: stays fp32" if network.tied else ""
    return _Built(
        "int8",
        network,
        network.package_weights(network.state_dict()),
        {
            "method": "int8",
            "linear_layers": count,
            "scheme": "per-channel int8 weights, per-row dynamic int8 activations",
        },
        files={"tokenizer.json": package.path / "tokenizer.json"},
        notes=notes,
    )


def _stored_numbers(model: Any) -> int:
    """Numbers a package of `model` stores (int8 and float alike; a tied head once)."""
    return int(sum(t.numel() for t in model.package_weights(model.state_dict()).values()))


# ------------------------------------------------------------------------ timing


def _time_generation(
    models: list[Any], tokenizer: Any, prompts: list[list[int]], repeats: int
) -> list[dict[str, float]]:
    """Median milliseconds per generated token at each of GENERATION_BATCHES, greedy,
    every model timed in turn within each repeat (`timing.round_robin`: load on a shared
    machine slows them all alike). Stop tokens are ignored, so each call generates the
    same number of tokens whatever the model predicts."""
    from foundry.lm.generate import GenerationEngine

    context = models[0].context_length
    steps = min(MAX_TOKENS, context - max(len(p) for p in prompts))
    params = GenerationConfig(temperature=0, max_tokens=steps)
    engines = [
        GenerationEngine(
            model.step, tokenizer, context_length=context, stop_ids=(), pad_id=tokenizer.pad_id
        )
        for model in models
    ]
    batches = {size: prompts[:size] for size in GENERATION_BATCHES}
    calls = [
        {
            size: (lambda engine=engine, batch=batch: engine.generate_ids(batch, params))
            for size, batch in batches.items()
        }
        for engine in engines
    ]
    # one warm-up generation each: a generation is dozens of forwards already
    medians = round_robin(calls, repeats, warmup=1)
    return [{str(b): round(m[b] / steps, 4) for b in batches} for m in medians]
