"""A table several times larger than the memory a run may use trains to completion
when streamed, and does not fit in memory (issue 18: "run under a memory limit").

The limit is an address-space rlimit set inside a fresh Python process after its imports
(so it does not depend on how much torch maps on this machine): the process may grow by
`HEADROOM` bytes. The table decodes to ~4x that: a Parquet file of a few MB whose
dictionary-encoded string column expands to `ROWS` x `BLOB` bytes when read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROWS, BLOB = 6000, 100_000  # decodes to 600 MB
HEADROOM = 150 * 2**20

CHILD = r"""
import json, resource, sys
import psutil, pyarrow, torch
import foundry, foundry.data.stream, foundry.models, foundry.training, foundry.evaluation
import pyarrow.parquet as pq
torch.set_num_threads(1)
pyarrow.set_cpu_count(1)
pyarrow.set_io_thread_count(1)
config = json.loads(sys.argv[1])
# start the thread pools before the limit: a thread's stack is address space too
pq.ParquetFile(config["data"]["path"]).read_row_group(0, columns=["x"])
torch.ones(4, 4) @ torch.ones(4, 4)
limit = psutil.Process().memory_info().vms + int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
result = foundry.train(config, verbose=True, progress=False, register=False)
print(json.dumps({"accuracy": result.metrics["accuracy"]}))
"""


@pytest.fixture(scope="module")
def wide_table(tmp_path_factory) -> Path:
    """`ROWS` rows: a number, a category of 20 values of `BLOB` characters (written
    dictionary-encoded, read back as plain strings) and a target that depends on both."""
    rng = np.random.default_rng(0)
    pick = rng.integers(0, 20, ROWS)
    x = rng.normal(size=ROWS)
    blobs = pa.array([f"{i:02d}" + "z" * BLOB for i in range(20)])
    table = pa.table(
        {
            "x": x,
            "blob": pa.DictionaryArray.from_arrays(pa.array(pick, pa.int32()), blobs),
            "y": np.where(x + (pick % 2) > 0.5, "yes", "no"),
        }
    )
    path = tmp_path_factory.mktemp("wide") / "wide.parquet"
    # no stored Arrow schema: `blob` reads back as strings, not as a dictionary
    pq.write_table(table, path, row_group_size=500, store_schema=False,
                   dictionary_pagesize_limit=4 * 2**20)  # fmt: skip
    return path


def run_limited(path: Path, streaming: object, tmp_path: Path) -> subprocess.CompletedProcess:
    config = {
        "name": "wide",
        "data": {
            "path": str(path),
            "streaming": streaming,
            "pii": {"enabled": False},
            "stream": {
                "workers": 0,
                "block_rows": 64,
                "sample_rows": 100,
                "shuffle_buffer": 256,
            },  # fmt: skip
        },
        "features": {
            "target": "y",
            "inputs": [{"name": "x"}, {"name": "blob", "type": "category"}],
        },
        "model": {"type": "mlp"},
        "train": {"epochs": 1, "batch_size": 256},
        "evaluate": {
            "explain": {"permutation_importance": False},
            "calibration": {"temperature_scaling": False},
        },
        "output_dir": str(tmp_path / "runs"),
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    return subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(config), str(HEADROOM)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_a_table_larger_than_the_memory_limit_trains_streamed_and_not_in_memory(
    wide_table, tmp_path
):
    assert ROWS * BLOB > 3 * HEADROOM
    streamed = run_limited(wide_table, "auto", tmp_path)  # auto must choose to stream
    assert streamed.returncode == 0, streamed.stderr[-3000:]
    assert "data.streaming auto" in streamed.stdout + streamed.stderr
    assert json.loads(streamed.stdout.strip().splitlines()[-1])["accuracy"] > 0.7
    in_memory = run_limited(wide_table, False, tmp_path)
    assert in_memory.returncode != 0
    assert "MemoryError" in in_memory.stderr  # Python's, or pyarrow's ArrowMemoryError
