"""How fast does foundry generate? (a) what the KV cache buys, (b) our engine against
transformers' own `generate` on the same model.

    python benchmarks/generate.py                  # both parts, a table
    python benchmarks/generate.py --json           # the same numbers as JSON
    python benchmarks/generate.py --part cache --new-tokens 128

(a) A small GPT (foundry.models.gpt: 4 layers, d_model 256, 4 heads, vocab 4096, random
    weights, seeded) generates `--new-tokens` tokens greedily after a 16-token prompt,
    once with the KV cache and once recomputing the whole sequence at every token
    (`use_cache=False`). Both must produce the same tokens; the ratio of tokens/s is what
    the cache buys.
(b) Tiny GPT-2s (`transformers.GPT2LMHeadModel`, random weights, seeded, built locally:
    nothing is downloaded) — 4 layers x 256 with GPT-2's 50,257-token vocabulary, and
    2 layers x 128 with 8,192 tokens — decode greedily through our engine
    (`HFCausalLMStep`) and through `model.generate(do_sample=False)`, for one prompt and
    for a left-padded batch of four. The tokens must match exactly; the ratio of times is
    then the engine's overhead against transformers' own loop.

Each variant runs `--repeats` times, alternating with its counterpart in one process so
that drift on a shared machine hits both; medians are reported. Only ratios from one run
are meaningful.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

from foundry.config.schema import GenerationConfig, GPTConfig
from foundry.lm.generate import GenerationEngine
from foundry.lm.hf_step import HFCausalLMStep
from foundry.models.gpt import GPT


def timed(fn: Callable[[], list[list[int]]]) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def alternate(
    a: Callable[[], list[list[int]]], b: Callable[[], list[list[int]]], repeats: int
) -> tuple[float, float, list[list[int]], list[list[int]]]:
    """Median seconds of a and b, run alternately after one warm-up each; last outputs."""
    a(), b()  # warm-up: first-call allocations, lazy initialisation
    times_a, times_b = [], []
    for _ in range(repeats):
        ta, out_a = timed(a)
        tb, out_b = timed(b)
        times_a.append(ta)
        times_b.append(tb)
    return statistics.median(times_a), statistics.median(times_b), out_a, out_b


def prompts(batch: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """`batch` prompts of 16, 9, 12, 5 ... tokens (different lengths: left padding)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [16, 9, 12, 5][:batch] if batch > 1 else [16]
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]


def cache_part(new_tokens: int, repeats: int) -> dict:
    config = GPTConfig(
        n_layers=4, d_model=256, n_heads=4, context_length=512, vocab_size=4096, dropout=0.0
    )
    torch.manual_seed(0)
    model = GPT(config, vocab_size=4096).eval()
    params = GenerationConfig(max_tokens=new_tokens, temperature=0)
    common = dict(context_length=512, pad_id=0, stop_ids=[])
    cached = GenerationEngine(model.step, **common)
    full = GenerationEngine(model.step, use_cache=False, **common)
    batch = prompts(1, 4096)
    t_cache, t_full, out_cache, out_full = alternate(
        lambda: cached.generate_ids(batch, params),
        lambda: full.generate_ids(batch, params),
        repeats,
    )
    n = sum(len(o) for o in out_cache)
    return {
        "model": "foundry GPT 4x256, vocab 4096, rope",
        "prompt_tokens": len(batch[0]),
        "new_tokens": n,
        "same_tokens": out_cache == out_full,
        "cache_tokens_per_s": n / t_cache,
        "no_cache_tokens_per_s": n / t_full,
        "speedup": t_full / t_cache,
    }


HF_MODELS = {
    # GPT-2's own vocabulary: the output layer (50,257 x 256) is most of each step
    "GPT-2 4x256, vocab 50257": dict(n_layer=4, n_embd=256, n_head=4),
    # a small vocabulary: each step is cheap, so per-token overhead shows
    "GPT-2 2x128, vocab 8192": dict(n_layer=2, n_embd=128, n_head=4, vocab_size=8192),
}


def hf_part(new_tokens: int, repeats: int) -> list[dict]:
    import transformers

    transformers.logging.set_verbosity_error()
    results = []
    for name, sizes in HF_MODELS.items():
        config = transformers.GPT2Config(n_positions=1024, **sizes)
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(config).eval()
        model.generation_config.pad_token_id = 0
        engine = GenerationEngine(HFCausalLMStep(model), context_length=1024, pad_id=0, stop_ids=[])
        params = GenerationConfig(max_tokens=new_tokens, temperature=0)

        def hf_generate(batch: list[list[int]], model=model) -> list[list[int]]:
            width = max(map(len, batch))
            ids = torch.tensor([[0] * (width - len(p)) + p for p in batch])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
            with torch.inference_mode():
                out = model.generate(
                    ids,
                    attention_mask=mask,
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    do_sample=False,
                    eos_token_id=None,
                )
            return out[:, width:].tolist()

        for batch_size in (1, 4):
            batch = prompts(batch_size, config.vocab_size)
            t_ours, t_hf, ours, theirs = alternate(
                lambda batch=batch, engine=engine, params=params: engine.generate_ids(
                    batch, params
                ),
                lambda batch=batch, hf_generate=hf_generate: hf_generate(batch),
                repeats,
            )
            n = sum(len(o) for o in ours)
            results.append(
                {
                    "model": name,
                    "batch": batch_size,
                    "new_tokens": n,
                    "same_tokens": ours == theirs,
                    "ours_tokens_per_s": n / t_ours,
                    "transformers_tokens_per_s": n / t_hf,
                    "ratio": t_hf / t_ours,
                }
            )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "cache", "hf"], default="all")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    report: dict = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
    }
    if args.part in ("all", "cache"):
        report["cache"] = cache_part(args.new_tokens, args.repeats)
    if args.part in ("all", "hf"):
        report["hf"] = hf_part(args.new_tokens, args.repeats)

    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return
    print(
        f"torch {report['torch']}, {report['threads']} threads, greedy, {args.new_tokens} new "
        f"tokens, median of {args.repeats}"
    )
    if "cache" in report:
        c = report["cache"]
        print(f"\n(a) KV cache — {c['model']}, prompt {c['prompt_tokens']} tokens")
        print(f"  with cache      {c['cache_tokens_per_s']:8.1f} tokens/s")
        print(f"  without cache   {c['no_cache_tokens_per_s']:8.1f} tokens/s")
        print(
            f"  speed-up        {c['speedup']:8.2f}x  (target >= 5x); same tokens: "
            f"{c['same_tokens']}"
        )
    if "hf" in report:
        print("\n(b) our engine vs transformers generate (random weights, seeded)")
        print(
            f"  {'model':<26} batch   ours tok/s   transformers tok/s   ours/transformers   "
            "same tokens"
        )
        for r in report["hf"]:
            print(
                f"  {r['model']:<26} {r['batch']:>5}   {r['ours_tokens_per_s']:10.1f}   "
                f"{r['transformers_tokens_per_s']:18.1f}   {r['ratio']:17.2f}x   "
                f"{r['same_tokens']}"
            )
        print("  (target: ours/transformers >= 1.0)")


if __name__ == "__main__":
    main()
