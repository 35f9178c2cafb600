"""Shared fixtures. Everything runs over real sockets on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import redis_server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server for the whole test session (started by the tests themselves)."""
    with redis_server() as url:
        yield url
