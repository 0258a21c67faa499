"""Language-model serving under load, through the real server: continuous batching
against the one-at-a-time engine, and against transformers' own continuous batching.

    python benchmarks/lm_serve.py                      # builds both models, a table
    python benchmarks/lm_serve.py --streams 1,4,16 --tokens 64 --json
    python benchmarks/lm_serve.py --work /tmp/lmbench  # reuse models built by a former run
    python benchmarks/lm_serve.py --device cuda --dtype bf16   # on a GPU (serve.lm.device/dtype)

Models (built once under --work, nothing downloaded):
- the example GPT: examples/gpt_corpus.yaml (4 layers x 128, vocab 2048, context 128)
  trained for one epoch on the corpus's first 400 docstrings (`data.path=...
  train.epochs=1`): the architecture, hence the speed, is the example's; the full
  training takes minutes that a load test does not need;
- a tiny Llama: `transformers.LlamaConfig` (4 layers x 128, 4 heads, 2 key/value heads,
  context 128), random weights, a byte-level BPE tokenizer trained on the same corpus,
  saved locally and registered with `foundry train` (one epoch on the same 400 docstrings).

For each model and each engine, `foundry serve` runs in a subprocess on 127.0.0.1 with
`serve.lm.max_concurrent: 32` (continuous batching) or `1` (one request at a time), and
N clients (N in --streams) each stream a completion of --tokens tokens (sampled, seeded,
`stream_options.include_usage`) at once, --rounds times. Reported per N: aggregate
tokens/s (completion tokens of all streams / wall time from the first request to the
last `[DONE]`), time to first token p50/p99 (request sent → first text chunk) and
inter-token latency p50/p99 (gaps between text chunks of a stream). The clients run in a
separate process that imports httpx only, as a user's would (see `_load_in_client`).

transformers' continuous batching (`model.generate_batch`, transformers >= 4.56; it runs
on CPU) decodes the same Llama weights, the same prompts and --tokens in-process, N at
once; its tokens/s has no HTTP in it, so the comparison flatters it.

Each engine is measured in its own server, one after the other; the machine is shared,
so only ratios from one run mean anything.

--baseline-src DIR: also measure the continuous-batching server of another checkout
(its `src/` folder, e.g. `git worktree add /tmp/base main`), as engine `baseline`,
alternating with this tree's server --repeats times: a before/after in one run.

Each row also says where the CPU went per generated token: the server's engine thread,
its event loop, the whole server process and the load client (`_load_in_client`).

--engines: continuous (the default engine, `serve.lm.engine: process`),
continuous-thread (the same engine in a thread of the server: `engine: thread`),
one-at-a-time (`max_concurrent: 1`). --models: which served models to load and measure.

--probe: while the streams run, another client times a light request (GET /v1/models)
every 20 ms: how long the server's event loop keeps other customers waiting.

--engine-cpu: also the engine alone, in-process (no HTTP), for this tree and the
baseline: N prompts x --tokens of --engine-model (tiny-llama or gpt-corpus) submitted
at once to `continuous_batcher`, in tokens
per second of the engine thread's CPU time (`time.thread_time` around each step), a
measure a busy shared machine disturbs far less than the wall clock.

--device / --dtype: where the served models run (`serve.lm.device`, `serve.lm.dtype`)
and where transformers' figure and the prefill timing run, so every figure of a run is on
the same device and dtype.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from foundry.serve.loadtest import free_port

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "Return the number of",
    "This module provides",
    "Raise ValueError if",
    "The default is",
    "Create a new",
    "If the file",
    "A list of",
    "Read the data",
]
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
FULL_DISTRIBUTION = 10**6
"""A top_k above any vocabulary: sampling skips the cut (foundry.lm.generate)."""
PLAN = {
    "bench": {"included_units": 10**9, "requests_per_minute": 10**6, "tokens_per_minute": 10**9}
}


def _run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip()


def _foundry(env: dict[str, str], cwd: Path, *args: str) -> str:
    return _run([sys.executable, "-m", "foundry", *args], env, cwd)


# ------------------------------------------------------------------------- models


def build_models(work: Path, env: dict[str, str]) -> None:
    """The example GPT and a tiny Llama, registered under `work/home` (once)."""
    if (work / "built").exists():
        return
    corpus = ROOT / "examples" / "data" / "lm_corpus.jsonl"
    if not corpus.exists():
        _run([sys.executable, str(ROOT / "examples" / "make_lm_data.py"), "corpus"], env, ROOT)
    docs = work / "docs.jsonl"
    lines = corpus.read_text(encoding="utf-8").splitlines()[:400]
    docs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _foundry(
        env,
        work,
        "train",
        str(ROOT / "examples" / "gpt_corpus.yaml"),
        f"data.path={docs}",
        "train.epochs=1",
        f"output_dir={work / 'runs'}",
        "-q",
    )
    llama = _tiny_llama(work, corpus)
    config = {
        "name": "tiny-llama",
        "data": {"path": str(docs)},
        "model": {"type": "hf", "name_or_path": str(llama), "task": "causal_lm", "max_length": 128},
        "train": {"epochs": 1, "batch_size": 8},
        "output_dir": str(work / "runs"),
    }
    (work / "llama.yaml").write_text(yaml.safe_dump(config))
    _foundry(env, work, "train", "llama.yaml", "-q")
    (work / "built").write_text("")


def _tiny_llama(work: Path, corpus: Path) -> Path:
    """LlamaConfig with random weights and a BPE tokenizer trained on the corpus."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from foundry.lm.tokenizer import train_byte_level_bpe

    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()[:2000]]
    # min_frequency=0: tokenizers' own default, which this benchmark's figures were made with
    bpe = train_byte_level_bpe(texts, 2048, ["<s>", "</s>", "<pad>"], min_frequency=0)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=128,
    )
    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    path = work / "tiny-llama-base"
    LlamaForCausalLM(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


# ------------------------------------------------------------------------- load


async def _stream(
    client: httpx.AsyncClient, model: str, prompt: str, tokens: int, seed: int
) -> dict:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0.8,
        # the whole distribution (no top-k): under the example's `top_k: 40` the one-epoch
        # GPT picks its end-of-text token after ~16 tokens on average, so per-request
        # costs (HTTP, key check, prefill) would swamp the decoding the issue measured
        # ("streaming completions of up to 64 tokens"); from the whole distribution it
        # writes ~58 of 64. The tokens per stream are reported with each figure.
        "top_k": FULL_DISTRIBUTION,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    chunks: list[float] = []
    usage = 0
    async with client.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            data = json.loads(line[6:])
            if data.get("usage"):
                usage = data["usage"]["completion_tokens"]
            elif data["choices"] and data["choices"][0]["text"]:
                chunks.append(time.perf_counter())
    return {"sent": sent, "chunks": chunks, "tokens": usage, "end": time.perf_counter()}


async def _load(
    url: str, key: str, model: str, n: int, tokens: int, rounds: int, probe: bool = False
) -> dict:
    limits = httpx.Limits(max_connections=n + 4)
    headers = {"authorization": f"Bearer {key}"}
    probes: list[float] = []
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=600, limits=limits
    ) as client:
        await _stream(client, model, PROMPTS[0], 8, 0)  # warm-up
        results, wall, total = [], 0.0, 0
        for r in range(rounds):
            start = time.perf_counter()
            done = asyncio.Event()
            prober = asyncio.create_task(_probe(client, done, probes)) if probe else None
            batch = await asyncio.gather(
                *(
                    _stream(client, model, PROMPTS[i % len(PROMPTS)], tokens, 1000 * r + i)
                    for i in range(n)
                )
            )
            wall += time.perf_counter() - start
            done.set()
            if prober is not None:
                await prober
            total += sum(b["tokens"] for b in batch)
            results += batch
    ttft = [b["chunks"][0] - b["sent"] for b in results if b["chunks"]]
    itl = [
        b["chunks"][i + 1] - b["chunks"][i] for b in results for i in range(len(b["chunks"]) - 1)
    ]
    return {
        "streams": n,
        "tokens_per_s": total / wall,
        "tokens": total,
        "tokens_per_stream": total / (n * rounds),
        "ttft_p50_ms": _pct(ttft, 50),
        "ttft_p99_ms": _pct(ttft, 99),
        "itl_p50_ms": _pct(itl, 50),
        "itl_p99_ms": _pct(itl, 99),
        **({"probe_p50_ms": _pct(probes, 50), "probe_p99_ms": _pct(probes, 99)} if probe else {}),
    }


