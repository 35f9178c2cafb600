"""Eager writes: run a write coroutine's synchronous part at once, finish it in a task only if
it blocks.

A socket write (uvicorn's ASGI `send`, websockets' `Connection.send`) completes without ever
suspending unless the transport is paused by back-pressure. Handing every write to a writer task
costs an event, a task wake-up and a future per message; starting the coroutine by hand costs
nothing when it completes at once, and when it does block, `finish` resumes it from a task exactly
where it stopped, so the bytes still leave in order and the back-pressure wait still happens.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any


class Blocked:
    """A write that suspended: await `finish()` from a task (once), or `close()` to drop it."""

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def finish(self) -> Awaitable[None]:
        return _resume(self._coro, self._waiting_on)

    def close(self) -> None:
        self._coro.close()


def start(coro: Coroutine[Any, Any, Any]) -> Blocked | None:
    """Run `coro` until it first suspends. None: it is done. Its exceptions propagate."""
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return Blocked(coro, waiting_on)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, None]:
    # What `await coro` would do from here on: pass what it waits on up to the task, pass the
    # task's results and exceptions (cancellation, timeouts) down into it.
    while True:
        try:
            value = yield waiting_on
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # delivered to the coroutine, as `await` would
            try:
                waiting_on = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting_on = coro.send(value)
            except StopIteration:
                return
