"""Serving throughput, measured through a real `foundry serve` or on the model in process.

    served = load_served("adult:3", "tabular", registry)   # the object a server worker loads
    rows, source = prediction_records(served, data=None, manifest=manifest)   # validated
    cases = measure_server("adult:3", registry=registry, serve=serve, records=rows,
                           seconds=2.0)                   # LoadResult per client count
    rate = measure_predictions(served, rows, batch_size=64, seconds=2.0)   # records/s

`measure_server` (what `foundry cost` uses by default) registers a copy of the package in
a temporary FOUNDRY_HOME with a key on a plan without limits, starts `python -m foundry
serve` there (HTTP, JSON, keys, rate limits, metering, batching: the product) and drives
it with CLIENTS concurrent keep-alive clients, one record per request, as customers send
them (`foundry.serve.loadtest`). The user's registry, keys and usage are never touched;
the temporary home and the server are gone when it returns.

In process, what is timed is the work a server worker does per forward pass on its
batching thread: `ServedModel.predict_records` (PII scrubbing, encoding, the forward pass,
decoding into answer dicts) on records that went through the API's own `RecordValidator`.
It leaves out HTTP, JSON, keys, rate limits and metering, so it overstates what the API
answers (benchmarks/cost.py measures both). Language models: tokens generated per second
by `LanguageModel.generate`, one prompt at a time, as the model's serving thread runs
requests one after another; embedding models: input tokens per second of
`Embedder.embed`, one text at a time (both in process only).

PyTorch runs with the threads a server worker gets (`foundry.serve.app.inference_threads`)
while it is timed in process; the count is restored afterwards.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundry.errors import DataError, ModelError

if TYPE_CHECKING:
    from foundry.config.schema import ServeConfig
    from foundry.console import Reporter
    from foundry.registry import Registry
    from foundry.serve.loadtest import LoadResult

__all__ = [
    "CLIENTS",
    "GENERATED_TOKENS",
    "MAX_ROWS",
    "PROMPT_CHARS",
    "load_served",
    "measure",
    "measure_embedding",
    "measure_generation",
    "measure_predictions",
    "measure_server",
    "prediction_records",
    "prompts_for",
    "sandbox_home",
    "serving_kind",
    "torch_threads",
]

MAX_ROWS = 1024
"""Rows (prompts, texts) read for timing at most: enough to cycle through, small to encode."""
PROMPT_CHARS = 64
"""Language models: each timing prompt is the first this many characters of a document."""
GENERATED_TOKENS = 64
"""Language models: tokens generated per timed request (fewer when the context is short);
about the length of a short chat answer."""
WARMUP_CALLS = 2
"""Untimed calls first: the first ones allocate and pick kernels."""
MIN_CALLS = 3
"""Timed calls at least, however long `seconds` is."""
CLIENTS = (1, 8, 32)
"""Concurrent clients the server is measured at; the best is the machine's capacity. One
client is a lone request's path (batches of one); 32 keep the batcher's queue full."""
MEASURE_PLAN = "foundry-cost-measure"
"""The plan of the temporary key: no rate limit or quota a measurement could run into."""
_OWN_FILES = {"model.safetensors", "foundry.json", "metrics.json", "card.md", "card.json"}
"""Package files `Registry.register` writes itself; every other file is copied as is."""


def serving_kind(manifest: dict[str, Any]) -> str:
    """How `foundry serve` serves a package: `tabular` (mlp, cnn, text models) and `text`
    (fine-tuned Hugging Face classifiers / regressors) on /predict, counted in predictions;
    `language` (gpt, hf causal LM) and `embedding` on the OpenAI routes, counted in tokens;
    `recommend` on /recommend, counted in queries (a recommendation of k items)."""
    from foundry.lm.load import is_language_package

    if manifest.get("task") == "recommend":
        return "recommend"  # /recommend, one unit a query (as metered)
    if not is_language_package(manifest):
        return "tabular"
    task = (manifest.get("hf") or {}).get("task")
    if task in ("classification", "regression"):
        return "text"
    return "embedding" if task == "embedding" else "language"


def load_served(ref: str, kind: str, registry: Registry) -> Any:
    """The object a server worker loads for `ref` (see `foundry.serve.app.App.start`):
    a `ServedModel`, `ServedTextModel`, or the LanguageModel / Embedder itself."""
    if kind == "recommend":
        from foundry.serve.served_recommender import ServedRecommender

        return ServedRecommender.load(ref, registry=registry)
    if kind == "tabular":
        from foundry.serve.served_model import ServedModel

        return ServedModel.load(ref, registry=registry)
    if kind == "text":
        from foundry.predictor import load
        from foundry.serve.served_model import ServedTextModel

        return ServedTextModel.from_predictor(load(ref, registry=registry))
    from foundry.lm.load import load as load_lm

    return load_lm(ref, registry=registry)


# ----------------------------------------------------------------------------- data


def prediction_records(
    served: Any, *, data: Path | None, manifest: dict[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    """(validated records, where they came from): rows of `data`, else of the model's
    own validation split (then test, then train) read again as `foundry compress` does.
    Each record holds exactly the model's inputs and passed the API's validation."""
    from foundry.serve.errors import ApiError
    from foundry.serve.schemas import Records

    if data is not None:
        from foundry.data import read_table

        frame, source = read_table(data), str(data)
    else:
        frame, source = _own_split(manifest, served.ref)
    validator = served.validator
    missing = [name for name in validator.names if name not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(repr(m) for m in missing)}; model "
            f"{served.ref} needs its inputs {', '.join(validator.names)}"
        )
    if len(frame) == 0:
        raise DataError(f"{source}: no rows to time predictions on")
    frame = frame[validator.names].head(MAX_ROWS).copy()
    images = [s.name for s in validator.inputs if s.type == "image"]
    for name in images:  # image folders give file paths; the API takes base64
        frame[name] = [_base64_file(p, source) for p in frame[name]]
    items = json.loads(frame.to_json(orient="records"))  # NaN → null, as a client sends
    records = Records(items, "", True)
    try:
        validator.validate(records)
    except ApiError as exc:
        raise DataError(f"{source}: {exc.message}") from None
    return records.items, source


def recommend_queries(served: Any) -> tuple[list[dict[str, Any]], str]:
    """Queries of the model's own training users (up to MAX_ROWS, k = 10): what the
    served route answers most."""
    users = served.model.users[:MAX_ROWS]
    if not users:
        raise DataError(f"model {served.ref} has no training users to time queries for")
    return [{"user": u, "k": 10} for u in users], f"{len(users)} training users, k = 10"


def _own_split(manifest: dict[str, Any], ref: str) -> tuple[Any, str]:
    from foundry.config.load import LoadedConfig
    from foundry.config.schema import FoundryConfig
    from foundry.console import Reporter
    from foundry.data.dataset import load_splits
    from foundry.errors import FoundryError

    try:
        cfg = FoundryConfig.model_validate(manifest["config"])
        base_dir = Path((manifest.get("data") or {}).get("base_dir") or Path.cwd())
        splits, _ = load_splits(LoadedConfig(cfg, base_dir), Reporter(quiet=True))
    except (FoundryError, KeyError, ValueError) as exc:
        raise DataError(
            f"cannot read {ref}'s data again to time predictions on: {exc}",
            hint="give rows with --data FILE",
        ) from None
    for name in ("val", "test", "train"):
        split = getattr(splits, name)
        if len(split):
            return split, f"{cfg.data.path} ({name} split)"
    raise DataError(f"{ref}: its data has no rows", hint="give rows with --data FILE")


def _base64_file(value: Any, source: str) -> str:
    path = Path(str(value))
    if not path.is_file():
        raise DataError(f"{source}: image {value!r} is not a file")
    return base64.b64encode(path.read_bytes()).decode("ascii")


def prompts_for(
    lm: Any, *, data: Path | None, manifest: dict[str, Any]
) -> tuple[list[str], str]:
    """(texts, where they came from) for a language or embedding model: the first
    PROMPT_CHARS characters of each document (or rendered conversation) of `data` (a .txt
    corpus, or JSONL / CSV as training reads them), else of the model's held-out split."""
    from foundry.config.load import LoadedConfig
    from foundry.config.schema import FoundryConfig
    from foundry.errors import FoundryError
    from foundry.lm.data import load_lm_data, read_lm_file, tokenizer_texts

    cfg = FoundryConfig.model_validate(manifest["config"])
    if data is not None:
        examples, source = read_lm_file(data, cfg.lm), str(data)
    else:
        base_dir = Path((manifest.get("data") or {}).get("base_dir") or Path.cwd())
        try:
            splits = load_lm_data(LoadedConfig(cfg, base_dir))
        except FoundryError as exc:
            raise DataError(
                f"cannot read {lm.ref}'s data again to time generation on: {exc}",
                hint="give prompts with --data FILE (a .txt file of documents)",
            ) from None
        name = next((n for n in ("val", "test", "train") if len(getattr(splits, n))), "train")
        examples, source = getattr(splits, name), f"{cfg.data.path} ({name} split)"
    texts = []
    for text in tokenizer_texts(examples, cfg.lm.chat_template):
        if text.strip():
            texts.append(text.strip()[:PROMPT_CHARS])
        if len(texts) == MAX_ROWS:
            break
    if not texts:
        raise DataError(f"{source}: no text to time the language model on")
    return texts, source


