"""Fixtures the serve test modules share: one trained toy model per session."""

from __future__ import annotations

import pytest
from tests.serve.serve_app_support import shared_toy


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return shared_toy(tmp_path_factory)
