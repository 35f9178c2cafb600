"""What permessage-deflate costs and saves per relay message, measured on the bytes one session
actually exchanges: the speech fixture's 40 ms PCM chunks (client AUDIO up, AUDIO echo down) and
the emulator's animation frames (FRAME down), in session order on one negotiated extension (context
takeover, as a live socket keeps it).

The server side is negotiated exactly as uvicorn negotiates it with Chromium's offer
(`permessage-deflate; client_max_window_bits`): server_max_window_bits=12,
client_max_window_bits=12, memLevel 5 for the server's compressor; the browser compresses with
zlib's defaults in a 12-bit window. Caveat: the emulator's animation payload is pseudo-random
(BLAKE2b), so it cannot compress; what real avatar animation compresses to is not known here.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Final

from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode

from app.emulator import animation_message
from app.emulator.wire import send_time_field
from avatar_relay_client import browser_protocol as p
from bench.relaybench.loadclient import chunks

REPEATS: Final = 5
TAG: Final = b"\x00\x01"  # a conversation tag's size on the wire (any two bytes)


def negotiate() -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """(server's extension, browser's extension) as uvicorn and Chromium agree on them."""
    server_factory = ServerPerMessageDeflateFactory(
        server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
    )
    offer = ClientPerMessageDeflateFactory(client_max_window_bits=True)
    response, server = server_factory.process_request_params(offer.get_request_params(), [])
    browser = offer.process_response_params(response, [])
    return server, browser


def session_messages() -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(client AUDIO, server AUDIO echo, server FRAME) of one playback, in order."""
    pcm = chunks()
    last = len(pcm) - 1
    up = [p.encode_client(p.ClientAudio(i + 1, c, i == last)) for i, c in enumerate(pcm)]
    echo = [
        p.encode_audio(2 * i + 1, TAG, c, first=i == 0, end=i == last) for i, c in enumerate(pcm)
    ]
    frames = [
        p.encode_frame(
            2 * i + 2,
            TAG,
            animation_message("conn", "20260101000000_AbCdEfGhIjKl", i, i == last, 1024)
            + send_time_field(time.time_ns()),
            end=i == last,
        )
        for i in range(len(pcm))
    ]
    return up, echo, frames


def _one_pass() -> dict[str, tuple[list[float], int, int]]:
    """Per kind: (µs per message, bytes before, bytes after) over one session."""
    server, browser = negotiate()
    up, echo, frames = session_messages()
    clock = time.perf_counter
    out: dict[str, tuple[list[float], int, int]] = {
        "audio_down": ([], 0, 0),
        "frame_down": ([], 0, 0),
        "audio_up_decode": ([], 0, 0),
    }

    def add(kind: str, seconds: float, before: int, after: int) -> None:
        times, b, a = out[kind]
        times.append(seconds * 1e6)
        out[kind] = (times, b + before, a + after)

    for message_up, message_echo, message_frame in zip(up, echo, frames, strict=True):
        wire_up = browser.encode(Frame(Opcode.BINARY, message_up))
        t0 = clock()
        server.decode(wire_up)
        add("audio_up_decode", clock() - t0, len(message_up), len(wire_up.data))
        for kind, data in (("audio_down", message_echo), ("frame_down", message_frame)):
            t0 = clock()
            encoded = server.encode(Frame(Opcode.BINARY, data))
            add(kind, clock() - t0, len(data), len(encoded.data))
            browser.decode(encoded)  # keeps the browser's context in step
    return out


def measure() -> dict[str, Any]:
    """Median over REPEATS sessions of each kind's mean µs per message, and the bytes saved."""
    passes = [_one_pass() for _ in range(REPEATS)]
    figures: dict[str, Any] = {}
    for kind in passes[0]:
        means = [statistics.fmean(run[kind][0]) for run in passes]
        _, before, after = passes[0][kind]
        figures[kind] = {
            "us_per_message": round(statistics.median(means), 1),
            "bytes_per_message": round(before / len(passes[0][kind][0]), 1),
            "saved_fraction": round(1 - after / before, 3),
        }
    encode_us = figures["audio_down"]["us_per_message"] + figures["frame_down"]["us_per_message"]
    return {
        "setup": "one session's messages in order on one negotiated extension (uvicorn's"
        " server side: 12-bit windows, memLevel 5; browser: zlib defaults, 12-bit window);"
        f" median of {REPEATS} passes; the emulator's animation payload is pseudo-random",
        "per_kind": figures,
        "server_us_per_relayed_message_mean": round(
            (encode_us + figures["audio_up_decode"]["us_per_message"]) / 3, 1
        ),
    }
