"""Tables for the `foundry init` tests: near-unique names with structure, as Debian's."""

from __future__ import annotations

import random

import pandas as pd

WORDS = ["http", "json", "yaml", "crypto", "image", "sound", "mail", "sql", "font", "math",
         "git", "ssl", "zip", "log", "xml", "cache", "proxy", "redis", "test", "cli"]  # fmt: skip
STYLES = {
    "python": lambda a, b: f"python3-{a}{b}",
    "perl": lambda a, b: f"lib{a}-{b}-perl",
    "golang": lambda a, b: f"golang-github-{a}-{b}",
    "javascript": lambda a, b: f"node-{a}-{b}",
}


def package_table(n: int, seed: int = 0) -> pd.DataFrame:
    """`package` names (unique, with the structure of Debian's: the section is in the
    name), a `size` number and the `section` target."""
    rng = random.Random(seed)
    names = [(s, f(a, b)) for s, f in STYLES.items() for a in WORDS for b in WORDS if a != b]
    rows = rng.sample(names, n)
    return pd.DataFrame(
        {
            "package": [name for _, name in rows],
            "size": [rng.random() for _ in rows],
            "section": [section for section, _ in rows],
        }
    )
