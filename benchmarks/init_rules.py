"""The measurements behind two of `foundry init`'s rules.

    python benchmarks/init_rules.py identifiers   # which near-unique columns are opaque, ~10 s
    python benchmarks/init_rules.py throughput    # rows/s of the neural defaults, ~2 min

`identifiers`: `foundry.data.infer.identifier_reason` keeps near-unique strings with
structure (as text) and drops opaque ones. Its near-random rule reads two numbers per
column: bits of entropy per character (Miller-Madow corrected) and the share of values
holding a sub-token of 3+ characters that another value holds too. This prints both, as
min-max over 5 seeded draws of 20, 100 and 1,000 values, for real columns found on the
machine (Debian package names from `apt-cache pkgnames`, manual page names, file paths,
Python module paths of the virtualenv, URLs built from those paths, English words of
the GPL text) and for generated opaque ones (uuid4, sha1 hex, base64 and alphanumeric
tokens, random letters, numbered ids), then what the rule decides for each at 200 rows.

`throughput`: `foundry init` sizes epochs for mlp, text and cnn from training rows per
second on 2 CPU cores (`foundry.config.init.NEURAL_ROWS_PER_S`). This trains each
family's default model (the config `foundry init --model X` writes) for 3 epochs on a
generated table (20,000 rows of 10 numbers and 2 categories; 2,000 sentences of 12
words; 600 RGB images of 32x32) with 2 torch threads and prints training rows per
CPU-second: the process's CPU time over the whole `foundry.train` call, so that other
work on a shared machine does not count, and on an idle 2-core machine the run takes at
most that long (2 torch threads: wall time is CPU time / 1-2). The wall rows/s of the
median epoch on the machine as it is loaded now is printed beside it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import random
import re
import string
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from foundry.data.infer import _char_entropy, _shared_token_share, identifier_reason

SIZES = (20, 100, 1000)
DRAWS = 5


def real_columns(rng: random.Random) -> dict[str, list[str]]:
    """Near-unique string columns found on this machine (each deduplicated)."""

    def lines(cmd: str) -> list[str]:
        out = subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout
        return list(dict.fromkeys(out.split()))

    files = lines("find /usr/lib /usr/share -type f 2>/dev/null | head -100000")
    site = lines(f"find {sys.prefix} -path '*site-packages/*.py'")
    modules = [f.split("site-packages/")[1] for f in site]
    gpl = Path("/usr/share/common-licenses/GPL-3")
    words = re.findall(r"[a-z]{3,}", gpl.read_text().lower()) if gpl.exists() else []
    columns = {
        "debian packages": lines("apt-cache pkgnames"),
        "man pages": [f.split(".")[0] for f in os.listdir("/usr/share/man/man1")],
        "file paths": files,
        "python modules": [m.removesuffix(".py").replace("/", ".") for m in modules],
        "urls": ["https://docs.example.org/" + f.split("/usr/share/")[-1] for f in files],
        "english words": list(dict.fromkeys(words)),
    }
    for values in columns.values():
        rng.shuffle(values)
    return {k: list(dict.fromkeys(v)) for k, v in columns.items() if len(set(v)) >= 200}


def opaque_columns(rng: random.Random, n: int = 1000) -> dict[str, list[str]]:
    alnum = string.ascii_lowercase + string.digits
    return {
        "uuid4": [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)],
        "sha1 hex": [hashlib.sha1(rng.randbytes(8)).hexdigest() for _ in range(n)],
        "base64 (12)": [base64.urlsafe_b64encode(rng.randbytes(9)).decode() for _ in range(n)],
        "base64 (24)": [base64.b64encode(rng.randbytes(18)).decode() for _ in range(n)],
        "alnum (8)": ["".join(rng.choices(alnum, k=8)) for _ in range(n)],
        "letters (10)": ["".join(rng.choices(string.ascii_lowercase, k=10)) for _ in range(n)],
        "numbered ids": [f"CR-{i:05d}-{'ABC'[i % 3]}" for i in range(n)],
    }


def identifiers() -> None:
    rng = random.Random(0)
    columns = {**real_columns(rng), **opaque_columns(rng)}
    print(f"{'column':18s} " + " ".join(f"{'n=' + str(n):>22s}" for n in SIZES))
    print(f"{'':18s} " + " ".join(f"{'bits/char  shared':>22s}" for _ in SIZES))
    for name, values in columns.items():
        cells = []
        for n in SIZES:
            draws = [
                random.Random(seed).sample(values, min(n, len(values))) for seed in range(DRAWS)
            ]
            bits = [_char_entropy(pd.Series(d)) for d in draws]
            shared = [_shared_token_share(pd.Series(d)) for d in draws]
            cells.append(
                f"{min(bits):.2f}-{max(bits):.2f} {min(shared):.2f}-{max(shared):.2f}".rjust(22)
            )
        print(f"{name:18s} " + " ".join(cells))
    print("\nidentifier_reason on 200 values (None: kept, as text):")
    for name, values in columns.items():
        print(f"  {name:18s} {identifier_reason(pd.Series(values[:200]))}")


def throughput() -> None:
    import torch

    import foundry

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["FOUNDRY_HOME"] = str(root / "home")
        n = 20_000
        table = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(10)})
        table["c1"] = rng.choice(list("abcdef"), n)
        table["c2"] = rng.choice([f"k{i}" for i in range(40)], n)
        table["y"] = np.where(table["x0"] + table["x1"] * (table["c1"] == "a") > 0, "p", "q")
        table.to_csv(root / "table.csv", index=False)
        vocab = [f"w{i}" for i in range(3000)]
        texts = [" ".join(rng.choice(vocab, 12)) for _ in range(2000)]
        label = ["p" if t.count("w1") % 2 else "q" for t in texts]
        pd.DataFrame({"text": texts, "y": label}).to_csv(root / "text.csv", index=False)
        from PIL import Image

        for k in range(3):
            (root / "images" / f"c{k}").mkdir(parents=True)
            for i in range(200):
                pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                pixels[:, :, k] = 255
                Image.fromarray(pixels).save(root / "images" / f"c{k}" / f"{i}.png")
        cases = [("mlp", "table.csv", "y"), ("text", "text.csv", "y"), ("cnn", "images", "label")]
        for model, data, target in cases:
            config = root / f"{model}.yaml"
            foundry.init(root / data, target, output=config, model=model)
            overrides = ["train.epochs=3", "train.early_stopping.patience=null"]
            cpu = time.process_time()
            run = foundry.train(config, overrides, progress=False, quiet=True)
            cpu = time.process_time() - cpu
            rows = len(pd.read_csv(root / data)) if data.endswith(".csv") else 600
            train_rows = int(rows * 0.8)
            wall = sorted(r["seconds"] for r in run.history)[len(run.history) // 2]
            print(
                f"{model:5s} {train_rows:6d} training rows: {3 * train_rows / cpu:7.0f} rows "
                f"per CPU-second (3 epochs, all of foundry.train); median epoch {wall:.1f} s "
                f"wall = {train_rows / wall:.0f} rows/s on this machine now "
                f"(load {os.getloadavg()[0]:.1f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["identifiers", "throughput"])
    args = parser.parse_args()
    identifiers() if args.part == "identifiers" else throughput()


if __name__ == "__main__":
    main()
