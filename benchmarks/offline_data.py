"""The datasets `benchmarks/defaults.py` runs on, all built from what is on this machine
(no downloads): scikit-learn's bundled tables, palmerpenguins, generated tables, and
three text tables built from files the system and the virtualenv install.

    for ds in build_all(cache_dir(), max_rows=12_000):   # [Dataset], skipped ones printed
        ds.path, ds.target, ds.kind, ds.source, ds.text, ds.name_column

Each builder writes one CSV into the cache folder (`FOUNDRY_BENCH_CACHE`, default
`<tmp>/foundry-bench-data`) and reuses it on the next run; the CSV's rows depend only on
the source files and `max_rows`. A builder whose source is missing returns None with the
reason, and `build_all` prints it and goes on.

Text tables (label ← text, plus a name column, as the issue's package table has):
- **docstrings**: the first paragraph of every module, class and function docstring in
  the standard library and the virtualenv's packages (read with `ast`, nothing imported)
  → the top-level package it comes from (`json`, `torch`, `sklearn`, ...); the name
  column is the object's own name (`walk_packages`), not its dotted path (which would
  name the label).
- **manpages**: the one-line NAME description of each English manual page under
  /usr/share/man/man*/ (`ls \\- list directory contents`) → its section (1-8).
- **debian**: `apt-cache dumpavail`: Package and the Description's first line → Section
  (the `contrib/` or `non-free/` area prefix dropped), the 12 largest sections.
Text tables keep the 12 largest labels and at most `max_rows` rows, sampled with a fixed
seed in proportion to the labels' sizes.
"""

from __future__ import annotations

import ast
import gzip
import os
import re
import subprocess
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["BUILDERS", "Dataset", "build", "build_all", "cache_dir", "parse_dumpavail"]

TOP_LABELS = 12
"""Labels a text table keeps (the largest): the issue's package table had 12 sections."""
PER_PACKAGE = 2_000
"""Docstrings read per top-level package at most (files in sorted path order): the
large packages all reach it, so the 12 kept are near-balanced and the build is quick."""
MIN_ROWS_PER_LABEL = 30
"""Smaller labels are dropped: a 0.8/0.1/0.1 split needs a few rows of each in test."""


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: str
    """"tabular" or "text"."""
    path: Path
    target: str
    source: str
    """Where the rows came from, in words (printed beside the results)."""
    text: str | None = None
    """The text column the TF-IDF baselines read (text tables)."""
    name_column: str | None = None
    """A name column that carries signal too (package or object names), or None."""

    @property
    def rows(self) -> int:
        return sum(1 for _ in self.path.open()) - 1


def cache_dir() -> Path:
    return Path(
        os.environ.get("FOUNDRY_BENCH_CACHE") or Path(tempfile.gettempdir()) / "foundry-bench-data"
    )


# ------------------------------------------------------------------------ tabular


def _sklearn(name: str) -> Callable[[int | None], tuple[pd.DataFrame, str] | str]:
    def build(max_rows: int | None) -> tuple[pd.DataFrame, str] | str:
        from sklearn import datasets

        frame = getattr(datasets, f"load_{name}")(as_frame=True).frame
        # class names, not 0/1/2: the target is a category however a reader types it
        names = getattr(datasets, f"load_{name}")().target_names
        frame["target"] = np.asarray(names)[frame["target"].to_numpy()]
        return frame, f"scikit-learn's bundled load_{name}()"

    return build


def _penguins(max_rows: int | None) -> tuple[pd.DataFrame, str] | str:
    try:
        from palmerpenguins import load_penguins
    except ImportError:
        return "the palmerpenguins package is not installed"
    return load_penguins().drop(columns=["year"]), "palmerpenguins.load_penguins()"


def _generated(max_rows: int | None) -> tuple[pd.DataFrame, str] | str:
    """make_classification with two category columns (binned informative features with
    some labels swapped) and missing values in two number columns."""
    from sklearn.datasets import make_classification

    n = 4000 if max_rows is None else min(4000, max_rows)
    x, y = make_classification(
        n_samples=n,
        n_features=10,
        n_informative=6,
        n_redundant=2,
        n_classes=3,
        flip_y=0.03,
        random_state=0,
    )
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(x[:, 2:], columns=[f"x{j}" for j in range(2, 10)])
    for j, letters in ((0, "abcde"), (1, "pqrstuvw")):
        codes = pd.qcut(x[:, j], len(letters), labels=False).astype(int)
        swap = rng.random(n) < 0.1  # categories that mostly, not always, follow x_j
        codes[swap] = rng.integers(0, len(letters), swap.sum())
        frame[f"cat{j}"] = np.asarray(list(letters))[codes]
    for col in ("x2", "x3"):
        frame.loc[rng.random(n) < 0.15, col] = np.nan
    frame["label"] = np.asarray(["red", "green", "blue"])[y]
    return frame, (
        f"sklearn make_classification({n} rows, 3 classes) + 2 category "
        "columns, 15% missing in 2 columns"
    )


