"""Shared fixtures: every test gets its own FOUNDRY_HOME so registries never leak."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def foundry_home(tmp_path, monkeypatch):
    home = tmp_path / "foundry-home"
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    monkeypatch.delenv("FOUNDRY_DATABASE_URL", raising=False)
    return home
