"""Shared fixtures: one warm sandbox per test session (starting a zygote costs ~1 s)."""

from __future__ import annotations

import pytest

from ttd_envs.core.sandbox import Sandbox


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    box = Sandbox()
    yield box
    box.close()