async def _probe(client: httpx.AsyncClient, done: asyncio.Event, latencies: list[float]) -> None:
    """Another customer's light request (GET /v1/models, a key check and the model list)
    every 20 ms while the streams run: how long the server's event loop keeps it waiting."""
    while not done.is_set():
        sent = time.perf_counter()
        (await client.get("/v1/models")).raise_for_status()
        latencies.append(time.perf_counter() - sent)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.02)


def _load_in_client(
    url: str,
    key: str,
    model: str,
    n: int,
    tokens: int,
    rounds: int,
    server_pid: int,
    probe: bool = False,
) -> dict:
    """`_load` in a fresh Python process that imports httpx and nothing heavy, as a
    user's client would be. Run in this process, which has imported torch, transformers
    and the server's modules to build the models, the client's own garbage collector
    stalled it for 0.3-0.8 s (a full pass over those modules' objects) in the middle of
    a burst: those stalls were most of the time-to-first-token p99 measured before.

    Beside the figures, where the CPU went per generated token (µs): the server's
    busiest thread other than its main one (the model's engine thread, under load), its
    main thread (the event loop: HTTP, keys, SSE chunks), the whole server process, and
    the load client. CPU time is far less disturbed by a busy machine than wall time."""
    job = json.dumps([url, key, model, n, tokens, rounds, probe])
    server_before, client_before = _thread_cpu(server_pid), os.times()
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--client", job],
        capture_output=True,
        text=True,
    )
    server_after, client_after = _thread_cpu(server_pid), os.times()
    if out.returncode:
        raise SystemExit(f"the load client failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout)
    if server_after:  # /proc is there (Linux)
        spent = {t: cpu - server_before.get(t, 0.0) for t, cpu in server_after.items()}
        main = spent.pop(server_pid, 0.0)
        # the engine's thread: in its own process (serve.lm.engine: process), the
        # busiest thread there; else the busiest of the server's other threads
        engine_side = {t: c for (p, t), c in spent.items() if p != server_pid}
        per_token = 1e6 / max(1, row["tokens"])
        client = sum(client_after[2:4]) - sum(client_before[2:4])  # children's user + sys
        row["cpu_us_per_token"] = {
            "engine_thread": max((engine_side or spent).values(), default=0.0) * per_token,
            "event_loop": main * per_token,
            "server": (main + sum(spent.values())) * per_token,
            "client": client * per_token,
        }
    return row


def _thread_cpu(pid: int) -> dict:
    """CPU seconds (user + system) of each thread of process `pid` and of its child
    processes (the models' engine processes), from /proc: {pid: main thread's,
    (process, thread): each other thread's}."""
    tick = os.sysconf("SC_CLK_TCK")
    threads: dict = {}
    processes = [pid]
    while processes:
        process = processes.pop()
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{process}/task"):
                with contextlib.suppress(OSError):
                    task = Path(f"/proc/{process}/task/{tid}")
                    fields = (task / "stat").read_text().rsplit(")", 1)[1]
                    utime, stime = fields.split()[11:13]
                    key = pid if int(tid) == pid else (process, int(tid))
                    threads[key] = (int(utime) + int(stime)) / tick
                    processes += [int(c) for c in (task / "children").read_text().split()]
    return threads


def _pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@contextlib.contextmanager
def _server(
    work: Path,
    env: dict[str, str],
    max_concurrent: int,
    device: str = "cpu",
    dtype: str = "float32",
    src: Path | None = None,
    engine: str | None = None,
):
    lm: dict = {"max_concurrent": max_concurrent, "max_queue": 256}
    if (device, dtype) != ("cpu", "float32"):  # keys a baseline's schema may not have
        lm.update(device=device, dtype=dtype)
    if engine is not None:  # serve.lm.engine: process (the default) or thread
        lm.update(engine=engine)
    config = {"serve": {"plans": PLAN, "metrics": "public", "lm": lm}}
    if src is not None:  # another checkout's foundry (--baseline-src)
        env = {**env, "PYTHONPATH": str(src)}
    path = work / f"serve-{max_concurrent}.yaml"
    path.write_text(yaml.safe_dump(config))
    key = _foundry(
        env,
        work,
        "keys",
        "create",
        "--name",
        f"bench-{max_concurrent}",
        "--plan",
        "bench",
        "--config",
        str(path),
    )
    port = free_port()
    log = open(work / f"server-{max_concurrent}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "foundry",
            "serve",
            "gpt-corpus",
            "tiny-llama",
            "--port",
            str(port),
            "--config",
            str(path),
        ],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise SystemExit((work / f"server-{max_concurrent}.log").read_text()[-3000:])
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start in 300 s")
            time.sleep(0.3)
        yield url, key, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        log.close()


# ------------------------------------------------------------------------- baselines


def prefill_ms(env: dict[str, str], ref: str, device: str = "cpu", dtype: str = "float32") -> float:
    """One prompt's prefill in-process (median of 20 forward passes over PROMPTS[0])."""
    import torch

    os.environ["FOUNDRY_HOME"] = env["FOUNDRY_HOME"]
    from foundry.lm.load import load, place

    lm = load(ref)
    place(lm, device, dtype)
    ids = torch.tensor([lm.engine.encode_prompt(PROMPTS[0])], device=lm.engine.device)
    times = []
    for _ in range(21):
        start = time.perf_counter()
        with torch.inference_mode():
            lm.engine.step(
                ids,
                cache=None,
                attention_mask=None,
                position_ids=torch.arange(ids.shape[1], device=ids.device)[None],
                use_cache=True,
            )
        if ids.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:])


