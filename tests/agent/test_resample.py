"""The streaming resampler: exact lengths, no drift, the same output however the input is cut."""

from __future__ import annotations

import itertools
import math
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.agent.resample import Resampler


def tone(rate: int, seconds: float, hz: float = 440.0) -> bytes:
    count = int(rate * seconds)
    return array(
        "h", (int(12000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(count))
    ).tobytes()


def run(resampler: Resampler, pcm: bytes, cuts: list[int]) -> bytes:
    out = bytearray()
    start = 0
    for cut in [*sorted(set(cuts)), len(pcm)]:
        out += resampler.feed(pcm[start:cut])
        start = cut
    out += resampler.flush()
    return bytes(out)


@pytest.mark.parametrize(("source", "target"), [(22050, 16000), (22050, 48000), (22050, 8000)])
def test_length_follows_the_rate_ratio_exactly(source: int, target: int) -> None:
    pcm = tone(source, 2.0)
    out = run(Resampler(source, target), pcm, [])
    assert len(out) // 2 == math.ceil(len(pcm) // 2 * target / source)


def test_a_tone_keeps_its_pitch_and_loudness() -> None:
    out = array("h")
    out.frombytes(run(Resampler(22050, 16000), tone(22050, 1.0, hz=440.0), []))
    # Zero crossings of a 440 Hz tone over one second: 880, give or take the ends.
    crossings = sum(1 for a, b in itertools.pairwise(out) if (a < 0) != (b < 0))
    assert abs(crossings - 880) <= 2
    assert 11000 <= max(out) <= 12000


def test_same_rate_passes_bytes_through() -> None:
    pcm = tone(16000, 0.1)
    assert run(Resampler(16000, 16000), pcm, [3, 101, 777]) == pcm


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=8820), max_size=12))
def test_output_does_not_depend_on_how_input_is_cut(cuts: list[int]) -> None:
    pcm = tone(22050, 0.2)
    assert run(Resampler(22050, 16000), pcm, cuts) == run(Resampler(22050, 16000), pcm, [])


def test_rates_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 16000)
