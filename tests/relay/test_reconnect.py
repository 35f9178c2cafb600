"""The upstream reconnect policy (app/relay/reconnect.py) and the core's answer to a refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.errors import AppError, ErrorCode, Phase
from app.relay.effects import CloseClient, ConversationEnded, SessionEnded
from app.relay.reconnect import Action, Reconnect, ReconnectPolicy, refuses
from app.spatialreal.classify import close_code_error
from avatar_relay_client import browser_protocol as p
from tests.relay.sim import audio, cid, connect, new_session, of_type, to_client


def closed(code: int | None) -> AppError:
    return AppError(close_code_error(code), phase=Phase.WEBSOCKET_RUNTIME, close_code=code)


def fixed(jitter: float) -> ReconnectPolicy:
    return ReconnectPolicy(0.5, 30.0, jitter=lambda: jitter)


@pytest.mark.parametrize("code", [4001, 4003, 4010, 4000, 4499])
def test_40xx_refuses_for_good(code: int) -> None:
    reconnect = Reconnect(fixed(0.5))
    error = closed(code)
    assert refuses(error)
    assert reconnect.after_loss(error, delivered=True).action is Action.REFUSE
    assert reconnect.refused is error
    assert Reconnect(fixed(0.5)).after_connect_failure(error).action is Action.REFUSE


def test_4002_rolls_over_at_once_and_forgets_earlier_failures() -> None:
    reconnect = Reconnect(fixed(1.0))
    reconnect.after_loss(closed(4503), delivered=True)
    decision = reconnect.after_loss(closed(4002), delivered=True)
    assert decision.action is Action.ROLL_OVER
    assert reconnect.failures == 0
    assert reconnect.refused is None


def test_4002_on_a_connection_that_never_worked_backs_off_instead() -> None:
    # Otherwise an upstream closing every fresh connection with 4002 would be a storm.
    reconnect = Reconnect(fixed(1.0))
    first = reconnect.after_loss(closed(4002), delivered=False)
    second = reconnect.after_loss(closed(4002), delivered=False)
    assert (first.action, first.delay) == (Action.RETRY, 0.5)
    assert (second.action, second.delay) == (Action.RETRY, 1.0)
    assert reconnect.after_connect_failure(closed(4002)).delay == 2.0


def test_4503_backs_off_from_the_first_loss_and_doubles() -> None:
    reconnect = Reconnect(fixed(1.0))  # jitter 1.0: the whole step
    delays = [reconnect.after_loss(closed(4503), delivered=True).delay for _ in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    reconnect.healthy()
    assert reconnect.after_loss(closed(4503), delivered=True).delay == 0.5


def test_a_first_plain_drop_reconnects_at_once_a_second_waits() -> None:
    reconnect = Reconnect(fixed(0.0))  # jitter 0: half the step
    assert reconnect.after_loss(closed(None), delivered=True).delay == 0.0
    assert reconnect.after_loss(closed(None), delivered=True).delay == 0.5
    # Not a close code: a failed connect or an idle close is retried, never refused.
    idle = AppError(ErrorCode.IDLE_TIMEOUT, phase=Phase.WEBSOCKET_RUNTIME)
    assert not refuses(idle)
    assert Reconnect(fixed(0.0)).after_loss(idle, delivered=True).action is Action.RETRY
    rejected = AppError(ErrorCode.AVATAR_NOT_FOUND, phase=Phase.WEBSOCKET_CONNECT)
    assert Reconnect(fixed(0.0)).after_connect_failure(rejected).action is Action.RETRY


@given(
    failures=st.integers(min_value=1, max_value=200),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    initial=st.floats(min_value=0.01, max_value=5.0),
    maximum=st.floats(min_value=5.0, max_value=120.0),
)
def test_every_delay_lies_in_half_to_all_of_its_step(
    failures: int, jitter: float, initial: float, maximum: float
) -> None:
    policy = ReconnectPolicy(initial, maximum, jitter=lambda: jitter)
    step = min(maximum, initial * 2 ** (failures - 1))
    delay = policy.delay(failures)
    assert step / 2 - 1e-9 <= delay <= step + 1e-9
    assert delay <= maximum + 1e-9


def test_jitter_spreads_sessions_that_failed_together() -> None:
    policy = ReconnectPolicy(1.0, 30.0)
    delays = {round(policy.delay(3), 6) for _ in range(50)}
    assert len(delays) > 40
    assert all(2.0 <= d <= 4.0 for d in delays)


def test_policy_validates() -> None:
    with pytest.raises(ValueError, match="backoff"):
        ReconnectPolicy(0.0, 1.0)
    with pytest.raises(ValueError, match="backoff"):
        ReconnectPolicy(2.0, 1.0)


# --- the core: a refusal ends the session with its code ---


def test_a_refusal_aborts_what_waits_on_upstream_then_ends_with_error() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, end=True), 0.1)
    effects = s.on_upstream_refused(ErrorCode.CREDITS_EXHAUSTED, "credits exhausted", 0.2)
    messages = to_client(effects)
    assert isinstance(messages[0], p.ConversationAborted)
    assert messages[0].conversation_id == cid(1)
    assert messages[0].code == "creditsExhausted"
    assert messages[-1] == p.ServerError("creditsExhausted", "credits exhausted")
    assert [c.close_code for c in of_type(effects, CloseClient)] == [4502]
    assert [e.outcome for e in of_type(effects, ConversationEnded)] == ["aborted"]
    assert of_type(effects, SessionEnded) == [SessionEnded(ErrorCode.CREDITS_EXHAUSTED)]
    assert s.ended
    assert s.on_upstream_refused(ErrorCode.CREDITS_EXHAUSTED, "again", 0.3) == []


def test_a_refusal_with_no_client_ends_the_session_quietly() -> None:
    s = new_session()
    effects = s.on_upstream_refused(ErrorCode.CONCURRENCY_LIMIT, "limit", 0.1)
    assert to_client(effects) == []
    assert of_type(effects, SessionEnded) == [SessionEnded(ErrorCode.CONCURRENCY_LIMIT)]
