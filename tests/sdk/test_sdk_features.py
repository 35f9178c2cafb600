"""What only one SDK can do: spatialreal's capabilities, playback signals and pause/resume;
spatius's extra_params, trace context and prewarm() with a reused token."""

from __future__ import annotations

import re
from typing import Any

from app.emulator import FRAME_MS
from tests.sdk.stage import TALK_FRAMES, Run, expected_frames, sent_animation


def test_spatialreal_reads_capabilities(sdk_runs: dict[str, Run]) -> None:
    results = sdk_runs["spatialreal"].results
    assert results["header"]["capabilities"] == []
    assert results["pause and resume"]["capabilities"] == ["playback_control", "playback_state"]


def test_spatialreal_playback_signals_name_the_avatar(sdk_runs: dict[str, Run]) -> None:
    results = sdk_runs["spatialreal"].results
    for name, avatar in (("header", "emulator-avatar"), ("second avatar", "second-avatar")):
        result = results[name]
        signals = [e for e in result["events"] if e[0] == "signal"]
        flags = [flag for flags in result["last"] for flag in flags]
        assert len(signals) == len(flags)
        for signal, last in zip(signals, flags, strict=True):
            _, req_id, end, avatar_id, has_animation = signal
            assert (end, avatar_id, has_animation) == (last, avatar, True)
            assert req_id in result["req_ids"]


def test_spatialreal_accepts_the_old_console_url(sdk_runs: dict[str, Run]) -> None:
    result = sdk_runs["spatialreal"].results["console url with /v1/console"]
    assert result["error"] is None
    assert result["connection_id"]


def test_spatialreal_pause_is_ignored_without_the_capability(sdk_runs: dict[str, Run]) -> None:
    run = sdk_runs["spatialreal"]
    result = run.results["pause ignored"]
    assert [e for e in result["events"] if e[0] == "state"] == []
    assert [len(f) for f in result["frames"]] == TALK_FRAMES[:1]
    main = run.emulators["main"]
    assert (main.stats.pauses_received, main.stats.resumes_received) == (1, 1)
    assert main.stats.playback_states_sent == 0


def _kinds(events: list[list[Any]]) -> list[str]:
    return [e[0] if e[0] != "state" else f"state {e[1]}" for e in events if e[0] != "signal"]


def test_spatialreal_pause_holds_frames_until_resume(sdk_runs: dict[str, Run]) -> None:
    run = sdk_runs["spatialreal"]
    emu = run.emulators["playback"]
    result = run.results["pause and resume"]
    assert result["error"] is None
    events = [e for e in result["events"] if e[0] != "signal"]
    kinds = _kinds(events)
    # Playback starts, frames, pause, nothing until the resume was sent, playing, frames, ended.
    assert kinds[0] == "state playing"
    paused = kinds.index("state paused")
    resumed = kinds.index("resume sent")
    assert kinds[paused + 1 : resumed] == []
    assert kinds[resumed + 1] == "state playing"
    assert kinds[-1] == "state ended"
    frames_before_pause = kinds[:paused].count("frame")
    assert frames_before_pause >= 5
    assert events[paused][2] == frames_before_pause * FRAME_MS
    assert events[resumed + 1][2] == frames_before_pause * FRAME_MS
    total = TALK_FRAMES[0]
    assert kinds.count("frame") == total
    assert events[-1][2] == total * FRAME_MS
    (req_id,) = result["req_ids"]
    connection_id = result["connection_id"]
    frames = result["frames"][0]
    assert frames == expected_frames(emu, connection_id, req_id, total, "emulator-avatar")
    assert frames == sent_animation(emu, connection_id)


def test_spatius_extra_params_and_trace_context(sdk_runs: dict[str, Run]) -> None:
    run = sdk_runs["spatius"]
    emu = run.emulators["main"]
    result = run.results["extra params"]
    assert emu.extra_params[result["connection_id"]] == {"voice": "calm"}
    (req_id,) = result["req_ids"]
    traceparent, _ = emu.trace_contexts[req_id]
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", traceparent)
    # The other SDKs send neither.
    for sdk in ("avatarkit", "spatialreal"):
        other = sdk_runs[sdk].emulators["main"]
        assert other.trace_contexts == {}
        assert all(params == {} for params in other.extra_params.values())


def test_spatius_prewarm_reuses_one_token(sdk_runs: dict[str, Run]) -> None:
    run = sdk_runs["spatius"]
    multi = run.results["prewarm multi-use"]
    assert multi["prefetched"] is True
    for session in multi["sessions"]:
        assert session["error"] is None
        assert [len(f) for f in session["frames"]] == TALK_FRAMES[1:]
    emu = run.emulators["prewarm multi-use"]
    assert (emu.stats.tokens_minted, emu.stats.handshakes_completed) == (1, 2)
    # Against single-use tokens (the default) the second session is refused.
    single = run.results["prewarm single-use"]
    first, second = single["sessions"]
    assert first["error"] is None
    assert second["error"]["code"] == "sessionTokenInvalid"
    assert second["error"]["http_status"] == 400
    emu = run.emulators["prewarm single-use"]
    assert (emu.stats.tokens_minted, emu.stats.handshakes_completed) == (1, 1)
