"""The config schema and its loading (YAML + `key=value` overrides)."""

from foundry.config.load import LoadedConfig, apply_override, dump_config, load_config
from foundry.config.schema import FoundryConfig

__all__ = ["FoundryConfig", "LoadedConfig", "apply_override", "dump_config", "load_config"]
