"""The `demo` fixture: the demo page in Chromium, connected (tests/web/demo_page.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.web.demo_page import Demo, open_demo


@pytest.fixture
async def demo(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Demo]:
    # Parametrized indirectly with the page URL's query, e.g. "?audioEcho=false".
    async with open_demo(tmp_path, getattr(request, "param", "")) as page:
        yield page