def transformers_batch(
    env: dict[str, str],
    streams: list[int],
    tokens: int,
    device: str = "cpu",
    dtype: str = "float32",
) -> list[dict]:
    """transformers' `generate_batch` on the Llama package's weights, in-process."""
    import torch
    import transformers

    os.environ["FOUNDRY_HOME"] = env["FOUNDRY_HOME"]
    from foundry.lm.load import load, place

    lm = load("tiny-llama")
    place(lm, device, dtype)
    model, tok = lm.model, lm.tokenizer
    prompts = [tok.encode(p) for p in PROMPTS]
    config = transformers.GenerationConfig(
        max_new_tokens=tokens,
        do_sample=True,
        temperature=0.8,
        top_k=0,  # the whole distribution, as the served requests sample
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
    )
    rows = []
    # One manager for every call (`persistent_manager`), sized by a first call with the
    # most streams: a fresh manager costs ~2 minutes of set-up on CPU here, which would
    # swamp the generation it is asked to do.
    batch = {"generation_config": config, "persistent_manager": True, "warmup": False}
    with torch.inference_mode():
        model.generate_batch(
            inputs=[prompts[i % len(prompts)] for i in range(max(streams))], **batch
        )
        for n in streams:
            start = time.perf_counter()
            out = model.generate_batch(
                inputs=[prompts[i % len(prompts)] for i in range(n)], **batch
            )
            if device != "cpu":
                torch.cuda.synchronize()
            wall = time.perf_counter() - start
            total = sum(len(o.generated_tokens) for o in out.values())
            rows.append({"streams": n, "tokens_per_s": total / wall, "tokens": total})
    return rows


