"""Distributed data-parallel training (`foundry train --nproc N`, torchrun): real gloo
process groups on localhost, compared with a single process on the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch.utils.data import DistributedSampler
from train_helpers import BINARY, make_classification, new_model, small_config

from foundry.errors import ConfigError
from foundry.serve.loadtest import free_port
from foundry.training import distributed, fit

SRC = str(Path(__file__).resolve().parents[2] / "src")


# ------------------------------------------------------------------ helpers, unit


@pytest.mark.parametrize("n_rows", [8, 9, 10, 11, 3])
@pytest.mark.parametrize("world", [2, 3, 4])
def test_shard_splits_rows_as_distributed_sampler_does(n_rows, world):
    perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(n_rows))
    for rank in range(world):
        sampler = DistributedSampler(range(n_rows), num_replicas=world, rank=rank, shuffle=False)
        expected = perm[torch.tensor(list(sampler))]
        assert torch.equal(distributed.shard(perm, rank, world), expected)
        assert len(expected) == distributed.rows_per_rank(n_rows, world)


def test_local_batches_together_are_the_global_batch():
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    shards = [distributed.shard(perm, rank, 2) for rank in range(2)]
    for b in range(4):  # global batch 10 → 5 rows per rank
        local = torch.cat([s[b * 5 : (b + 1) * 5] for s in shards])
        assert sorted(local.tolist()) == sorted(perm[b * 10 : (b + 1) * 10].tolist())


def test_batch_size_is_the_global_batch_and_must_divide():
    assert distributed.local_batch_size(64, 2) == 32
    with pytest.raises(ConfigError, match="not divisible by 3"):
        distributed.local_batch_size(64, 3)


@pytest.mark.parametrize(
    ("world", "local", "machines"),
    [(None, None, 1), ("2", "2", 1), ("8", "4", 2), ("6", "4", 2), ("3", "1", 3)],
)
def test_machines_are_torchruns_nodes(monkeypatch, world, local, machines):
    for name, value in (("WORLD_SIZE", world), ("LOCAL_WORLD_SIZE", local)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert distributed.machines() == machines


def test_a_single_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "3")  # a stray RANK alone does not make a worker
    assert not distributed.launched() and not distributed.active()
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.from_main(lambda: "same") == "same"  # no group: just a call


EXITS = [(True, 3, 3), (True, 0, 0), (False, 3, "returned")]
"""(joined a group, exit code asked for, what the process must do)."""


@pytest.fixture(scope="module")
def exited_workers() -> dict[tuple[bool, int], subprocess.Popen]:
    """The three cases' processes, started at once (each spends ~2 s importing torch)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTHONUNBUFFERED", None)  # stdout buffered, as a worker's pipe is
    procs = {}
    for joined, code, _ in EXITS:
        script = (
            "import sys\n"
            "from foundry.training import distributed\n"
            f"distributed._joined = {joined}\n"
            "sys.stdout.write('result line')\n"  # no newline: still in the buffer
            f"distributed.exit_worker({code})\n"
            "print(' returned')\n"
            "sys.exit(5)\n"
        )
        procs[joined, code] = subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
        )
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("joined", "code", "expected"), EXITS)
def test_a_worker_that_trained_in_a_group_exits_at_once_with_its_output_flushed(
    exited_workers, joined, code, expected
):
    # A process that joined a group leaves through os._exit (gloo's threads can abort an
    # ordinary interpreter shutdown); what it printed, unflushed, must still arrive.
    proc = exited_workers[joined, code]
    stdout, _ = proc.communicate(timeout=120)
    if expected == "returned":
        assert proc.returncode == 5 and stdout == "result line returned\n"
    else:
        assert proc.returncode == expected and stdout == "result line"


