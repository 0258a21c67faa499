"""Optional features and the pip extra that installs each.

The core install trains, evaluates, registers and serves tabular and text models (mlp,
cnn, text, gbm, ngram, recommenders) and nothing in it imports an optional library. A
feature that needs one calls `require` first, where it starts, so a user without the
extra gets one line naming the command that fixes it instead of a traceback:

    error: the fairness audit needs fairlearn (not installed); install it with:
    pip install 'foundry-mlops[trust]'

Each extra is declared in pyproject.toml's [project.optional-dependencies]; EXTRAS
below says which importable modules come with which one (tests/test_extras.py checks
the two agree).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from foundry.errors import FoundryError

DISTRIBUTION = "foundry-mlops"
"""The name on PyPI (`foundry` there is an unrelated package); the import name is foundry."""

EXTRAS: dict[str, tuple[str, ...]] = {
    "llm": ("transformers", "peft"),
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "trust": ("opacus", "fairlearn", "captum"),
    "report": ("plotly",),
    "postgres": ("psycopg",),
    "tune": ("optuna",),
    "s3": ("s3fs",),
    "tracking": ("mlflow", "tensorboardX"),
    "encryption": ("cryptography",),
    "recommend": ("faiss",),
}
"""extra → the top-level modules it installs that foundry imports."""


class MissingExtraError(FoundryError):
    """A feature needs an optional library that is not installed."""

    def __init__(self, extra: str, module: str, feature: str) -> None:
        self.extra = extra
        self.module = module
        super().__init__(
            f"{feature} needs {module} (not installed); install it with: {install_command(extra)}"
        )


def install_command(extra: str) -> str:
    """The pip command that installs `extra`, quoted for any shell."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def require(extra: str, module: str, feature: str) -> ModuleType:
    """Import `module` (a top-level module of `extra`) and return it, or raise
    MissingExtraError saying `feature` needs it and which `pip install` adds it.

    Only the module itself being absent is turned into that message: an ImportError
    from inside an installed library (a broken install, a missing shared library) is
    raised as it is, since the extra's command would not fix it."""
    if module not in EXTRAS[extra]:
        raise ValueError(f"{module!r} is not one of extra {extra!r}'s modules: {EXTRAS[extra]}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != module:
            raise
        raise MissingExtraError(extra, module, feature) from None
