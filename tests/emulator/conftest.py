"""Fixtures for the registry emulator's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from goodmem_emulator import Emulator

from .helpers import ADMIN_KEY, OTHER_KEY, USER_KEY, Api


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    emulator = Emulator(api_keys=[USER_KEY, OTHER_KEY], admin_keys=[ADMIN_KEY])
    await emulator.start(host="127.0.0.1", port=0)
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
async def http(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emu.base_url, timeout=10) as client:
        yield client


@pytest.fixture
def api(http: httpx.AsyncClient) -> Api:
    return Api(http)
