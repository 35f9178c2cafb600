"""Text to speech with espeak-ng (a Debian package), as PCM s16le mono at the session's rate.

The engine runs as a subprocess and its WAV output is read as it is produced, so the first chunk
of a long text reaches the avatar before the last sentence is synthesised. espeak-ng writes its
WAV header before it knows the length (the sizes are placeholders), so the header is parsed for
the format only and everything after the `data` chunk's header is audio.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from app.agent.resample import Resampler
from app.errors import AppError, ErrorCode

ENGINE = "espeak-ng"
MAX_TEXT_CHARS = 2000
READ_BYTES = 8192


@dataclass(frozen=True, slots=True)
class Voice:
    """What espeak-ng is asked for: its voice name and speed in words per minute."""

    name: str = "en-us"
    words_per_minute: int = 165


def engine_path() -> str | None:
    """Where espeak-ng is, or None when it is not installed (the demo agent is then off)."""
    return shutil.which(ENGINE)


def spoken_text(text: str) -> str:
    """The text as it will be spoken (trimmed); invalidRequest when empty or too long."""
    words = text.strip()
    if not words:
        raise AppError(ErrorCode.INVALID_REQUEST, "there is no text to say")
    if len(words) > MAX_TEXT_CHARS:
        raise AppError(
            ErrorCode.INVALID_REQUEST, f"say at most {MAX_TEXT_CHARS} characters at once"
        )
    return words


def engine_missing() -> AppError:
    return AppError(
        ErrorCode.SPEECH_UNAVAILABLE,
        f"the demo agent needs {ENGINE}: install it (apt-get install {ENGINE})",
    )


async def synthesize(
    text: str, sample_rate: int, voice: Voice = Voice(), *, engine: str | None = None
) -> AsyncGenerator[bytes, None]:
    """Yield the spoken `text` as PCM s16le mono chunks at `sample_rate`.

    Raises AppError(speechUnavailable) when the engine is missing or fails, and
    AppError(invalidRequest) for text that is empty or too long.
    """
    words = spoken_text(text)
    program = engine or engine_path()
    if program is None:
        raise engine_missing()
    try:
        process = await _start(program, voice)
    except OSError as error:
        raise AppError(ErrorCode.SPEECH_UNAVAILABLE, f"{ENGINE} could not start: {error}") from None
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        process.stdin.write(words.encode())
        process.stdin.close()
        source_rate, first = await _read_header(process.stdout)
        resampler = Resampler(source_rate, sample_rate)
        if first:
            yield resampler.feed(first)
        while chunk := await process.stdout.read(READ_BYTES):
            pcm = resampler.feed(chunk)
            if pcm:
                yield pcm
        tail = resampler.flush()
        if tail:
            yield tail
        if await process.wait() != 0:
            raise AppError(
                ErrorCode.SPEECH_UNAVAILABLE, f"{ENGINE} failed (exit {process.returncode})"
            )
    finally:
        if process.returncode is None:
            process.kill()
        # Read what is left to the pipe's end: asyncio's wait() returns only once the output
        # pipe is closed too, and a pipe whose reader paused (nobody read it: a producer waiting
        # on its socket, a cancelled say) never closes: wait() alone would hang for good.
        await process.communicate()


async def _start(program: str, voice: Voice) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        program,
        "--stdout",
        "-v",
        voice.name,
        "-s",
        str(voice.words_per_minute),
        # The text goes in on stdin: no option parsing of user text, whatever it starts with.
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _read_header(stdout: asyncio.StreamReader) -> tuple[int, bytes]:
    """The sample rate from a RIFF/WAVE header, and any audio bytes read past it."""
    buffer = b""
    while True:
        parsed = _parse_header(buffer)
        if parsed is not None:
            return parsed
        chunk = await stdout.read(READ_BYTES)
        if not chunk:
            raise AppError(ErrorCode.SPEECH_UNAVAILABLE, f"{ENGINE} produced no audio")
        buffer += chunk
        if len(buffer) > 64 * 1024:
            raise AppError(ErrorCode.SPEECH_UNAVAILABLE, f"{ENGINE} wrote no WAV header")


def _parse_header(buffer: bytes) -> tuple[int, bytes] | None:
    """(sample rate, audio after the header) once the header is complete, else None."""
    if len(buffer) < 12:
        return None
    if buffer[:4] != b"RIFF" or buffer[8:12] != b"WAVE":
        raise AppError(ErrorCode.SPEECH_UNAVAILABLE, f"{ENGINE} did not write WAV")
    offset = 12
    rate = 0
    while len(buffer) >= offset + 8:
        kind, size = struct.unpack_from("<4sI", buffer, offset)
        body = offset + 8
        if kind == b"data":
            if not rate:
                raise AppError(
                    ErrorCode.SPEECH_UNAVAILABLE, f"{ENGINE} wrote audio before its format"
                )
            return rate, buffer[body:]
        if len(buffer) < body + size:
            return None
        if kind == b"fmt ":
            audio_format, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", buffer, body)
            if (audio_format, channels, bits) != (1, 1, 16):
                raise AppError(
                    ErrorCode.SPEECH_UNAVAILABLE, f"{ENGINE} did not write 16-bit mono PCM"
                )
        offset = body + size + size % 2
    return None
