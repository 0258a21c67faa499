"""benchmarks/offline_data.py builds well-formed tables from the files it reads, and
benchmarks/defaults.py's quick mode runs end to end on tiny ones (the full run is the
benchmark; these keep it from rotting)."""

from __future__ import annotations

import gzip
import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str):
    # by path: an installed third-party package is also called `benchmarks`
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


data = _module("offline_data")
defaults = _module("defaults")


def _page(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()))


def test_man_name_lines_are_read_from_man_and_mdoc_pages():
    man = ".TH LS 1\n.SH NAME\nls \\- list directory contents\n.SH SYNOPSIS\n.B ls\n"
    assert data._man_name_line(man) == ("ls", "list directory contents")
    quoted = '.SH "NAME"\n\\fBgit\\-push\\fR \\- Update remote refs\n.SH SYNOPSIS\n'
    assert data._man_name_line(quoted) == ("git-push", "Update remote refs")
    mdoc = ".Dd May 1\n.Dt SSH 1\n.Sh NAME\n.Nm ssh\n.Nd OpenSSH remote login client\n"
    assert data._man_name_line(mdoc) == ("ssh", "OpenSSH remote login client")
    assert data._man_name_line(".so man1/other.1\n") is None
    assert data._man_name_line(".TH X 1\n.SH DESCRIPTION\nno name section\n") is None


def test_manpages_become_description_to_section_rows(tmp_path):
    for i in range(35):
        _page(
            tmp_path / "man1" / f"tool{i}.1.gz",
            f".SH NAME\ntool{i} \\- print the files of archive number {i}\n",
        )
        _page(
            tmp_path / "man3" / f"call{i}.3.gz",
            f".SH NAME\ncall{i} \\- allocate memory block {i} for a C program\n",
        )
    _page(tmp_path / "man3" / "alias.3.gz", ".so man3/call1.3\n")
    _page(tmp_path / "fr" / "man1" / "outil.1.gz", ".SH NAME\noutil \\- un outil\n")
    frame, source = data._manpages(None, root=tmp_path)
    assert list(frame.columns) == ["name", "description", "section"]
    assert frame.section.value_counts().to_dict() == {1: 35, 3: 35} or frame.section.astype(
        str
    ).value_counts().to_dict() == {"1": 35, "3": 35}
    row = frame[frame.name == "tool7"].iloc[0]
    assert row.description == "print the files of archive number 7"
    assert "70 manual pages" in source  # the redirect and the French page are not read


def test_dumpavail_stanzas_become_package_description_section():
    text = (
        "Package: python3-foo\nSection: python\nDescription: Foo for Python 3\n"
        " long text\n\nPackage: libbar-perl\nSection: contrib/perl\nDescription: Bar "
        "in Perl\n\nPackage: nosection\nDescription: skipped\n\n"
        "Package: python3-foo\nSection: python\nDescription: Foo for Python 3\n"
    )
    frame = data.parse_dumpavail(text)
    assert frame.to_dict("records") == [
        {"package": "python3-foo", "description": "Foo for Python 3", "section": "python"},
        {"package": "libbar-perl", "description": "Bar in Perl", "section": "perl"},
    ]


def test_docstrings_are_labelled_by_their_top_level_package(tmp_path):
    for package in ("alpha", "beta"):
        folder = tmp_path / package / "sub"
        folder.mkdir(parents=True)
        body = "\n".join(
            f'def f{i}():\n    """{package} helper number {i} does a thing.\n\n    More.\n    """\n'
            for i in range(40)
        )
        (folder / "mod.py").write_text(f'"""The {package} sub module, first line."""\n{body}')
    (tmp_path / "alpha" / "tests").mkdir()
    (tmp_path / "alpha" / "tests" / "test_x.py").write_text('"""A test module, skipped."""')
    frame, _ = data._docstrings(None, roots=[tmp_path])
    assert set(frame.package) == {"alpha", "beta"}
    assert len(frame) == 82  # 40 functions + the module, in each package
    row = frame[(frame.name == "f3") & (frame.package == "beta")].iloc[0]
    assert row.docstring == "beta helper number 3 does a thing."  # the first paragraph
    assert not frame.docstring.str.contains("test module").any()


def test_keep_top_keeps_the_largest_labels_and_samples_in_proportion():
    sizes = {f"label{k}": 40 + 10 * k for k in range(14)}  # 14 labels, 12 are kept
    rows = [(f"text {label} {i}", label) for label, n in sizes.items() for i in range(n)]
    rows.append(("text label13 0", "label12"))  # one text under two labels: dropped
    frame = pd.DataFrame(rows, columns=["text", "y"]).sample(frac=1, random_state=1)
    kept = data._keep_top(frame, "text", "y", max_rows=None)
    assert set(kept.y) == {f"label{k}" for k in range(2, 14)}
    assert not (kept.text == "text label13 0").any()
    sampled = data._keep_top(frame, "text", "y", max_rows=600)
    assert abs(len(sampled) - 600) <= 12
    shares = sampled.y.value_counts(normalize=True)
    assert shares["label13"] > shares["label2"]


def _tiny_text(tmp_path: Path) -> data.Dataset:
    words = {
        "net": "network socket http client",
        "doc": "documentation manual html guide",
        "libs": "shared library runtime files",
    }
    rows = []
    for section, vocab in words.items():
        for i in range(30):
            tokens = vocab.split()
            rows.append(
                (f"pkg-{section}-{i}", f"{tokens[i % 4]} {tokens[(i + 1) % 4]} {i}", section)
            )
    path = tmp_path / "tiny.csv"
    pd.DataFrame(rows, columns=["package", "description", "section"]).to_csv(path, index=False)
    return data.Dataset("tiny", "text", path, "section", "test rows", "description", "package")


def test_quick_mode_runs_the_baselines_on_a_tiny_text_table(tmp_path, capsys):
    ds = _tiny_text(tmp_path)
    rows = defaults.run([ds], 1, ("tfidf_svc", "tfidf_lr"), "10s", tmp_path)
    methods = {r["method"] for r in rows}
    assert methods == {"tfidf_svc", "tfidf_svc+name", "tfidf_lr+name"}
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["macro_f1"] <= 1.0
        assert r["fit_s"] > 0 and r["predict_ms_1k"] > 0
    table = defaults.summary(rows)
    svc = table[table.method == "tfidf_svc+name"].iloc[0]
    assert svc.fit_vs_baseline == pytest.approx(1.0)
    assert "| tiny | tfidf_lr+name |" in defaults.markdown(table)


@pytest.mark.slow
def test_quick_mode_end_to_end_on_iris(tmp_path, monkeypatch, capsys):
    """`--quick` on one table: init's config trained through the public API, LightGBM
    on the same split; an unknown model type would be a skipped row, not a crash."""
    monkeypatch.setenv("FOUNDRY_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path / "home"))
    rows = defaults.main(
        [
            "--quick",
            "--only",
            "iris",
            "--methods",
            "foundry_init,lightgbm",
            "--out",
            str(tmp_path / "rows.json"),
        ]
    )
    scored = {r["method"]: r for r in rows if "skipped" not in r}
    assert set(scored) == {"foundry_init", "lightgbm"}
    assert "note" not in scored["foundry_init"]  # foundry's split is the baselines' split
    assert scored["lightgbm"]["accuracy"] > 0.8
    assert (tmp_path / "cache" / "iris.csv").is_file()
    assert "| iris | lightgbm |" in capsys.readouterr().out
