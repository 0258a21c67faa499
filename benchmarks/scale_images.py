"""Image training memory vs the number of images: in-memory decoding vs lazy decoding.

    python benchmarks/scale_images.py                          # 10k: memory vs lazy; 100k lazy
    python benchmarks/scale_images.py --sizes 10000,50000      # other folder sizes
    python benchmarks/scale_images.py --repeat 2 --json out.json
    python benchmarks/scale_images.py --model small            # 1/4 of the filters (CPU)
    python benchmarks/scale_images.py --sizes 50000 --memory-up-to 50000 --paths memory
    python benchmarks/scale_images.py --sizes 10000 --threads 1   # train.num_threads: 1

Generates image folders of N small PNGs (32x32 RGB, 10 classes: noise plus a coloured
square whose place and colour give the class; written by a process pool, kept under
`--workdir` for later runs), then trains one epoch of the default image model (what
`foundry init` picks for an image folder: `model.type: cnn` with its defaults, default
`train` settings; `--threads` sets `train.num_threads`, which a lazy run otherwise sets to
the cores its decode workers leave) on each, every run in a fresh subprocess:

    memory   `data.images.loading: memory`: every image decoded into one float32
             [N, 3, 32, 32] array before training (the path before issue 18)
    lazy     `data.images.loading: lazy`: paths only; DataLoader workers
             (`data.images.workers`, default) decode each batch ahead of the loop

All rows go to training (`data.split` train 1.0) so the epoch time is training alone.
Reported per run: peak RSS of the training process (`ru_maxrss`) and of its largest
worker (`RUSAGE_CHILDREN`), seconds from the start of data preparation (read the folder,
PII scan, fingerprint, fit the channel means, encode) to the model's first forward call
(time to first batch), and training images/s over the epoch. The 10k folder runs both
paths, alternating when `--repeat` > 1; larger folders run lazy only unless
`--memory-up-to` says otherwise. The issue's target: lazy memory flat from 10k to 100k.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np

SIZE = 32  # pixels per side
CLASSES = 10
CHUNK = 1000  # images per generation task


def _write_chunk(task: tuple[str, int, int]) -> None:
    root, start, stop = task
    from PIL import Image

    rng = np.random.default_rng(start)
    for i in range(start, stop):
        label = i % CLASSES
        img = rng.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
        # the class: where a bright 8x8 square sits and its colour
        y, x = divmod(label % 4, 2)
        img[4 + 16 * y : 12 + 16 * y, 4 + 16 * x : 12 + 16 * x] = (
            255 if label < 4 else 128, 200 if label % 2 else 60, 40 * (label % 5),
        )  # fmt: skip
        # compress_level 1: generation speed matters more than file size here
        Image.fromarray(img).save(Path(root) / f"c{label}" / f"{i}.png", compress_level=1)


def generate(root: Path, n: int) -> float:
    """Write `n` PNGs under root/c<k>/ (skipped when the folder is complete); seconds."""
    done = root / "COMPLETE"
    if done.exists():
        return 0.0
    started = time.perf_counter()
    for k in range(CLASSES):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
    tasks = [(str(root), s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_chunk, tasks)
    done.write_text(str(n))
    return time.perf_counter() - started


MODELS = {
    "default": {"type": "cnn"},
    # 1/4 of the default's filters: ~10x less compute per image, for CPU-only machines
    "small": {"type": "cnn", "conv": [{"filters": 8}, {"filters": 16}], "layers": [32]},
}


def child(folder: str, loading: str, model: str, threads: str = "") -> dict[str, Any]:
    """One epoch of the default image model in this process; what it measured."""
    import torch

    from foundry.config import LoadedConfig
    from foundry.config.load import validate_config
    from foundry.console import Reporter
    from foundry.families.interface import Run
    from foundry.families.neural import NeuralFamily

    first: list[float] = []

    def on_forward(module: Any, args: Any) -> None:
        if not first:
            first.append(time.perf_counter())

    # any module's first forward: the first batch has reached the model
    handle = torch.nn.modules.module.register_module_forward_pre_hook(on_forward)
    config = validate_config(
        {
            "name": "scale-images",
            "data": {
                "path": folder,
                "split": {"train": 1.0, "val": 0.0, "test": 0.0},
                "images": {"loading": loading},
            },
            "features": {"target": "label"},
            "model": MODELS[model],
            "train": {"epochs": 1, "num_threads": int(threads) if threads else None},
        }
    )
    out_dir = Path(folder).parent / f"run-{loading}-{os.getpid()}"
    run = Run(LoadedConfig(config, Path(folder).parent), out_dir, Reporter(quiet=True))
    family = NeuralFamily()
    started = time.perf_counter()
    data = family.prepare(run)
    prepared = time.perf_counter()
    fitted = family.fit(data, config.train, run)
    handle.remove()
    n = len(data.splits.train)
    epoch_s = fitted.result.history[0]["seconds"]
    return {
        "images": n,
        "model": model,
        "loading": loading,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "prepare_s": prepared - started,
        "first_batch_s": first[0] - started,
        "epoch_s": epoch_s,
        "images_per_s": n / epoch_s,
        "train_loss": fitted.result.history[0]["train_loss"],
    }


def run_child(folder: Path, loading: str, model: str, threads: str = "") -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, __file__, "--child", str(folder), loading, model, threads],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"{loading} run on {folder} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="folder sizes, comma-separated")
    parser.add_argument("--memory-up-to", type=int, default=10000,
                        help="also run the in-memory path on folders up to this size")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="runs per (size, path)")
    parser.add_argument("--paths", default="memory,lazy", help="which paths to run at all")
    parser.add_argument("--workdir", default="/tmp/foundry-scale-images")
    parser.add_argument("--json", help="also write every result here")
    parser.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="default",
        help="default: model.type cnn as init writes it; small: 1/4 of its filters",
    )
    parser.add_argument(
        "--threads",
        default="",
        help="train.num_threads for every run (default: unset, PyTorch's or foundry's choice)",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        folder = Path(args.workdir) / f"images-{n}" / "images"
        seconds = generate(folder, n)
        if seconds:
            print(f"generated {n:,} images in {seconds:.1f}s ({n / seconds:,.0f}/s)", flush=True)
        paths = ["memory", "lazy"] if n <= args.memory_up_to else ["lazy"]
        paths = [p for p in paths if p in args.paths.split(",")]
        for _ in range(args.repeat):
            for loading in paths:  # alternating: drift on a busy machine hits both
                result = run_child(folder, loading, args.model, args.threads)
                results.append(result)
                print(
                    f"{n:>7,} images  {loading:<6}  peak RSS {result['peak_rss_mb']:7.0f} MB"
                    f" (worker {result['worker_peak_rss_mb']:5.0f} MB)  first batch "
                    f"{result['first_batch_s']:6.1f}s  {result['images_per_s']:7,.0f} images/s",
                    flush=True,
                )
    lazy = [r for r in results if r["loading"] == "lazy"]
    if len({r["images"] for r in lazy}) > 1:
        small = min(lazy, key=lambda r: r["images"])
        large = max(lazy, key=lambda r: r["images"])
        print(
            f"lazy peak RSS {large['images']:,} / {small['images']:,} images: "
            f"{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
