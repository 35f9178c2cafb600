"""espeak-ng through the speech module: real synthesis at the session's rate, clear errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from app.agent.speech import MAX_TEXT_CHARS, engine_path, synthesize
from app.errors import AppError, ErrorCode


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