# ------------------------------------------------------------------------- timing


def torch_threads(workers: int) -> Callable[[], None]:
    """Give PyTorch the threads one of `workers` server workers gets; returns the undo."""
    import torch

    from foundry.serve.app import inference_threads

    previous = torch.get_num_threads()
    torch.set_num_threads(inference_threads(workers))
    return lambda: torch.set_num_threads(previous)


def measure(work: Callable[[], int], seconds: float) -> float:
    """Units per second of `work` (one call → the units it processed), timed for at
    least `seconds` and MIN_CALLS calls after WARMUP_CALLS untimed ones."""
    for _ in range(WARMUP_CALLS):
        work()
    units, calls = 0, 0
    started = time.perf_counter()
    elapsed = 0.0
    while calls < MIN_CALLS or elapsed < seconds:
        units += work()
        calls += 1
        elapsed = time.perf_counter() - started
    if units <= 0 or elapsed <= 0:
        raise ModelError("the timed calls processed nothing: no throughput to measure")
    return units / elapsed


def measure_predictions(
    served: Any, records: list[dict[str, Any]], *, batch_size: int, seconds: float
) -> float:
    """Records per second of `served.predict_records` on batches of `batch_size` records
    taken in turn from `records` (repeated when there are fewer)."""
    n = len(records)
    batches = [
        [records[(start + i) % n] for i in range(batch_size)]
        for start in range(0, max(n, batch_size), batch_size)
    ]
    position = 0

    def work() -> int:
        nonlocal position
        batch = batches[position % len(batches)]
        position += 1
        served.predict_records(batch)
        return len(batch)

    return measure(work, seconds)


