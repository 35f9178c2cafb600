"""The relay benchmark's verdicts (bench/relaybench/verdicts.py): loose "kept up", strict
"real time", and when the load generator itself set the pace."""

from __future__ import annotations

from bench.relaybench.verdicts import (
    GROWTH_LIMIT,
    TOLERANCE,
    SessionRun,
    judge,
    loadgen_bottleneck,
    most_sessions,
)

ON_TIME = [0.02] * 100


def test_every_frame_on_time_is_real_time() -> None:
    verdict = judge([SessionRun(True, "", list(ON_TIME)) for _ in range(5)])
    assert verdict.kept_up
    assert verdict.real_time
    assert verdict.sessions_real_time == 5
    assert verdict.reasons == ()


def test_one_late_frame_is_forgiven_by_the_loose_verdict_only() -> None:
    late = list(ON_TIME)
    late[50] = TOLERANCE + 0.01
    verdict = judge([SessionRun(True, "", late)] + [SessionRun(True, "", list(ON_TIME))] * 4)
    assert verdict.kept_up
    assert not verdict.real_time
    assert verdict.sessions_real_time == 4
    assert any("frame over 200 ms" in r for r in verdict.reasons)


def test_a_growing_lag_is_not_real_time_even_under_the_tolerance() -> None:
    # From 10 ms to 10 + 99 * 1.5 = 158 ms: every frame within 200 ms, but falling behind.
    growing = [0.010 + i * 0.0015 for i in range(100)]
    assert max(growing) <= TOLERANCE
    verdict = judge([SessionRun(True, "", growing)])
    assert verdict.kept_up
    assert not verdict.real_time
    assert any("grew" in r for r in verdict.reasons)
    # A small drift is not a growing lag.
    drifting = [0.010 + i * (GROWTH_LIMIT / 200) for i in range(100)]
    assert judge([SessionRun(True, "", drifting)]).real_time


def test_many_late_frames_fail_both() -> None:
    late = [0.02] * 90 + [0.5] * 10
    verdict = judge([SessionRun(True, "", late)])
    assert not verdict.kept_up
    assert not verdict.real_time


def test_an_unfinished_or_failed_session_fails_both() -> None:
    for run in (SessionRun(False, "", list(ON_TIME)), SessionRun(True, "timeout", list(ON_TIME))):
        verdict = judge([run, SessionRun(True, "", list(ON_TIME))])
        assert not verdict.kept_up
        assert not verdict.real_time
        assert verdict.sessions_real_time == 1
        assert any("did not finish" in r for r in verdict.reasons)


def test_no_sessions_or_no_frames_is_no_verdict() -> None:
    assert not judge([]).kept_up
    assert not judge([]).real_time
    empty = judge([SessionRun(True, "", [])])
    assert not empty.kept_up
    assert not empty.real_time


def test_the_load_generator_is_the_bottleneck_near_a_core_or_with_a_late_loop() -> None:
    assert loadgen_bottleneck(0.3, 0.005) is None
    assert loadgen_bottleneck(0.3, None) is None
    assert "core" in (loadgen_bottleneck(0.9, 0.001) or "")
    assert "late" in (loadgen_bottleneck(0.3, 0.2) or "")


def test_most_sessions_is_the_largest_step_that_held() -> None:
    steps = [
        {"sessions": 50, "verdict": {"kept_up": True, "real_time": True}},
        {"sessions": 100, "verdict": {"kept_up": True, "real_time": False}},
        {"sessions": 200, "verdict": {"kept_up": False, "real_time": False}},
    ]
    assert most_sessions(steps, "real_time") == 50
    assert most_sessions(steps, "kept_up") == 100
    assert most_sessions([], "real_time") == 0
