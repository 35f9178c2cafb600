"""Every deploy test starts from, and leaves behind, the same logging configuration.

Starting uvicorn (`running_app`) applies uvicorn's own logging config (levels, handlers, no
propagation on its loggers) and `configure_logging` rewires the root logger: both are process
globals, so without this one test's server would decide what a later test's logs capture.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

LoggerState = tuple[int, list[logging.Handler], bool, bool]


def _loggers() -> list[logging.Logger]:
    named = logging.Logger.manager.loggerDict.values()
    return [logging.getLogger(), *(lg for lg in named if isinstance(lg, logging.Logger))]


@pytest.fixture(autouse=True)
def isolated_logging() -> Iterator[None]:
    saved: dict[logging.Logger, LoggerState] = {
        lg: (lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in _loggers()
    }
    try:
        yield
    finally:
        for logger in _loggers():
            level, handlers, propagate, disabled = saved.get(
                logger, (logging.NOTSET, [], True, False)
            )
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.disabled = disabled