def test_the_cli_passes_its_exit_code_and_message_to_the_worker_exit(monkeypatch, capsys):
    from foundry import cli

    codes = []
    monkeypatch.setattr(distributed, "exit_worker", codes.append)
    for code in (None, 2, "bad thing"):
        cli._exit_if_trained_in_group(code)
    assert codes == [0, 2, 1]
    assert capsys.readouterr().err == "bad thing\n"


# ------------------------------------------------------------------ CLI, no launch


@pytest.fixture
def data_dir(tmp_path):
    return write_data(tmp_path)


def write_data(folder: Path) -> Path:
    """Breast cancer (sklearn) as CSV files: 400 training rows (even: both ranks get 200),
    85 validation and 84 test rows; a config with dropout off and no early stopping."""
    from sklearn.datasets import load_breast_cancer

    df = load_breast_cancer(as_frame=True).frame
    df["target"] = df["target"].map({0: "malignant", 1: "benign"})
    df = df.sample(frac=1.0, random_state=0)
    df[:400].to_csv(folder / "train.csv", index=False)
    df[400:485].to_csv(folder / "val.csv", index=False)
    df[485:].to_csv(folder / "test.csv", index=False)
    write_config(folder)
    return folder


def write_config(folder: Path, **train) -> Path:
    config = {
        "name": "bc",
        "output_dir": "runs",
        "data": {"path": "train.csv", "val_path": "val.csv", "test_path": "test.csv"},
        "features": {"target": "target"},
        "model": {"type": "mlp", "layers": [32], "dropout": 0.0},
        "train": {
            "epochs": 4,
            "batch_size": 32,
            "optimizer": {"type": "adam", "lr": 0.01},
            "early_stopping": {"patience": None},
            **train,
        },
        # the evaluation extras cost seconds and are not what is tested here
        "evaluate": {
            "calibration": {"temperature_scaling": False},
            "explain": {"permutation_importance": False},
        },
    }
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def foundry(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "FOUNDRY_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
    }
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "foundry", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def cli(capsys, monkeypatch):
    """`foundry ARGS...` in this process, through the console script's `main()`."""

    def run(*args: str) -> tuple[int, str]:
        from foundry.cli import main

        monkeypatch.setattr(sys, "argv", ["foundry", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return code, capsys.readouterr().err

    return run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nproc", "0"], "--nproc must be >= 1. Got 0 instead."),
        (["--nproc", "100000"], "is more than the"),
        (["--nproc", "2", "train.batch_size=33"], "33 is not divisible by 2"),
        (["--nproc", "2", "train.privacy.target_epsilon=3"], "train.privacy cannot be combined"),
    ],
)
def test_bad_nproc_requests_fail_before_launching(data_dir, cli, monkeypatch, args, message):
    monkeypatch.chdir(data_dir)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # "100000" is always too many
    code, err = cli("train", "c.yaml", *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (data_dir / "runs").exists()  # nothing was launched


def test_language_models_refuse_several_processes(tmp_path, cli, monkeypatch):
    (tmp_path / "corpus.txt").write_text("a tiny corpus\n\nof two documents\n")
    config = {"name": "g", "data": {"path": "corpus.txt"}, "model": {"type": "gpt"}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    code, err = cli("train", "g.yaml", "--nproc", "2")
    assert code == 2
    assert "model.type gpt trains in one process only" in err and "mlp, cnn and text" in err


# ------------------------------------------------------------- real 2-process runs


def _weights(home: Path, ref: str) -> dict[str, torch.Tensor]:
    name, version = ref.split(":")
    return load_file(str(home / "models" / name / version / "model.safetensors"))


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    # DDP averages the mean gradients of two equal 16-row shards, which is the mean
    # gradient of the 32-row batch: only the order of float additions differs.
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-4, msg=key)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The same config trained in this process, once for the three tests that compare
    with it (4 epochs, never interrupted): the weights and history to match."""
    import foundry

    folder = write_data(tmp_path_factory.mktemp("single"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("FOUNDRY_HOME", str(folder / "home"))
        result = foundry.train("c.yaml", run_dir="single", progress=False, quiet=True)
    assert result.package_path is not None
    return load_file(str(result.package_path / "model.safetensors")), result.history


@pytest.fixture(scope="module")
def two_epochs_on_two(tmp_path_factory):
    """`train --nproc 2 train.epochs=2`, run once for the two resume tests (a 2-process
    launch costs ~12 s of CPU): its folder (data, runs/, home-ddp/) and the process."""
    folder = write_data(tmp_path_factory.mktemp("two-epochs"))
    done = foundry(
        "train", "c.yaml", "--nproc", "2", "train.epochs=2", cwd=folder, home=folder / "home-ddp"
    )
    return folder, done


@pytest.fixture
def stopped(two_epochs_on_two, tmp_path):
    """A copy of that 2-epoch run, as if it had been stopped after epoch 2 (no COMPLETED):
    (folder, run directory, the first launch)."""
    folder, first = two_epochs_on_two
    assert first.returncode == 0, first.stderr
    data_dir = tmp_path / "bc"
    shutil.copytree(folder, data_dir)
    (run,) = (data_dir / "runs").iterdir()
    (run / "COMPLETED").unlink()
    return data_dir, run, first


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(data_dir, single_process):
    home = data_dir / "home-ddp"
    done = foundry("train", "c.yaml", "--nproc", "2", "--json", cwd=data_dir, home=home)
    assert done.returncode == 0, done.stderr

    result = json.loads(done.stdout)  # one result line: rank 1 prints nothing
    assert result["model"] == "bc:1"
    # rank 0 alone wrote: one registry entry, one run directory
    assert sorted(p.name for p in (home / "models" / "bc").iterdir()) == ["1"]
    runs = list((data_dir / "runs").iterdir())
    assert len(runs) == 1 and Path(result["run_dir"]).name == runs[0].name
    assert (runs[0] / "COMPLETED").read_text().strip() == "bc:1"
    # two processes on one machine: the run's cost counts one machine
    manifest = json.loads((home / "models" / "bc" / "1" / "foundry.json").read_text())
    assert manifest["training"]["processes"] == 2 and manifest["training"]["machines"] == 1

    weights, history = single_process
    _assert_close(_weights(home, "bc:1"), weights)
    lines = (runs[0] / "metrics.jsonl").read_text().splitlines()
    ddp_history = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in ddp_history] == [1, 2, 3, 4]
    for ours, theirs in zip(ddp_history, history, strict=True):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-4)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-4)


@pytest.mark.slow
def test_torchrun_on_two_nodes_registers_once_and_costs_both_machines(data_dir):
    # Two torchrun agents, as on two machines (here both on localhost), meet at one c10d
    # rendezvous: the README's multi-node command, one process per node.
    home = data_dir / "home-nodes"
    env = {
        **os.environ,
        "FOUNDRY_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
    }
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    endpoint = f"127.0.0.1:{free_port()}"
    agents = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
             "--node-rank", str(node), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
             "--rdzv-endpoint", endpoint, "--rdzv-id", "two-nodes",
             "-m", "foundry", "train", "c.yaml"],
            cwd=data_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for node in (0, 1)
    ]  # fmt: skip
    outputs = [agent.communicate(timeout=300)[0] for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], outputs
    assert sorted(p.name for p in (home / "models" / "bc").iterdir()) == ["1"]
    manifest = json.loads((home / "models" / "bc" / "1" / "foundry.json").read_text())
    assert manifest["training"]["processes"] == 2 and manifest["training"]["machines"] == 2
    assert "x 2 machines at" in "".join(outputs)  # the printed cost counts both


@pytest.mark.slow
def test_an_interrupted_two_process_run_resumes(stopped, single_process):
    data_dir, run, first = stopped
    home = data_dir / "home-ddp"
    # rank 0 reports (once); rank 1 prints nothing
    assert first.stderr.count("distributed: 2 processes (gloo), 16 rows each per step") == 1
    assert first.stderr.count("epoch 2/2") == 1 and first.stdout.count("bc:1") == 1

    resumed = foundry(
        "train", "c.yaml", "--nproc", "2", "--resume", "--json", cwd=data_dir, home=home
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["run_dir"].endswith(run.name)  # the same run, found by rank 0
    assert len(list((data_dir / "runs").iterdir())) == 1
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]  # epochs 3 and 4 added once

    weights, _ = single_process  # 4 epochs in one process, never interrupted
    _assert_close(_weights(home, json.loads(resumed.stdout)["model"]), weights)


@pytest.mark.slow
def test_a_two_process_run_resumes_in_one_process(stopped, single_process):
    # The checkpoint is rank 0's whole state (weights, optimizer, shuffle generator), and
    # the global batch does not depend on the number of processes: a run started on 2
    # processes finishes on 1 exactly as if it had never been split.
    data_dir, run, _ = stopped
    home = data_dir / "home-ddp"

    resumed = foundry("train", "c.yaml", "--resume", "--json", cwd=data_dir, home=home)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["run_dir"].endswith(run.name)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    weights, _ = single_process
    _assert_close(_weights(home, json.loads(resumed.stdout)["model"]), weights)


# ------------------------------------------------------- `fit` in a process group


def _fit_in_rank(rank: int, port: int, folder: str) -> None:
    """One rank of a 2-process `fit` (started by torch.multiprocessing.spawn)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2"
    )
    os.environ["LOCAL_RANK"] = str(rank)
    from safetensors.torch import save_file

    train, val = make_classification(400, seed=0), make_classification(200, seed=1)
    result = distributed.run_in_group(
        lambda: fit(
            new_model(),
            train,
            val,
            _early_config(),
            BINARY,
            Path(folder) / "run",
            n_outputs=2,
            progress=False,
        ),  # fmt: skip
        device="cpu",
    )
    save_file(result.state_dict, f"{folder}/rank{rank}.safetensors")
    Path(f"{folder}/rank{rank}.json").write_text(
        json.dumps({"history": result.history, "best_epoch": result.best_epoch})
    )


