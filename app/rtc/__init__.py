"""RTC mode: LiveKit rooms with the avatar published into them (docs/rtc.md).

- `core.py`: one RTC session's rules as a pure state machine (requests, dedupe, limits);
- `feed.py`: the producer feed, pure: the producer protocol's endpoint joined to the core;
- `session.py`, `producer_socket.py`: the shell (the ingress link, the producer socket, one
  timer, the lifecycle event stream);
- `service.py`: creating and ending sessions (room, tokens, egress configuration, producer
  tickets, limits).
"""
