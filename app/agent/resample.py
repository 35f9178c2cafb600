"""A streaming resampler for 16-bit mono PCM: chunks in at one rate, chunks out at another.

Linear interpolation between neighbouring samples. It is meant for speech from a synthesiser whose
rate is fixed (espeak-ng speaks at 22,050 Hz) going into a relay session at the rate the page chose;
its small high-frequency loss is inaudible in synthetic speech, and it keeps the demo free of a
numeric library. Position is kept in exact integer units (1/target_rate of an input sample), so
a long utterance never drifts.
"""

from __future__ import annotations

from array import array


class Resampler:
    """Feed PCM s16le mono chunks at `source_rate`; get chunks at `target_rate` back."""

    def __init__(self, source_rate: int, target_rate: int) -> None:
        if source_rate <= 0 or target_rate <= 0:
            raise ValueError("sample rates must be positive")
        self._source = source_rate
        self._target = target_rate
        self._passthrough = source_rate == target_rate
        # Input position of the next output sample, relative to the first sample held, in
        # units of 1/target_rate of an input sample.
        self._position = 0
        self._held = array("h")
        self._odd_byte = b""

    def feed(self, pcm: bytes) -> bytes:
        """Resample what can be computed from the input so far (the rest waits for more input)."""
        pcm = self._odd_byte + pcm
        cut = len(pcm) - len(pcm) % 2
        self._odd_byte = pcm[cut:]
        if self._passthrough:
            return pcm[:cut]
        self._held.frombytes(pcm[:cut])
        return self._drain(final=False)

    def flush(self) -> bytes:
        """The samples that were waiting for a right-hand neighbour (end of the utterance)."""
        if self._passthrough:
            return b""
        return self._drain(final=True)

    def _drain(self, *, final: bool) -> bytes:
        held = self._held
        out = array("h")
        last = len(held) - 1
        position = self._position
        step = self._source
        unit = self._target
        while True:
            index, remainder = divmod(position, unit)
            if index > last or (index == last and not final):
                break
            left = held[index]
            right = held[index + 1] if index < last else left
            out.append(left + (right - left) * remainder // unit)
            position += step
        # Keep only what the next output samples still need.
        keep_from = min(position // unit, len(held))
        del held[:keep_from]
        self._position = position - keep_from * unit
        return out.tobytes()