_ENGINE_CPU = """
import json, os, sys, threading, time
import torch
torch.set_num_threads(1)
from foundry.config.schema import GenerationConfig
from foundry.lm.load import load
ref, n, tokens, prompts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
batcher = load(ref).continuous_batcher(max_concurrent=32, max_queue=256, name="bench")
cpu = [0.0]
step = batcher._step
def timed():
    start = time.thread_time()
    step()
    cpu[0] += time.thread_time() - start
batcher._step = timed
batcher.start()
def run():
    done = threading.Semaphore(0)
    rows = [batcher.submit(prompts[i % len(prompts)], GenerationConfig(
        max_tokens=tokens, temperature=0.8, top_k=10**6, seed=i),
        lambda item: item is None and done.release()) for i in range(n)]
    for _ in rows:
        done.acquire()
    return sum(r.row.computed for r in rows)
run()
figures = []
for _ in range(3):
    cpu[0] = 0.0
    figures.append(run() / cpu[0])
batcher.close()
print(json.dumps(figures))
"""


def engine_cpu(
    env: dict[str, str], src: Path | None, n: int, tokens: int, model: str = "tiny-llama"
) -> list[float]:
    """Tokens per CPU-second of the engine thread, `model` (--engine-model), `n` rows
    (--engine-cpu), in a subprocess importing foundry from `src` (None: this tree)."""
    if src is not None:
        env = {**env, "PYTHONPATH": str(src)}
    out = _run([sys.executable, "-c", _ENGINE_CPU, model, str(n), str(tokens), *PROMPTS], env, ROOT)
    return json.loads(out.splitlines()[-1])


