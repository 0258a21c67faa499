"""docs/CONFIG.md, generated from the schema so the docs never drift from the code.

Field docs are the string literals under each field (pydantic's
`use_attribute_docstrings`), so the schema file is the one place they are written.
"""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel

from foundry.config import schema


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("foundry.config.schema.", "")
    text = re.sub(r"Annotated\[(\w+), FieldInfo\(.*?\)\]\)\]", r"\1", text)
    # a union told apart by shape (Tag / Discriminator, schema.ServedModelEntry): A | B
    text = re.sub(r"Annotated\[(\w+), Tag\(tag='[^']*'\)\]", r"\1", text)
    text = re.sub(
        r"Annotated\[Union\[([^\[\]]*)\], Discriminator\(.*?\)\]",
        lambda m: m.group(1).replace(", ", " | "),
        text,
    )
    return text.replace("<class '", "").replace("'>", "")


def _sections_of(annotation: Any) -> list[type[BaseModel]]:
    out, stack = [], [annotation]
    while stack:
        a = stack.pop(0)
        if isinstance(a, type) and issubclass(a, BaseModel):
            out.append(a)
        stack.extend(typing.get_args(a))
    return out


def config_markdown() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from `src/foundry/config/schema.py` by `foundry config-docs`; do not edit.",
        "Unknown keys are errors. Any key can be overridden on the command line:",
        "`foundry train config.yaml train.optimizer.lr=3e-4 model.layers=[128,64]`.",
        "",
    ]
    seen: set[type[BaseModel]] = set()
    queue: list[tuple[str, type[BaseModel]]] = [("(top level)", schema.FoundryConfig)]
    while queue:
        path, model = queue.pop(0)
        if model in seen:
            continue
        seen.add(model)
        lines += [f"## `{path}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, f in model.model_fields.items():
            default = "required" if f.is_required() else repr(f.default)
            if isinstance(f.default, BaseModel):
                default = "(section)"
            doc = " ".join((f.description or "").split()).replace("|", "\\|")
            type_name = _type_name(f.annotation).replace("|", "\\|")
            lines.append(f"| `{name}` | `{type_name}` | `{default}` | {doc} |")
            prefix = "" if path == "(top level)" else path + "."
            for sub in _sections_of(f.annotation):
                tag = sub.model_fields["type"].default if name == "model" else None
                queue.append((f"{prefix}{name}" + (f" (type: {tag})" if tag else ""), sub))
        lines.append("")
    return "\n".join(lines)
