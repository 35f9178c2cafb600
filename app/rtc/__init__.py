"""RTC mode: LiveKit rooms with the avatar published into them (docs/rtc.md).

- `core.py`: one RTC session's rules as a pure state machine (requests, dedupe, limits);
- `session.py`: its shell (the ingress link, timers, the lifecycle event stream);
- `service.py`: creating and ending sessions (room, tokens, egress configuration, limits).
"""
