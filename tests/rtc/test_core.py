"""The RTC session core: one clean lifecycle per request, whatever the input and upstream say."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import AppError, ErrorCode
from app.rtc.core import Effect, Event, Kind, Limits, Op, RtcCore, Upstream

TERMINAL = {Kind.ENDED, Kind.INTERRUPTED, Kind.ABORTED}


def core(now: float = 0.0, *, idle: float = 10.0, maximum: float = 100.0) -> RtcCore:
    ids = (f"req-{n}" for n in itertools.count())
    return RtcCore(lambda: next(ids), Limits(idle, maximum), now)


def events(effects: list[Effect]) -> list[tuple[Kind, str]]:
    return [(e.kind, e.req_id) for e in effects if isinstance(e, Event)]


def ops(effects: list[Effect]) -> list[tuple[Op, str, bytes, bool]]:
    return [(u.op, u.req_id, u.audio, u.end) for u in effects if isinstance(u, Upstream)]


def test_the_request_id_stays_until_end_and_the_next_audio_opens_a_new_one() -> None:
    c = core()
    first = c.audio(b"\x00\x01", 0)
    assert events(first) == [(Kind.STARTED, "req-0")]
    assert ops(c.audio(b"\x02\x03", 0)) == [(Op.AUDIO, "req-0", b"\x02\x03", False)]
    assert ops(c.end(0)) == [(Op.AUDIO, "req-0", b"", True)]
    assert events(c.audio(b"\x04\x05", 0)) == [(Kind.STARTED, "req-1")]
    assert c.end(1)
    assert c.end(1) == []  # a second END has nothing to end


def test_duplicate_ends_are_dropped_and_counted() -> None:
    c = core()
    c.audio(b"\x00\x00", 0, end=True)
    assert events(c.signal("req-0", False, 1)) == [(Kind.PLAYING, "req-0")]
    assert events(c.signal("req-0", True, 2)) == [(Kind.ENDED, "req-0")]
    assert c.signal("req-0", True, 3) == []
    assert c.playback("req-0", "ended", 40, "", 3) == []
    assert c.duplicates == 2
    assert c.phase("req-0") is Kind.ENDED


def test_an_end_before_the_utterance_is_complete_does_not_end_it() -> None:
    c = core()
    c.audio(b"\x00\x00", 0)
    assert events(c.signal("req-0", True, 1)) == [(Kind.PLAYING, "req-0")]
    c.end(1)
    assert events(c.signal("req-0", True, 2)) == [(Kind.ENDED, "req-0")]


def test_interrupt_acts_on_the_latest_request() -> None:
    c = core()
    c.audio(b"\x00\x00", 0, end=True)
    c.audio(b"\x00\x00", 0)  # req-1 still taking audio
    effects = c.interrupt(1)
    assert ops(effects)[0] == (Op.INTERRUPT, "req-1", b"", False)
    assert events(effects) == [(Kind.INTERRUPTED, "req-1")]
    assert c.open is None
    assert events(c.interrupt(2)) == [(Kind.INTERRUPTED, "req-0")]
    assert c.interrupt(3) == []


def test_pause_and_resume_need_playback_control() -> None:
    c = core()
    c.audio(b"\x00\x00", 0, end=True)
    with pytest.raises(AppError) as refused:
        c.pause(1)
    assert refused.value.code is ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE
    c.connected(playback_control=True)
    assert ops(c.pause(1)) == [(Op.PAUSE, "req-0", b"", False)]
    assert events(c.playback("req-0", "paused", 80, "", 1)) == [(Kind.PAUSED, "req-0")]
    assert ops(c.resume(2)) == [(Op.RESUME, "req-0", b"", False)]
    assert events(c.playback("req-0", "playing", 80, "", 2)) == [(Kind.RESUMED, "req-0")]
    timed_out = c.playback("req-0", "interrupted", 80, "pause_timeout", 3)
    (event,) = [e for e in timed_out if isinstance(e, Event)]
    assert (event.kind, event.reason, event.played_ms) == (Kind.INTERRUPTED, "pause_timeout", 80)


def test_idle_and_maximum_duration_close_the_session() -> None:
    c = core(idle=10, maximum=100)
    c.audio(b"\x00\x00", 0)
    assert c.deadline() == 10
    assert c.tick(9.9) == []
    closing = c.tick(10)
    assert events(closing) == [(Kind.ABORTED, "req-0"), (Kind.CLOSED, "")]
    assert c.close_code is ErrorCode.IDLE_TIMEOUT
    with pytest.raises(AppError) as closed:
        c.audio(b"\x00\x00", 11)
    assert closed.value.code is ErrorCode.SESSION_CLOSED
    busy = core(idle=10, maximum=25)
    for second in range(0, 25, 5):
        busy.audio(b"\x00\x00", second)
    assert busy.deadline() == 25
    busy.tick(25)
    assert busy.close_code is ErrorCode.SESSION_DURATION_EXCEEDED


def test_a_lost_connection_aborts_what_it_carried() -> None:
    c = core()
    c.audio(b"\x00\x00", 0, end=True)
    c.audio(b"\x00\x00", 0)
    lost = c.lost(ErrorCode.SESSION_DURATION_EXCEEDED)
    assert events(lost) == [(Kind.ABORTED, "req-0"), (Kind.ABORTED, "req-1")]
    assert c.open is None
    assert events(c.audio(b"\x00\x00", 1)) == [(Kind.STARTED, "req-2")]


def test_odd_pcm_is_refused() -> None:
    with pytest.raises(AppError) as bad:
        core().audio(b"\x00", 0)
    assert bad.value.code is ErrorCode.BAD_AUDIO


# --- properties ---

inputs = st.lists(
    st.one_of(
        st.tuples(st.just("audio"), st.booleans()),
        st.tuples(st.just("end"), st.none()),
        st.tuples(st.just("interrupt"), st.none()),
        st.tuples(st.just("pause"), st.none()),
        st.tuples(st.just("resume"), st.none()),
        st.tuples(st.just("signal"), st.tuples(st.integers(0, 6), st.booleans())),
        st.tuples(
            st.just("state"),
            st.tuples(
                st.integers(0, 6), st.sampled_from(["playing", "paused", "ended", "interrupted"])
            ),
        ),
        st.tuples(st.just("lost"), st.none()),
        st.tuples(st.just("failed"), st.integers(0, 6)),
        st.tuples(st.just("tick"), st.floats(0, 200)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(inputs, st.booleans())
def test_every_request_has_one_start_and_at_most_one_ending(
    steps: list[tuple[str, object]], control: bool
) -> None:
    c = core()
    c.connected(control)
    log: list[Effect] = []
    refusals: list[ErrorCode] = []
    now = 0.0
    for kind, arg in steps:
        now += 0.5
        try:
            if kind == "audio":
                log += c.audio(b"\x01\x02", now, end=bool(arg))
            elif kind in ("end", "interrupt", "pause", "resume"):
                log += getattr(c, kind)(now)
            elif kind == "signal":
                assert isinstance(arg, tuple)
                log += c.signal(f"req-{arg[0]}", bool(arg[1]), now)
            elif kind == "state":
                assert isinstance(arg, tuple)
                log += c.playback(f"req-{arg[0]}", str(arg[1]), 40, "", now)
            elif kind == "lost":
                log += c.lost(ErrorCode.CONNECTION_CLOSED)
            elif kind == "failed":
                log += c.failed(f"req-{arg}", ErrorCode.UPSTREAM_ERROR)
            else:
                log += c.tick(float(arg))  # type: ignore[arg-type]
        except AppError as error:
            refusals.append(error.code)
    assert set(refusals) <= {ErrorCode.SESSION_CLOSED, ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE}
    if control:
        assert ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE not in refusals
    log += c.close()
    seen: dict[str, list[Kind]] = {}
    closed_at = None
    for index, effect in enumerate(log):
        if isinstance(effect, Event):
            if effect.kind is Kind.CLOSED:
                assert closed_at is None
                closed_at = index
                continue
            assert closed_at is None, "nothing happens after closed"
            seen.setdefault(effect.req_id, []).append(effect.kind)
        elif effect.op is Op.AUDIO:
            # Audio goes up only for requests that started and did not end yet.
            history = seen.get(effect.req_id, [])
            assert history
            assert history[0] is Kind.STARTED
            assert not TERMINAL & set(history)
    assert closed_at == len(log) - 1
    for req_id, history in seen.items():
        assert history[0] is Kind.STARTED, req_id
        assert history.count(Kind.STARTED) == 1
        endings = [k for k in history if k in TERMINAL]
        assert len(endings) == 1, (req_id, history)  # close() aborted whatever was left
        assert history[-1] in TERMINAL
        assert history.count(Kind.PLAYING) <= 1
