"""What a link counts: messages and bytes each way, connections, resends, replays, drops."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ClientStats:
    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    connections: int = 0
    reconnects: int = 0
    resent: int = 0  # client messages written again after a reconnect
    missed: int = 0  # server messages sent while we were away (replayed after the greeting)
    acks_sent: int = 0
    pings_sent: int = 0
    drops: int = 0  # connections killed by drop_connection() or lose_next_message()
    lost: int = 0  # client messages lose_next_message() lost in flight (each one is resent)
    out_of_order: int = 0  # sequenced messages that were not lastSeq + 1 (a server bug)
