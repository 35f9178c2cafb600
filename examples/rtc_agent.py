"""A voice agent for an RTC session, in one file: the avatar speaks a sentence in a LiveKit room.

Like `speaking_agent.py`, a second process beside the server that imports only the client
distribution and uses espeak-ng as its text-to-speech engine. The server needs LiveKit settings
(docs/rtc.md); without them, in emulator mode, its built-in emulator stands in for LiveKit too:

    ./scripts/serve &
    uv run python examples/rtc_agent.py "Hello from the room"

It creates the RTC session, prints what the page joins the room with (`url`, `token`,
`roomName`: hand them to `AvatarPlayer.connect()`, never the producer credential), speaks the
sentence through the producer socket in real time, prints the outcome, and ends the session
(BYE: the avatar leaves the room).
"""

from __future__ import annotations

import argparse
import asyncio
import json

from speaking_agent import CHUNK_BYTES, ESPEAK_RATE, speak

from avatar_relay_client import (
    ConversationCompleted,
    FirstFrame,
    Producer,
    StateChange,
    create_rtc_session,
)


async def run(text: str, server: str, api_key: str | None) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    session = await create_rtc_session(server, headers=headers, sample_rate=ESPEAK_RATE)
    answer = session.answer
    page = {k: answer[k] for k in ("sessionId", "url", "token", "roomName", "identity")}
    print(json.dumps(page))
    pcm = speak(text)
    async with Producer(server, session, headers=headers) as producer:
        async with producer.utterance() as utterance:
            for start in range(0, len(pcm), CHUNK_BYTES):
                await utterance.send(pcm[start : start + CHUNK_BYTES])
                await asyncio.sleep(0.04)  # as a streaming TTS would, in real time
        outcome = await utterance.outcome()
        # The events in order: the avatar started speaking in the room before it completed.
        events: list[object] = []
        while not events or not isinstance(events[-1], type(outcome)):
            event = await producer.next_event()
            if not isinstance(event, StateChange):
                events.append(event)
    summary: dict[str, object] = {
        "spokenMs": len(pcm) * 1000 // (2 * ESPEAK_RATE),
        "outcome": type(outcome).__name__,
        "rtc": producer.rtc,
        "events": [type(e).__name__ for e in events],
        "spokeInTheRoom": any(isinstance(e, FirstFrame) for e in events),
    }
    if isinstance(outcome, ConversationCompleted):
        summary.update(audioMs=outcome.audio_ms, playbackSignals=outcome.frames)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", nargs="?", default="Hello! I am speaking in your room.")
    parser.add_argument("--server", default="http://127.0.0.1:8080")
    parser.add_argument("--api-key", help="with AUTH_MODE=api-key: one of AUTH_API_KEYS")
    ns = parser.parse_args()
    print(json.dumps(asyncio.run(run(ns.text, ns.server, ns.api_key))))


if __name__ == "__main__":
    main()
