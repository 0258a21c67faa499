"""Write interactions tables for the recommender examples into examples/data/.

    python examples/make_interactions.py            # all three
    python examples/make_interactions.py debian     # just one

debian   real, offline: Debian's package metadata (`apt-cache dumpavail`, the package
         lists this machine's apt has). A package is a user; the packages it Depends /
         Pre-Depends on (weight 2) or Recommends (weight 1) are its items. No time: split
         it at random (`recommend.split: random`). How many rows depends on the machine's
         apt sources (63,697 packages on the Debian 12 image this was written on).
debian_items  each package's Section and Priority: item features for `two_tower`.
planted  generated: groups of users who share a block of items (foundry.recommend.planted),
         with a time column, for a temporal split.

benchmarks/recommend.py reads the same builder.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

DATA = Path(__file__).resolve().parent / "data"
_FIELDS = {"Depends": 2, "Pre-Depends": 2, "Recommends": 1}
"""Relation → weight: a package needs what it depends on, and merely suggests the rest."""
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9+.-]*)")


def parse_dumpavail(text: str, *, min_items: int = 1) -> pd.DataFrame:
    """`apt-cache dumpavail` text → columns package, dependency, weight (one row per
    package and related package, the strongest relation kept; of `a | b`, the first
    alternative: what apt installs by default). Packages with fewer than `min_items`
    related packages are left out."""
    best: dict[tuple[str, str], int] = {}
    package: str | None = None
    for line in text.splitlines():
        if line.startswith("Package: "):
            package = line[len("Package: ") :].strip()
            continue
        field, _, value = line.partition(": ")
        if package is None or field not in _FIELDS:
            continue
        for clause in value.split(","):
            first = clause.split("|")[0]
            match = _NAME.match(first)
            if match is None:
                continue
            dependency = match.group(1).split(":")[0]  # libc6:any → libc6
            if dependency == package:
                continue
            key = (package, dependency)
            best[key] = max(best.get(key, 0), _FIELDS[field])
    df = pd.DataFrame(
        [(p, d, w) for (p, d), w in best.items()], columns=["package", "dependency", "weight"]
    )
    counts = df.groupby("package")["dependency"].transform("size")
    return df[counts >= min_items].reset_index(drop=True)


def parse_sections(text: str) -> pd.DataFrame:
    """`apt-cache dumpavail` text → columns dependency (the package), section (`python`,
    `libs`, `contrib/games`: the area part dropped) and priority: item features for
    the two-tower model."""
    rows, package, fields = [], None, {}
    for line in [*text.splitlines(), "Package: "]:
        if line.startswith("Package: "):
            if package:
                rows.append((package, fields.get("Section"), fields.get("Priority")))
            package, fields = line[len("Package: ") :].strip(), {}
            continue
        field, _, value = line.partition(": ")
        if field in ("Section", "Priority"):
            fields[field] = value.strip().split("/")[-1]
    df = pd.DataFrame(rows, columns=["dependency", "section", "priority"])
    return df.drop_duplicates("dependency").reset_index(drop=True)


def _dumpavail() -> str:
    try:
        return subprocess.run(
            ["apt-cache", "dumpavail"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(
            f"apt-cache dumpavail failed ({exc}): this builder needs a Debian "
            "or Ubuntu machine with package lists (apt-get update)"
        ) from None


def debian_item_features(path: Path | None = None) -> Path:
    """Each package's section and priority (`dependency` column), for two_tower's
    `recommend.item_features`; written once, then reused."""
    path = path or DATA / "debian_items.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        parse_sections(_dumpavail()).to_csv(path, index=False)
    return path


def debian_dependencies(path: Path | None = None, *, min_items: int = 3) -> Path:
    """The dependency graph of the packages apt knows, as interactions (see the module
    docstring); written once, then reused."""
    path = path or DATA / "debian_deps.csv"
    if path.exists():
        return path
    df = parse_dumpavail(_dumpavail(), min_items=min_items)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def planted(path: Path | None = None, n_users: int = 2000) -> Path:
    from foundry.recommend.planted import planted_interactions

    path = path or DATA / "planted_interactions.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    planted_interactions(n_users, groups=20, seed=0).to_csv(path, index=False)
    return path


BUILDERS = {"debian": debian_dependencies, "debian_items": debian_item_features, "planted": planted}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(BUILDERS):
        written = BUILDERS[name]()
        print(f"{name}: {written} ({sum(1 for _ in written.open()) - 1} rows)")