def measure_generation(lm: Any, prompts: list[str], *, seconds: float) -> float:
    """Generated tokens per second of `lm.generate`, one prompt per call (greedy, up to
    GENERATED_TOKENS tokens; the prompt's own forward pass is inside the time)."""
    from foundry.config.schema import GenerationConfig

    longest = max(lm.count_tokens(p) for p in prompts)
    room = lm.context_length - longest
    if room < 1:
        raise DataError(
            f"prompts of {longest} tokens leave no room in {lm.ref}'s context of "
            f"{lm.context_length} tokens"
        )
    params = GenerationConfig(temperature=0, max_tokens=min(GENERATED_TOKENS, room))
    position = 0

    def work() -> int:
        nonlocal position
        prompt = prompts[position % len(prompts)]
        position += 1
        [completion] = lm.generate([prompt], params)
        return completion.completion_tokens

    return measure(work, seconds)


def measure_embedding(embedder: Any, texts: list[str], *, seconds: float) -> float:
    """Input tokens per second of `embedder.embed`, one text per call."""
    position = 0

    def work() -> int:
        nonlocal position
        text = texts[position % len(texts)]
        position += 1
        return int(sum(embedder.embed([text])[1]))

    return measure(work, seconds)


# ------------------------------------------------------------------------- server


