"""The model store: versioned packages on disk with an index database.

reg = Registry()                       # FOUNDRY_HOME or ./.foundry
record = reg.register("adult", weights=..., manifest=..., metrics=..., card=...)
reg.resolve("adult:latest").path       # <home>/models/adult/1
package = reg.load("adult:1")          # weights, manifest, metrics, card; no pickle
"""

from foundry.registry.package import Package, read_package, write_package
from foundry.registry.refs import is_package_dir, parse_ref
from foundry.registry.store import ModelRecord, Registry, default_home

__all__ = [
    "ModelRecord",
    "Package",
    "Registry",
    "default_home",
    "is_package_dir",
    "parse_ref",
    "read_package",
    "write_package",
]
