"""`foundry.progress`: when bars are on, what they show (on stderr only), and that the
code paths they ride on (chunked file reading, chunked prediction) give exactly what a
one-shot read or a one-pass prediction gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tests.serve.serve_app_support import shared_toy

import foundry.data.load as load_module
import foundry.predictor as predictor_module
from foundry.data import read_table
from foundry.progress import ENV, progress_bar, progress_enabled, silenced


@pytest.fixture
def forced(monkeypatch):
    """FOUNDRY_PROGRESS=1: bars print plain lines although stderr is captured."""
    monkeypatch.setenv(ENV, "1")


# ------------------------------------------------------------------ the on/off rule


@pytest.mark.parametrize(
    ("env", "tty", "explicit", "expected"),
    [
        (None, False, None, False),  # a pipe or a file: off
        (None, True, None, True),  # a terminal: on
        (None, True, False, False),  # the caller said no
        ("1", False, None, True),  # forced on, also in a pipe
        ("0", True, None, False),  # forced off, also on a terminal
        ("1", True, False, False),  # an explicit no beats the environment
    ],
)
def test_progress_is_on_by_the_documented_rule(monkeypatch, env, tty, explicit, expected):
    if env is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, env)
    monkeypatch.setattr("foundry.progress._stderr_is_terminal", lambda: tty)
    assert progress_enabled(explicit) is expected


def test_quiet_and_json_silence_bars_even_when_forced(forced, capsys):
    with silenced():
        assert not progress_enabled()
        with progress_bar("work", total=10) as bar:
            bar.advance(10)
    assert progress_enabled()  # only inside the block
    assert capsys.readouterr() == ("", "")


def test_a_forced_bar_prints_rate_and_eta_on_stderr_only(forced, capsys):
    with progress_bar("reading big.csv", total=30_000_000, unit="bytes") as bar:
        for _ in range(30):
            bar.advance(1_000_000)
    with progress_bar("predicting", total=1000, unit="rows") as bar:
        bar.advance(1000)
    out, err = capsys.readouterr()
    assert out == ""
    reading, predicting = err.strip().splitlines()
    assert "reading big.csv" in reading and "30.0/30.0 MB" in reading
    assert "B/s" in reading and "eta" in reading
    assert "1000/1000 rows" in predicting and "rows/s" in predicting and "eta" in predicting


def test_a_bar_inside_a_bar_stays_silent(forced, capsys):
    with progress_bar("outer", total=2, unit="steps") as outer:
        with progress_bar("inner", total=5) as inner:
            inner.advance(5)
        assert not inner.enabled
        outer.advance(2)
    err = capsys.readouterr().err
    assert "outer" in err and "inner" not in err


# ------------------------------------------------------------------ reading files


def _mixed_csv(path, rows: int = 60_000):
    """~2 MB (several parser blocks): `a` is all integers until a float in the last row,
    `b` has gaps, `c` is text with gaps, `d` is integers."""
    lines = ["a,b,c,d"]
    lines += [f"{i},{'' if i % 7 == 0 else i * 2},{'x' if i % 3 else ''},{i}" for i in range(rows)]
    lines.append("1.5,,late,0")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reading_a_big_csv_with_a_bar_gives_the_one_shot_frame(tmp_path, forced, capsys,
                                                               monkeypatch):
    path = _mixed_csv(tmp_path / "mixed.csv")
    expected = read_table(path, progress=False)
    monkeypatch.setattr(load_module, "PROGRESS_MIN_BYTES", 1000)
    got = read_table(path)
    pd.testing.assert_frame_equal(got, expected)
    assert got["a"].dtype == np.float64 and got["a"].iloc[-1] == 1.5
    assert got["b"].isna().sum() == expected["b"].isna().sum() > 0
    err = capsys.readouterr().err
    assert "reading mixed.csv" in err and "B/s" in err and "eta" in err


def test_the_c_parser_fallback_reads_the_same_with_a_bar(tmp_path, forced, capsys,
                                                         monkeypatch):
    path = _mixed_csv(tmp_path / "mixed.csv")
    expected = pd.read_csv(path, engine="c")
    real = pd.read_csv

    def pyarrow_refuses(source, **kwargs):
        if kwargs.get("engine") == "pyarrow":
            source.read(1 << 20)  # it got part way
            raise ValueError("pyarrow refuses this file")
        return real(source, **kwargs)

    monkeypatch.setattr(load_module.pd, "read_csv", pyarrow_refuses)
    monkeypatch.setattr(load_module, "PROGRESS_MIN_BYTES", 1000)
    pd.testing.assert_frame_equal(read_table(path), expected)
    size = f"{path.stat().st_size / 1e6:.1f}"
    assert f"{size}/{size} MB" in capsys.readouterr().err  # counted once, not twice


def test_reading_a_big_jsonl_with_a_bar_gives_the_one_shot_frame(tmp_path, forced, capsys,
                                                                 monkeypatch):
    path = tmp_path / "mixed.jsonl"
    lines = [f'{{"a": {i}, "b": {"null" if i % 5 == 0 else i / 2}, "c": "t{i}"}}'
             for i in range(20_000)]
    lines.append('{"a": 2.5, "c": null, "d": true}')
    path.write_text("\r\n".join(lines) + "\n")
    expected = read_table(path, progress=False)
    monkeypatch.setattr(load_module, "PROGRESS_MIN_BYTES", 1000)
    pd.testing.assert_frame_equal(read_table(path), expected)
    assert "mixed.jsonl" in capsys.readouterr().err


def test_small_files_show_no_bar(tmp_path, forced, capsys):
    path = _mixed_csv(tmp_path / "small.csv", rows=100)
    read_table(path)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ predicting


def test_chunked_prediction_equals_one_pass(tmp_path_factory, forced, capsys, monkeypatch):
    from foundry.predictor import load
    from foundry.registry import Registry

    toy = shared_toy(tmp_path_factory)
    predictor = load(toy.ref, registry=Registry(toy.home))
    full = pd.read_csv(toy.csv)
    frame = pd.concat([toy.rows] * 3, ignore_index=True)  # 480 rows
    labelled = pd.concat([full] * 3, ignore_index=True)
    monkeypatch.setattr(predictor_module, "PREDICT_CHUNK", 100)  # 5 chunks, the last short
    one_pass = predictor._predict(frame)  # run_model forwards the same 100-row slices
    y_one, out_one = predictor._labelled_outputs(labelled)

    chunked = predictor.predict(frame, progress=True)
    y, outputs = predictor.labelled_outputs(labelled, progress=True)
    pd.testing.assert_frame_equal(chunked, one_pass)
    np.testing.assert_array_equal(y, y_one)
    np.testing.assert_array_equal(outputs, out_one)
    err = capsys.readouterr().err
    assert f"predicting with {toy.ref}" in err and "480/480 rows" in err and "rows/s" in err
    assert f"scoring with {toy.ref}" in err

    predictor.predict(frame)  # the library default (serving): chunked, silent
    assert capsys.readouterr().err == ""


def test_the_training_bar_follows_the_same_rules(monkeypatch):
    from foundry.training.progress import EpochBar

    def shown(enabled: bool = True) -> bool:
        return EpochBar(enabled=enabled, n_batches=10, epochs=2).enabled

    monkeypatch.setenv(ENV, "1")
    assert shown() and not shown(enabled=False)
    with silenced():  # --quiet / --json
        assert not shown()
    monkeypatch.setenv(ENV, "0")
    assert not shown()


def test_a_forced_training_run_prints_lines_inside_an_epoch(monkeypatch, capsys, tmp_path):
    """FOUNDRY_PROGRESS=1 without a terminal: a line every LOG_EVERY_S seconds within an
    epoch (issue 14: a 7-minute epoch printed nothing). The interval is set to 0 here so
    every batch prints one, without waiting."""
    import re

    import torch

    import foundry.training.progress as training_progress
    from foundry.config.schema import TrainConfig
    from foundry.data.schema import TaskInfo
    from foundry.training import fit

    monkeypatch.setattr(training_progress, "LOG_EVERY_S", 0.0)
    x = torch.randn(100, 3, generator=torch.Generator().manual_seed(0))
    data = {"numeric": x, "target": (x[:, 0] > 0).long()}
    model = torch.nn.Linear(3, 2)
    forward = model.forward
    model.forward = lambda inputs: forward(inputs["numeric"])
    config = TrainConfig(epochs=2, batch_size=20, num_threads=1)
    task = TaskInfo(target="y", task="binary", classes=["a", "b"])

    def train(run: str) -> str:
        fit(model, data, None, config, task, tmp_path / run, n_outputs=2, progress=True)
        out, err = capsys.readouterr()
        assert out == ""
        return err

    monkeypatch.setenv(ENV, "1")
    lines = [line for line in train("forced").splitlines() if ": batch " in line]
    # batches 1-4 of 5 in each epoch (the 5th is followed by the epoch's own line)
    assert [line.split(" (")[0] for line in lines] == [
        f"epoch {e}/2: batch {b}/5" for e in (1, 2) for b in (1, 2, 3, 4)
    ]
    assert all(re.search(r"batch/s, \d+:\d\d:\d\d elapsed, eta ", line) for line in lines)
    with silenced():  # --quiet / --json
        assert ": batch " not in train("quiet")
    monkeypatch.delenv(ENV)  # captured stderr is not a terminal: off by default
    assert ": batch " not in train("default")