def _early_config():
    # accumulation too: each rank sums 2 local batches of 8 rows per step of 2 x 16 rows
    return small_config(
        epochs=30,
        batch_size=16,
        gradient_accumulation=2,
        early_stopping={"metric": "val_loss", "patience": 2, "min_delta": 0.01},
    )


def _count_reductions_in_rank(rank: int, port: int, folder: str) -> None:
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))  # fmt: skip
    reductions = []
    plain_wrap = distributed.wrap

    def counting_wrap(model, device):
        net = plain_wrap(model, device)

        def hook(state, bucket):  # every all-reduce of a gradient bucket passes here
            reductions.append(bucket.index())
            return allreduce_hook(None, bucket)

        net.register_comm_hook(None, hook)
        return net

    distributed.wrap = counting_wrap
    config = small_config(epochs=2, batch_size=16, gradient_accumulation=2)
    train, val = make_classification(400, seed=0), make_classification(100, seed=1)
    distributed.run_in_group(
        lambda: fit(new_model(), train, val, config, BINARY, Path(folder) / "run",
                    n_outputs=2, progress=False),
        device="cpu",
    )  # fmt: skip
    Path(f"{folder}/rank{rank}.json").write_text(json.dumps(reductions))


def test_accumulated_batches_reduce_gradients_once_per_step(tmp_path):
    # 200 rows per rank in local batches of 8: 25 batches, 13 optimizer steps an epoch.
    # Each step's earlier batch keeps its gradient local (no_sync); only the last reduces.
    torch.multiprocessing.spawn(_count_reductions_in_rank, args=(free_port(), str(tmp_path)),
                                nprocs=2)  # fmt: skip
    for rank in range(2):
        reductions = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert set(reductions) == {0}  # the tiny model's gradients fit one bucket
        assert len(reductions) == 2 * 13