def measure_server(
    ref: str,
    *,
    registry: Registry,
    serve: ServeConfig,
    records: list[dict[str, Any]],
    seconds: float,
    clients: tuple[int, ...] = CLIENTS,
    say: Reporter | None = None,
    route: str = "predict",
) -> list[LoadResult]:
    """Drive a real `foundry serve` of `ref` (a temporary copy, `sandbox_home`) with
    each count of `clients` concurrent keep-alive clients for `seconds`, one of
    `records` per request (JSON bodies prepared once, sent in turn). The server runs
    `serve`'s workers, batching and limits. ModelError when the server does not start or
    answers any request with an error (with its status and body)."""
    from foundry.console import Reporter
    from foundry.serve.loadtest import Server, free_port, predict_request, run_load, serve_command

    say = say or Reporter(quiet=True)
    work = Path(tempfile.mkdtemp(prefix="foundry-cost-"))
    try:
        served_ref, key, config = sandbox_home(ref, registry=registry, serve=serve,
                                               home=work / "home")
        env = {**os.environ, "FOUNDRY_HOME": str(work / "home")}
        for name in ("FOUNDRY_DATABASE_URL", "FOUNDRY_ADMIN_TOKEN"):  # the temp SQLite
            env.pop(name, None)
        port = free_port()
        command = serve_command(served_ref, port, workers=serve.workers, config=config)
        say.info(f"starting `foundry serve` on a temporary copy of {ref} "
                 f"({serve.workers} worker(s), 127.0.0.1:{port})")
        model = served_ref.split(":")[0]
        requests = [
            predict_request(port, model, json.dumps(r).encode(), key, route=route)
            for r in records
        ]
        results = []
        with Server(command, env=env, log=work / "server.log", workers=serve.workers,
                    cwd=work):
            for count in clients:
                result = run_load(port, requests, clients=count, seconds=seconds)
                if result.errors or not result.ok:
                    raise ModelError(
                        f"foundry serve answered {sum(result.errors.values())} of "
                        f"{result.ok + sum(result.errors.values())} requests at {count} "
                        f"client(s) with errors {result.errors}: {result.first_error}",
                        hint="a throughput of failed requests is no serving cost; check the "
                        "rows (--data) and the serve: section",
                    )
                say.info(f"  {count:>2} client(s): {result.per_second:,.1f} predictions/s, "
                         f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms")
                results.append(result)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sandbox_home(
    ref: str, *, registry: Registry, serve: ServeConfig, home: Path
) -> tuple[str, str, Path]:
    """A new FOUNDRY_HOME at `home` (its own SQLite database, whatever
    FOUNDRY_DATABASE_URL says) holding a copy of `ref`'s package under the same name and
    a key on MEASURE_PLAN. Returns (the copy's reference, the key, a config file whose
    `serve:` section is `serve` plus that plan)."""
    from foundry.config.schema import PlanConfig
    from foundry.registry import Registry
    from foundry.serve.gate import Gate

    record = registry.resolve(ref)
    package = registry.load(record.ref)  # checked against the index, as serving checks it
    files: dict[str, str | bytes | Path] = {}
    for path in sorted(record.path.rglob("*")):
        name = path.relative_to(record.path).as_posix()
        if path.is_file() and name not in _OWN_FILES:  # tokenizer, hf/, an .onnx graph
            files[name] = path
    home.mkdir(parents=True)
    url = f"sqlite:///{(home / 'foundry.db').as_posix()}"
    copy = Registry(home, url=url)
    try:
        copied = copy.register(record.name, weights=package.weights,
                               manifest=package.manifest, metrics=package.metrics,
                               card=package.card, files=files,
                               description=record.description)
    finally:
        copy.close()
    unlimited = PlanConfig(included_units=10**15, requests_per_minute=10**9,
                           max_records_per_request=10**6)
    settings = serve.model_copy(update={"plans": {**serve.plans, MEASURE_PLAN: unlimited},
                                        "models": []})
    gate = Gate(settings.all_plans(), home=home, url=url)
    try:
        key = gate.create_key("foundry cost", MEASURE_PLAN).key
    finally:
        gate.close()
    config = home / "serve.yaml"  # JSON is YAML
    config.write_text(json.dumps({"serve": settings.model_dump(mode="json")}, indent=2))
    return copied.ref, key, config
