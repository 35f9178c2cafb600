"""A voice agent on your server, in one file: it speaks a sentence through a relay session's avatar.

It is a second process beside the server, the way your own agent runs. It imports only the client
distribution (`pip install ./clients/python`) and uses espeak-ng as its text-to-speech engine
(`apt-get install espeak-ng`; any TTS that yields PCM s16le mono will do).

    ./scripts/serve &                      # the server, emulator mode
    uv run python examples/speaking_agent.py "Hello from the server" --listen

It creates a session whose speech comes from a producer (this script) and prints the page's
credentials (`browserUrl`: hand it to your page, never the producer's). `--listen` stands in for the
page in the same process (a `RelayClient` on the browser's socket) and reports what it received.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys

from avatar_relay_client import ConversationCompleted, Producer, RelayClient, create_session
from avatar_relay_client.browser_protocol import ServerAudio, ServerFrame

# espeak-ng speaks at 22,050 Hz, a rate the relay accepts: no resampling needed.
ESPEAK_RATE = 22050
CHUNK_BYTES = ESPEAK_RATE * 2 // 25  # 40 ms


def speak(text: str) -> bytes:
    """The text as PCM s16le mono at 22,050 Hz (espeak-ng's WAV with its 44-byte header cut)."""
    engine = shutil.which("espeak-ng")
    if engine is None:
        sys.exit("speaking_agent: espeak-ng is not installed (apt-get install espeak-ng)")
    # The text goes in on stdin, never as an argument: nothing of it is parsed as an option.
    wav = subprocess.run(  # noqa: S603
        [engine, "--stdout"], input=text.encode(), capture_output=True, check=True
    ).stdout
    data = wav.find(b"data")
    return wav[data + 8 :]


async def listen_to(page: RelayClient) -> tuple[int, int]:
    """The audio bytes and frames the page receives for the first conversation, to its end."""
    audio_bytes = frames = 0
    async for event in page.events():
        if isinstance(event, ServerAudio):
            audio_bytes += len(event.pcm)
        elif isinstance(event, ServerFrame):
            frames += 1
            if event.end:
                break
    return audio_bytes, frames


async def run(text: str, server: str, api_key: str | None, listen: bool) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    session = await create_session(server, headers=headers, sample_rate=ESPEAK_RATE)
    print(json.dumps({"sessionId": session.session_id, "browserUrl": session.browser_url}))
    page = RelayClient(server, headers=headers, session=session.answer) if listen else None
    heard: asyncio.Task[tuple[int, int]] | None = None
    if page is not None:
        await page.start()
        heard = asyncio.create_task(listen_to(page))
    pcm = speak(text)
    async with Producer(server, session, headers=headers) as producer:
        async with producer.utterance() as utterance:
            for start in range(0, len(pcm), CHUNK_BYTES):
                await utterance.send(pcm[start : start + CHUNK_BYTES])
                await asyncio.sleep(0.04)  # as a streaming TTS would, in real time
        outcome = await utterance.outcome()
    summary: dict[str, object] = {
        "spokenMs": len(pcm) * 1000 // (2 * ESPEAK_RATE),
        "outcome": type(outcome).__name__,
    }
    if isinstance(outcome, ConversationCompleted):
        summary.update(deliveredAudioMs=outcome.audio_ms, deliveredFrames=outcome.frames)
    if page is not None and heard is not None:
        # What the page itself received, not what the server says it sent: the page's link may
        # have dropped and resumed on the way, and must still hold each byte exactly once.
        page_bytes, page_frames = await asyncio.wait_for(heard, timeout=30)
        summary.update(pageAudioMs=page_bytes * 1000 // (2 * ESPEAK_RATE), pageFrames=page_frames)
        await page.close()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", nargs="?", default="Hello! I am speaking from the server.")
    parser.add_argument("--server", default="http://127.0.0.1:8080")
    parser.add_argument("--api-key", help="with AUTH_MODE=api-key: one of AUTH_API_KEYS")
    parser.add_argument("--listen", action="store_true", help="stand in for the page too")
    ns = parser.parse_args()
    print(json.dumps(asyncio.run(run(ns.text, ns.server, ns.api_key, ns.listen))))


if __name__ == "__main__":
    main()