@pytest.mark.slow
def test_ranks_stop_early_together_like_one_process(tmp_path):
    train, val = make_classification(400, seed=0), make_classification(200, seed=1)
    single = fit(
        new_model(), train, val, _early_config(), BINARY, tmp_path / "single",
        n_outputs=2, progress=False,
    )  # fmt: skip
    assert single.stopped_early  # the case under test: every rank must stop there too

    torch.multiprocessing.spawn(_fit_in_rank, args=(free_port(), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # every rank returns rank 0's record of each epoch
    assert [r["epoch"] for r in ranks[0]["history"]] == [r["epoch"] for r in single.history]
    assert ranks[0]["best_epoch"] == single.best_epoch
    for ours, theirs in zip(ranks[0]["history"], single.history, strict=True):
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-4)
    _assert_close(load_file(str(tmp_path / "rank1.safetensors")), single.state_dict)
    # rank 0 alone wrote the run directory
    assert [p.name for p in tmp_path.iterdir() if p.name == "run"] == ["run"]
    assert (tmp_path / "run" / "checkpoint" / "state.json").is_file()


# ------------------------------------------------ streamed shards in object storage


@pytest.mark.slow
def test_two_processes_stream_disjoint_shares_of_s3_shards(tmp_path, s3_bucket):
    # 4 Parquet shards (one row group each) in the bucket; explicit val / test files, so
    # every row of data.path trains. Rank r reads shards r, r + 2 (rank_pieces) through
    # its own connection and DataLoader worker; the shares are equal, so each epoch
    # trains every training row exactly once (unequal shares train the fewest full
    # batches any rank has: see StreamedTable.batches_per_epoch).
    import numpy as np
    import pandas as pd

    from foundry.data.stream import rank_pieces
    from foundry.errors import ModelError
    from foundry.objectstore import filesystem

    sizes = [160, 240, 240, 160]  # rank 0: 160 + 240, rank 1: 240 + 160 rows
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=sum(sizes) + 200), "c": rng.choice(["a", "b"], 1000)})
    df["y"] = np.where(df["x"] + rng.normal(scale=0.5, size=len(df)) > 0, "yes", "no")
    fs = filesystem(error=ModelError)
    start = 0
    for i, n in enumerate(sizes):
        fs.pipe_file(f"{s3_bucket}/train/part-{i}.parquet", df[start : start + n].to_parquet())
        start += n
    df[start : start + 100].to_parquet(tmp_path / "val.parquet")
    df[start + 100 :].to_parquet(tmp_path / "test.parquet")
    config = {
        "name": "st",
        "output_dir": "runs",
        "data": {
            "path": f"{s3_bucket}/train/*.parquet",
            "val_path": "val.parquet",
            "test_path": "test.parquet",
            "streaming": True,
            "pii": {"enabled": False},
            "stream": {"workers": 1, "block_rows": 64, "sample_rows": 200},
        },
        "features": {"target": "y"},
        "model": {"type": "mlp", "layers": [8]},
        "train": {"epochs": 2, "batch_size": 40},  # 20 rows per rank per step
        "evaluate": {
            "calibration": {"temperature_scaling": False},
            "explain": {"permutation_importance": False},
        },
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    home = tmp_path / "home"
    done = foundry("train", "c.yaml", "--nproc", "2", "--json", cwd=tmp_path, home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"] == "st:1"
    assert sorted(p.name for p in (home / "models" / "st").iterdir()) == ["1"]
    manifest = json.loads((home / "models" / "st" / "1" / "foundry.json").read_text())
    assert manifest["data"]["rows"]["train"] == sum(sizes)

    shares = [sum(sizes[i] for i in rank_pieces(len(sizes), r, 2)) for r in range(2)]
    (run,) = (tmp_path / "runs").iterdir()
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]
    for record in history:  # what each rank counted as it trained
        assert record["rows_per_rank"] == shares == [400, 400]
