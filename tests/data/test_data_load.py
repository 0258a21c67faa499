from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from foundry.data import read_table
from foundry.errors import DataError

FRAME = pd.DataFrame({"x": [1.5, 2.0, 3.25], "name": ["a", "b", "c"], "y": [0, 1, 0]})


def test_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    FRAME.to_csv(path, index=False)
    df = read_table(path)
    assert list(df.columns) == ["x", "name", "y"]
    assert df["x"].tolist() == [1.5, 2.0, 3.25]
    assert df["name"].tolist() == ["a", "b", "c"]


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_csv_delimiter_is_sniffed(tmp_path: Path, sep: str) -> None:
    path = tmp_path / "d.csv"
    FRAME.to_csv(path, index=False, sep=sep)
    df = read_table(path)
    assert list(df.columns) == ["x", "name", "y"]
    assert len(df) == 3


def test_csv_explicit_delimiter_and_single_column(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a;b\n1;2\n")
    assert list(read_table(path, delimiter=";").columns) == ["a", "b"]
    path.write_text("only\n1\n2\n")
    assert read_table(path)["only"].tolist() == [1, 2]


def test_csv_with_quoted_newlines_falls_back_to_c_engine(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('text,y\n"two\nlines",1\nplain,0\n')
    df = read_table(path)
    assert df["text"].tolist() == ["two\nlines", "plain"]


def test_parquet_and_jsonl(tmp_path: Path) -> None:
    pq = tmp_path / "d.parquet"
    FRAME.to_parquet(pq)
    pd.testing.assert_frame_equal(read_table(pq), FRAME, check_dtype=False)
    jl = tmp_path / "d.jsonl"
    FRAME.to_json(jl, orient="records", lines=True)
    pd.testing.assert_frame_equal(read_table(jl), FRAME, check_dtype=False)


def test_image_folder(image_folder: Path) -> None:
    df = read_table(image_folder)
    assert list(df.columns) == ["image", "label"]
    assert df["label"].tolist() == ["cat"] * 3 + ["dog"] * 3
    assert all(Path(p).is_absolute() and Path(p).exists() for p in df["image"])
    assert df["image"].tolist() == sorted(df["image"])  # deterministic order
    assert not any(p.endswith(".txt") for p in df["image"])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found.*nope.csv"):
        read_table(tmp_path / "nope.csv")


def test_empty_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.*empty.csv"):
        read_table(empty)
    header = tmp_path / "header.csv"
    header.write_text("a,b\n")
    with pytest.raises(DataError, match="no rows.*header.csv"):
        read_table(header)


def test_ragged_csv(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match="malformed CSV.*ragged.csv"):
        read_table(path)


def test_bad_parquet_and_jsonl(tmp_path: Path) -> None:
    pq = tmp_path / "bad.parquet"
    pq.write_text("not parquet")
    with pytest.raises(DataError, match="bad.parquet"):
        read_table(pq)
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(DataError, match="malformed JSONL.*bad.jsonl"):
        read_table(jl)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "d.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"unsupported file extension '\.xlsx'.*\.csv.*\.parquet"):
        read_table(path)


def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="flat has no class subfolders"):
        read_table(tmp_path / "flat")
    (tmp_path / "noimg" / "cat").mkdir(parents=True)
    (tmp_path / "noimg" / "cat" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="noimg has no images"):
        read_table(tmp_path / "noimg")