# ------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", default="1,4,16,32")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument(
        "--engines",
        default="continuous,one-at-a-time",
        help="which servers to measure (comma-separated)",
    )
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--engine-cpu", action="store_true")
    parser.add_argument(
        "--engine-model",
        default="tiny-llama",
        choices=["tiny-llama", "gpt-corpus"],
        help="the model --engine-cpu runs",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="also time a light request (GET /v1/models) every 20 ms during the streams",
    )
    parser.add_argument(
        "--models",
        default="gpt-corpus,tiny-llama",
        help="which served models to load (comma-separated)",
    )
    parser.add_argument("--client", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client is not None:  # the load client's own process (_load_in_client)
        print(json.dumps(asyncio.run(_load(*json.loads(args.client)))))
        return
    dtype = DTYPES[args.dtype]
    streams = [int(s) for s in args.streams.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="lm-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FOUNDRY_HOME": str(work / "home")}
    env.pop("FOUNDRY_DATABASE_URL", None)
    build_models(work, env)
    # The in-process parts run on as many PyTorch threads as a server worker does on
    # this machine (foundry.serve.app.inference_threads), so they are compared fairly.
    import torch

    from foundry.serve.app import inference_threads

    torch.set_num_threads(inference_threads(1))

    results: dict = {
        "torch_threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "tokens": args.tokens,
        "rounds": args.rounds,
        "device": args.device,
        "dtype": dtype,
        "engines": {},
    }
    # continuous: the default engine (serve.lm.engine: process); continuous-thread: the
    # same engine in a thread of the server process
    servers = [
        (engine, slots, None, lm_engine)
        for engine, slots, lm_engine in (
            ("continuous", 32, None),
            ("continuous-thread", 32, "thread"),
            ("one-at-a-time", 1, None),
        )
        if engine in args.engines.split(",")
    ]
    if args.baseline_src is not None and "continuous" in args.engines.split(","):
        servers.append(("baseline", 32, args.baseline_src.resolve(), None))
    for repeat in range(args.repeats):
        # alternate the order, so neither side always runs first on a drifting machine
        for engine, slots, src, lm_engine in servers if repeat % 2 == 0 else servers[::-1]:
            label = engine if args.repeats == 1 else f"{engine} #{repeat + 1}"
            with _server(work, env, slots, args.device, dtype, src, lm_engine) as (
                url,
                key,
                pid,
            ):
                for model in args.models.split(","):
                    rows = [
                        _load_in_client(
                            url, key, model, n, args.tokens, args.rounds, pid, args.probe
                        )
                        for n in streams
                    ]
                    results["engines"].setdefault(label, {})[model] = rows
    if args.engine_cpu:
        sides = [("continuous", None)]
        if args.baseline_src is not None:
            sides.append(("baseline", args.baseline_src.resolve()))
        n = max(streams)
        for repeat in range(max(2, args.repeats)):
            for side, src in sides if repeat % 2 == 0 else sides[::-1]:
                figures = engine_cpu(env, src, n, args.tokens, args.engine_model)
                results.setdefault("engine_cpu_tokens_per_s", {}).setdefault(side, []).append(
                    figures
                )
    results["prefill_ms"] = {
        m: prefill_ms(env, m, args.device, dtype) for m in ("gpt-corpus", "tiny-llama")
    }
    if not args.skip_transformers:
        try:
            results["transformers_generate_batch"] = transformers_batch(
                env, streams, args.tokens, args.device, dtype
            )
        except Exception as exc:  # report it rather than lose the run
            results["transformers_generate_batch"] = f"did not run: {exc!r}"
    if args.json:
        print(json.dumps(results, indent=2))
        return
    _table(results)


def _table(results: dict) -> None:
    print(
        f"{results['cores']} cores, {results['tokens']} tokens per stream, "
        f"{results['rounds']} rounds, {results['device']} {results['dtype']}"
    )
    for engine, models in results["engines"].items():
        for model, rows in models.items():
            print(f"\n{engine} · {model}")
            print(
                "streams  tokens/s  tokens/stream  TTFT p50  TTFT p99  ITL p50  ITL p99  (ms)"
                "   CPU µs/token: engine  loop  server  client"
            )
            for r in rows:
                cpu = r.get("cpu_us_per_token")
                where = (
                    f"   {cpu['engine_thread']:>18.0f}  {cpu['event_loop']:>4.0f}  "
                    f"{cpu['server']:>6.0f}  {cpu['client']:>6.0f}"
                    if cpu
                    else ""
                )
                print(
                    f"{r['streams']:>7}  {r['tokens_per_s']:>8.0f}  "
                    f"{r['tokens_per_stream']:>13.1f}  {r['ttft_p50_ms']:>8.1f}  "
                    f"{r['ttft_p99_ms']:>8.1f}  {r['itl_p50_ms']:>7.1f}  {r['itl_p99_ms']:>7.1f}"
                    f"{where}"
                )
    print(f"\nprefill of one prompt, in-process (ms): {results['prefill_ms']}")
    hf = results.get("transformers_generate_batch")
    if isinstance(hf, list):
        print("\ntransformers generate_batch · tiny-llama (in-process, no HTTP)")
        for r in hf:
            print(f"{r['streams']:>7}  {r['tokens_per_s']:>8.0f} tokens/s")
    elif hf:
        print(f"\ntransformers generate_batch: {hf}")


if __name__ == "__main__":
    main()
