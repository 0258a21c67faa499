"""Write the data of the GPT examples into examples/data/, offline and deterministic.

    python examples/make_lm_data.py              # both
    python examples/make_lm_data.py corpus       # just one

`corpus` (lm_corpus.jsonl, one {"text": ...} per line): the docstrings of a fixed list of
Python standard-library modules and of their public classes, functions and methods —
English prose about programming that ships with every Python, ~600 KB. Each docstring is
one document (so a split by document never cuts one in half). The text depends on the
Python version only.

`instructions` (lm_instructions.jsonl, {"prompt", "completion"}): "What does json.dumps
do?" → the first sentence of its docstring, for the same functions; a small set to try
`loss_on: completion` and the chat template with.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"

MODULES = [
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "calendar", "cmd",
    "codecs", "collections", "colorsys", "concurrent.futures", "configparser", "contextlib",
    "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message",
    "enum", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt",
    "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html.parser", "http.client",
    "http.server", "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "locale",
    "logging", "lzma", "mailbox", "mimetypes", "multiprocessing", "numbers", "operator",
    "optparse", "os", "pathlib", "pdb", "pickle", "pkgutil", "platform", "plistlib",
    "poplib", "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shelve",
    "shlex", "shutil", "signal", "smtplib", "socket", "socketserver", "sqlite3",
    "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "timeit", "tokenize", "traceback", "turtle", "types", "typing",
    "unittest", "urllib.parse", "urllib.request", "uuid", "wave", "weakref", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zoneinfo",
]  # fmt: skip
"""Pure-Python modules with long docstrings; no GUI toolkit is imported (turtle only
defines classes until used)."""

MIN_CHARS = 40  # one-line stubs ("Return self.") teach nothing and repeat a lot


def docstrings() -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) of each module and its public members, in a fixed order."""
    seen: set[str] = set()  # the same docstring reached through two names counts once
    for module_name in MODULES:
        # deprecated modules and attributes (typing.io...) still document themselves
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                module = importlib.import_module(module_name)
            except ImportError:  # not built into this Python (e.g. no _sqlite3, _lzma)
                continue
            docs = [(name, inspect.getdoc(obj)) for name, obj in _members(module_name, module)]
        for name, doc in docs:
            if doc and len(doc) >= MIN_CHARS and doc not in seen:
                seen.add(doc)
                yield name, doc.strip()


def _members(module_name: str, module: object) -> Iterator[tuple[str, object]]:
    yield module_name, module
    for attr in sorted(vars(module)):
        obj = getattr(module, attr)
        if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue  # private, or imported from elsewhere (documented there)
        if inspect.isclass(obj):
            yield f"{module_name}.{attr}", obj
            for method in sorted(vars(obj)):
                member = vars(obj)[method]
                if not method.startswith("_") and callable(member):
                    yield f"{module_name}.{attr}.{method}", member
        elif inspect.isfunction(obj):
            yield f"{module_name}.{attr}", obj


def corpus() -> Path:
    path = DATA / "lm_corpus.jsonl"
    records = [{"text": doc} for _, doc in docstrings()]
    return _write_jsonl(path, records)


_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)", re.S)


def instructions() -> Path:
    records = []
    for name, doc in docstrings():
        if name in MODULES:
            continue  # a module's first line is a title, not an answer
        first = " ".join(doc.split("\n\n")[0].split())
        match = _SENTENCE.match(first)
        if match and 20 <= len(match.group(1)) <= 200:
            records.append({"prompt": f"What does {name} do?", "completion": match.group(1)})
    return _write_jsonl(DATA / "lm_instructions.jsonl", records)


def _write_jsonl(path: Path, records: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


MAKERS = {"corpus": corpus, "instructions": instructions}


def main(names: list[str]) -> None:
    for name in names or MAKERS:
        if name not in MAKERS:
            raise SystemExit(f"unknown data set '{name}' (choose from {', '.join(MAKERS)})")
        path = MAKERS[name]()
        print(f"{name}: {path} ({path.stat().st_size / 1e3:,.0f} KB)")


if __name__ == "__main__":
    main(sys.argv[1:])
