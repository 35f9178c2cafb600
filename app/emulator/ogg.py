"""Ogg Opus audio as the emulator measures it: how many 48 kHz samples a stream holds so far."""

from __future__ import annotations

# Opus granule positions count 48 kHz samples whatever the input rate; 40 ms is 1920 of them.
OPUS_GRANULES_PER_FRAME = 1920


class OggGranules:
    """Follows an Ogg Opus stream's pages to know how much audio (in 48 kHz samples) it holds."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pre_skip = 0
        self._seen_head = False
        self.samples = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while True:
            start = self._buffer.find(b"OggS")
            if start < 0:
                del self._buffer[: max(0, len(self._buffer) - 3)]
                return
            del self._buffer[:start]
            if len(self._buffer) < 27:
                return
            segments = self._buffer[26]
            header_len = 27 + segments
            if len(self._buffer) < header_len:
                return
            body_len = sum(self._buffer[27:header_len])
            if len(self._buffer) < header_len + body_len:
                return
            granule = int.from_bytes(self._buffer[6:14], "little", signed=True)
            body = bytes(self._buffer[header_len : header_len + body_len])
            del self._buffer[: header_len + body_len]
            if not self._seen_head and body.startswith(b"OpusHead") and len(body) >= 12:
                self._seen_head = True
                self._pre_skip = int.from_bytes(body[10:12], "little")
            elif granule >= 0:
                self.samples = max(self.samples, granule - self._pre_skip)
