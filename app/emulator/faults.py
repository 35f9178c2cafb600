"""Fault injection for the emulator: one mutable dataclass, read live at every decision point."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class Faults:
    """Failures to inject. Every field's default means "behave normally".

    Set fields at any time (`emu.faults.frame_delay = 0.2`); they apply from the next decision on.
    Per-avatar faults (`emu.set_avatar_faults`) override the emulator-wide ones field by field.
    See docs/emulator.md for what each produces in the official SDK.
    """

    # --- token routes (POST /v1/auth/session-token and /v1/console/session-tokens);
    # only the emulator-wide faults apply ---
    console_latency: float = 0.0
    """Seconds to wait before answering a mint request."""
    console_status: int | None = None
    """Answer every mint request with this HTTP status and the JSON errors body."""
    console_fail_next: int = 0
    """Fail only the next N mint requests (with `console_status`, or 503), then recover."""
    console_hang: bool = False
    """Accept mint requests and never answer (until the emulator stops)."""
    console_token: str | None = None
    """Answer successful mints with this token instead of the new one (an already used, expired
    or made-up token: how a client meets a bad token without reaching into its own state)."""

    # --- ingress upgrade ---
    upgrade_status: int | None = None
    """Reject every WebSocket upgrade with this HTTP status and a matching detail text."""

    # --- ingress session ---
    handshake_error: tuple[int, str] | None = None
    """Answer CLIENT_CONFIGURE_SESSION with SERVER_ERROR(code, message), then close."""
    close_at_handshake: int | None = None
    """Answer CLIENT_CONFIGURE_SESSION by closing the WebSocket with this close code (e.g. 4001),
    with the code's reason text (wire.CLOSE_REASONS); no confirm, no SERVER_ERROR."""
    handshake_hang: bool = False
    """Read CLIENT_CONFIGURE_SESSION and never answer it: the confirm never comes. The socket
    stays open until the client leaves or the emulator stops."""
    drop_after_frames: int | None = None
    """Abort the TCP connection (no close frame) after N animation messages on a connection."""
    error_after_frames: tuple[int, int, str] | None = None
    """(N, code, message): after N animation messages on a connection, send SERVER_ERROR for the
    request in progress instead of its remaining frames. Once per connection; it stays open."""
    close_after_frames: tuple[int, int] | None = None
    """(N, close code): after N animation messages on a connection, close the WebSocket with
    that code and its reason text instead of sending more (0: before the first frame)."""
    frame_delay: float = 0.0
    """Extra seconds before every animation message."""

    def merged_over(self, base: Faults) -> Faults:
        """These faults where set (non-default), `base` elsewhere."""
        defaults = Faults()
        merged = Faults()
        for item in fields(self):
            mine = getattr(self, item.name)
            chosen = mine if mine != getattr(defaults, item.name) else getattr(base, item.name)
            setattr(merged, item.name, chosen)
        return merged