# --------------------------------------------------------------------------- text


def _first_paragraph(doc: str) -> str:
    para = doc.strip().split("\n\n", 1)[0]
    return " ".join(para.split())


def _docstrings_of(path: Path) -> Iterator[tuple[str, str]]:
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, RecursionError):
        return
    module = path.stem if path.stem != "__init__" else path.parent.name
    nodes: list[tuple[str, ast.AST]] = [(module, tree)]
    nodes += [
        (n.name, n)
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    ]
    for name, node in nodes:
        doc = ast.get_docstring(node)  # type: ignore[arg-type]
        if doc:
            yield name, _first_paragraph(doc)


def _docstrings(
    max_rows: int | None, roots: list[Path] | None = None
) -> tuple[pd.DataFrame, str] | str:
    """`roots`: the standard library's folder, then site-packages (the defaults)."""
    paths = sysconfig.get_paths()
    roots = roots or [Path(paths["stdlib"]), Path(paths["purelib"])]
    rows = []
    for root in roots:
        if not root.is_dir():
            continue
        stdlib = root == roots[0]
        per_package: dict[str, int] = {}
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).parts
            # site-packages inside the stdlib folder is the other root; tests and
            # vendored copies repeat other packages' text under another label
            if (
                parts[0] in ("site-packages", "dist-packages", "test", "tests", "idlelib")
                or any(p in ("tests", "test", "_vendor", "vendored") for p in parts)
                or ".dist-info" in parts[0]
                or (parts[0].startswith("_") and not stdlib)
            ):
                continue
            package = parts[0].removesuffix(".py")
            if per_package.get(package, 0) >= PER_PACKAGE:
                continue  # enough of this one (parsing all of torch takes minutes)
            for name, text in _docstrings_of(path):
                if 20 <= len(text) <= 400:
                    rows.append((name, text, package))
                    per_package[package] = per_package.get(package, 0) + 1
    if not rows:
        return "no Python source files found under " + ", ".join(map(str, roots))
    frame = pd.DataFrame(rows, columns=["name", "docstring", "package"])
    return _keep_top(frame, "docstring", "package", max_rows), (
        f"first paragraph of docstrings under {' and '.join(map(str, roots))} (ast, not "
        f"imported; at most {PER_PACKAGE} a package)"
    )


_ESCAPES = [
    (r"\\f[BIRPC]|\\f\(..|\\f\[[^]]*\]", ""),
    (r"\\[-e]", "-"),
    (r"\\\(em|\\\(en", "-"),
    (r"\\\(.{2}|\\\[[^]]*\]", " "),
    (r"\\&|\\c|\\%|\\:", ""),
    (r'\\"', ""),
    (r"\\s[-+]?\d", ""),
    (r"\\ ", " "),
    (r"\\.", ""),
]


def _troff_text(line: str) -> str:
    for pattern, repl in _ESCAPES:
        line = re.sub(pattern, repl, line)
    return line


def _man_name_line(text: str) -> tuple[str, str] | None:
    """(names, description) from a page's NAME section (man or mdoc macros)."""
    lines = text.splitlines()
    if lines and lines[0].startswith(".so "):
        return None  # a redirect to another page
    nd = [ln for ln in lines if ln.startswith(".Nd ")]
    if nd:  # mdoc: .Nm name / .Nd description
        nm = next((ln[4:] for ln in lines if ln.startswith(".Nm ")), "")
        return _troff_text(nm).strip(), _troff_text(nd[0][4:]).strip().strip('"')
    body: list[str] = []
    inside = False
    for line in lines:
        if re.match(r'\.S[hH]\s+"?(NAME|Name)"?\s*$', line):
            inside = True
            continue
        if inside:
            if line.startswith((".SH", ".Sh", ".SS")):
                break
            if line.startswith((".", "'")):
                words = line.split(None, 1)  # .B name: keep the macro's words
                if len(words) == 2 and words[0] in (".B", ".BR", ".I", ".IR", ".BI"):
                    body.append(words[1].replace('"', ""))
                continue
            body.append(line)
    joined = " ".join(_troff_text(part) for part in body)
    joined = " ".join(joined.split())
    match = re.match(r"(.+?)\s+[-\u2013\u2014]+\s+(.+)", joined)
    return (match.group(1), match.group(2)) if match else None


