"""espeak-ng through the speech module: real synthesis at the session's rate, clear errors."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from app.agent.speech import MAX_TEXT_CHARS, engine_path, synthesize
from app.errors import AppError, ErrorCode
from tests.support.children import blocked_writing_to_a_pipe, bytes_written, children_named


async def collect(text: str, rate: int, engine: str | None = None) -> tuple[bytes, int]:
    chunks = [chunk async for chunk in synthesize(text, rate, engine=engine)]
    return b"".join(chunks), len(chunks)


def test_the_engine_is_installed_by_the_test_setup() -> None:
    # scripts/ensure-system-deps installs espeak-ng; without it the demo agent is off.
    assert engine_path() is not None


@pytest.mark.parametrize("rate", [16000, 24000])
async def test_speech_comes_out_at_the_session_rate(rate: int) -> None:
    pcm, _ = await collect("Hello from the server side. This is the demo agent speaking.", rate)
    seconds = len(pcm) / 2 / rate
    # A dozen words at 165 words per minute: a few seconds, not silence and not garbage.
    assert 2.0 < seconds < 8.0
    assert len(pcm) % 2 == 0
    samples = memoryview(pcm).cast("h")
    assert max(abs(s) for s in samples) > 2000


async def test_longer_text_streams_in_several_chunks() -> None:
    _, chunks = await collect(" ".join(["The avatar says this sentence."] * 8), 16000)
    assert chunks > 3


async def test_text_starting_with_a_dash_is_spoken_not_parsed_as_an_option() -> None:
    pcm, _ = await collect("--version is what I said", 16000)
    assert len(pcm) / 2 / 16000 > 0.8


@pytest.mark.parametrize("text", ["", "   ", "x" * (MAX_TEXT_CHARS + 1)])
async def test_bad_text_is_an_invalid_request(text: str) -> None:
    with pytest.raises(AppError) as caught:
        await collect(text, 16000)
    assert caught.value.code is ErrorCode.INVALID_REQUEST


async def test_a_missing_engine_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(AppError) as caught:
        await collect("hello", 16000, engine=str(tmp_path / "no-such-engine"))
    assert caught.value.code is ErrorCode.SPEECH_UNAVAILABLE


async def test_an_engine_that_writes_no_wav_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "broken-engine"
    fake.write_text("#!/bin/sh\necho not a wav file\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(AppError) as caught:
        await collect("hello", 16000, engine=os.fspath(fake))
    assert caught.value.code is ErrorCode.SPEECH_UNAVAILABLE


async def test_a_synthesis_closed_midway_with_its_pipe_full_ends_the_engine() -> None:
    # Half a minute of speech (1.5 MB) while nobody reads, as when a producer waits on its socket
    # or is cancelled: asyncio stops reading the engine's output once its buffer holds 128 KiB,
    # and the engine then blocks on the full pipe for good.
    speech = synthesize(" ".join(["The avatar keeps talking for a long while."] * 12), 16000)
    await anext(speech)
    (pid,) = children_named("espeak")
    async with asyncio.timeout(20):
        await stuck_writing(pid)
        await speech.aclose()  # what a cancelled say does
    assert children_named("espeak") == {}  # killed and reaped, its pipes closed


async def stuck_writing(pid: int) -> None:
    """Until the process is blocked on a full pipe that nobody drains: blocked, over 128 KiB
    written, and nothing more written across 20 looks 10 ms apart (a reading event loop would
    have made room, and the engine writes ~50 times faster than real time)."""
    seen: list[int] = []
    while True:
        written = bytes_written(pid) if blocked_writing_to_a_pipe(pid) else -1
        seen = [*seen[-19:], written]
        if len(seen) == 20 and len(set(seen)) == 1 and written > 128 * 1024:
            return
        await asyncio.sleep(0.01)
