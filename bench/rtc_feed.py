"""The RTC producer feed's cost per producer message, against the relay core's for the same
producer input (the baseline, measured in the same run): both pure, in process, no sockets.

Each round feeds one utterance of N 40 ms chunks (AUDIO, then END) through a welcomed producer
endpoint, the egress signals for it (RTC) or nothing more (relay: the chunks go on the browser's
stream), and acknowledges the events. Writes `bench/results/rtc_feed.json`:
`{per_message_us: {feed, relay}, ratio}` (feed / relay; below 1 is cheaper than the relay's).

    uv run --frozen python bench/rtc_feed.py [--chunks 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

from app.relay.conversations import AudioRouting
from app.relay.limits import RelayLimits
from app.relay.session import RelaySession
from app.rtc import core as rc
from app.rtc.feed import RtcFeed
from avatar_relay_client import producer_protocol as pp

CHUNK = b"\x01\x00" * 640  # 40 ms at 16 kHz
LIMITS = RelayLimits(replay_buffer_messages=10**7, replay_buffer_bytes=10**11)
OUT = Path(__file__).parent / "results" / "rtc_feed.json"


def messages(chunks: int) -> list[bytes]:
    out = [pp.encode_producer(pp.Audio(seq, CHUNK)) for seq in range(1, chunks + 1)]
    return [
        pp.encode_producer(pp.Hello(0)),
        *out,
        pp.encode_producer(pp.Audio(chunks + 1, b"", True)),
    ]


def feed_round(chunks: int, wire: list[bytes]) -> float:
    ids = itertools.count()
    core = rc.RtcCore(lambda: f"r{next(ids)}", rc.Limits(1e9, 1e9), 0.0)
    feed = RtcFeed("rtc_bench", core, sample_rate=16000, limits=LIMITS, now=0.0)
    feed.on_connected(1, 0.0)
    start = time.perf_counter()
    for data in wire:
        feed.on_data(1, data, 0.0)
    feed.signal("r0", False, 0.0)
    feed.signal("r0", True, 0.0)
    feed.on_data(1, pp.encode_producer(pp.Ack(feed.endpoint.replay.last_seq)), 0.0)
    return time.perf_counter() - start


def relay_round(chunks: int, wire: list[bytes]) -> float:
    ids = itertools.count()
    core = RelaySession(
        "relay_bench",
        sample_rate=16000,
        limits=LIMITS,
        new_conversation_id=lambda: f"r{next(ids)}",
        now=0.0,
        routing=AudioRouting(source="producer"),
    )
    core.on_connected("producer", 1, 0.0)
    start = time.perf_counter()
    for data in wire:
        core.on_data("producer", 1, data, 0.0)
    producer = core.endpoint("producer")
    assert producer is not None
    core.on_data("producer", 1, pp.encode_producer(pp.Ack(producer.replay.last_seq)), 0.0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=OUT)
    ns = parser.parse_args()
    wire = messages(ns.chunks)
    feed: list[float] = []
    relay: list[float] = []
    for _ in range(ns.rounds):  # interleaved, so both see the same machine
        relay.append(relay_round(ns.chunks, wire))
        feed.append(feed_round(ns.chunks, wire))
    per = len(wire)
    result = {
        "chunks": ns.chunks,
        "rounds": ns.rounds,
        "per_message_us": {
            "feed": statistics.median(feed) / per * 1e6,
            "relay": statistics.median(relay) / per * 1e6,
        },
        "ratio": statistics.median(feed) / statistics.median(relay),
    }
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