def _manpages(
    max_rows: int | None, root: Path = Path("/usr/share/man")
) -> tuple[pd.DataFrame, str] | str:
    rows = []
    for folder in sorted(root.glob("man[1-8]")):  # English pages: not man/<lang>/man*
        section = folder.name.removeprefix("man")
        for path in sorted(folder.glob("*.gz")):
            try:
                text = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
            except (OSError, EOFError):
                continue
            found = _man_name_line(text)
            if found and len(found[1]) >= 5:
                rows.append((found[0][:200], found[1][:300], section))
    if not rows:
        return f"no gzipped manual pages with a NAME line under {root}/man[1-8]"
    frame = pd.DataFrame(rows, columns=["name", "description", "section"])
    return _keep_top(frame, "description", "section", max_rows), (
        f"NAME lines of {len(rows)} manual pages under {root}/man[1-8]/*.gz"
    )


def _debian(max_rows: int | None) -> tuple[pd.DataFrame, str] | str:
    try:
        text = subprocess.run(
            ["apt-cache", "dumpavail"], capture_output=True, text=True, timeout=120, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"apt-cache dumpavail failed ({exc})"
    frame = parse_dumpavail(text)
    if frame.empty:
        return "apt-cache dumpavail listed no packages (run apt-get update first)"
    return _keep_top(frame, "description", "section", max_rows), (
        f"apt-cache dumpavail: {len(frame)} packages, Package + Description → Section"
    )


def parse_dumpavail(text: str) -> pd.DataFrame:
    """package, description (the Description's first line), section (area prefix
    dropped: `contrib/net` is `net`) of each stanza of `apt-cache dumpavail`."""
    rows = []
    for stanza in text.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Section|Description): (.*)$", stanza, re.M))
        if len(fields) == 3:
            section = fields["Section"].rsplit("/", 1)[-1]
            rows.append((fields["Package"], fields["Description"].strip(), section))
    frame = pd.DataFrame(rows, columns=["package", "description", "section"])
    return frame.drop_duplicates("package").reset_index(drop=True)


def _keep_top(frame: pd.DataFrame, text: str, target: str, max_rows: int | None) -> pd.DataFrame:
    """The TOP_LABELS largest labels (of at least MIN_ROWS_PER_LABEL rows), texts that
    occur under one label only, then at most `max_rows` rows (each label sampled in
    proportion, fixed seed)."""
    labels_of = frame.groupby(text)[target].nunique()
    frame = frame[frame[text].map(labels_of) == 1].drop_duplicates([text, target])
    counts = frame[target].value_counts()
    keep = counts[counts >= MIN_ROWS_PER_LABEL].index[:TOP_LABELS]
    frame = frame[frame[target].isin(keep)]
    if max_rows is not None and len(frame) > max_rows:
        share = max_rows / len(frame)
        parts = [
            group.sample(max(MIN_ROWS_PER_LABEL // 3, round(len(group) * share)), random_state=0)
            for _, group in frame.groupby(target)
        ]
        frame = pd.concat(parts)
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


# ------------------------------------------------------------------------ builders

BUILDERS: dict[str, tuple[str, str, str | None, str | None, Callable]] = {
    # name: (kind, target, text column, name column, builder)
    "iris": ("tabular", "target", None, None, _sklearn("iris")),
    "wine": ("tabular", "target", None, None, _sklearn("wine")),
    "breast_cancer": ("tabular", "target", None, None, _sklearn("breast_cancer")),
    "digits": ("tabular", "target", None, None, _sklearn("digits")),
    "penguins": ("tabular", "species", None, None, _penguins),
    "generated": ("tabular", "label", None, None, _generated),
    "docstrings": ("text", "package", "docstring", "name", _docstrings),
    "manpages": ("text", "section", "description", "name", _manpages),
    "debian": ("text", "section", "description", "package", _debian),
}


def build(name: str, cache: Path, max_rows: int | None = None) -> Dataset | str:
    """The dataset `name` as a cached CSV, or why it cannot be built here."""
    kind, target, text, name_column, builder = BUILDERS[name]
    suffix = "" if max_rows is None else f"-{max_rows}"
    path = cache / f"{name}{suffix}.csv"
    source_file = path.with_suffix(".source")
    if not (path.is_file() and source_file.is_file()):
        built = builder(max_rows)
        if isinstance(built, str):
            return built
        frame, source = built
        cache.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        source_file.write_text(source)
    source = source_file.read_text() + f" (cached: {path})"
    return Dataset(name, kind, path, target, source, text, name_column)


def build_all(
    cache: Path, max_rows: int | None = None, only: list[str] | None = None
) -> list[Dataset]:
    out = []
    for name in BUILDERS:
        if only and name not in only:
            continue
        built = build(name, cache, max_rows if BUILDERS[name][0] == "text" else None)
        if isinstance(built, str):
            print(f"skipped {name}: {built}")
        else:
            out.append(built)
    return out
