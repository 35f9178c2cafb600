"""The region circuit breaker: examples, then Hypothesis properties of the state machine."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from app.errors import AppError, ErrorCode
from app.settings import Endpoint
from app.spatialreal.regions import BreakerState, CircuitBreaker, RegionBreakers

A = Endpoint("ap-northeast", "http://a/v1/console", "http://a/v2/driveningress")
B = Endpoint("us-west", "http://b/v1/console", "http://b/v2/driveningress")


def test_opens_after_threshold_consecutive_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown=10)
    breaker.failure(0)
    breaker.failure(1)
    assert breaker.state(1) is BreakerState.CLOSED
    breaker.success(2)  # resets the streak: failures must be consecutive
    breaker.failure(3)
    breaker.failure(4)
    assert breaker.state(4) is BreakerState.CLOSED
    breaker.failure(5)
    assert breaker.state(5) is BreakerState.OPEN
    assert not breaker.allows(14.9)
    assert breaker.retry_after(6) == pytest.approx(9)


def test_half_open_allows_one_probe_then_closes_or_reopens() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown=10)
    breaker.failure(0)
    assert breaker.state(10) is BreakerState.HALF_OPEN
    assert breaker.begin(10)
    assert not breaker.begin(10.5)  # a second caller waits for the probe's verdict
    breaker.failure(11)
    assert breaker.state(11) is BreakerState.OPEN
    assert breaker.state(21) is BreakerState.HALF_OPEN
    assert breaker.begin(21)
    breaker.success(22)
    assert breaker.state(22) is BreakerState.CLOSED
    assert breaker.begin(22)
    assert breaker.begin(22)


def test_a_lost_probe_is_given_up_after_a_cooldown_and_release_frees_it() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown=10)
    breaker.failure(0)
    assert breaker.begin(10)
    assert not breaker.allows(19)
    assert breaker.retry_after(19) == pytest.approx(1)
    assert breaker.begin(20)
    breaker.release(21)
    assert breaker.begin(21)


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        RegionBreakers(failure_threshold=0)
    with pytest.raises(ValueError, match="cooldown"):
        RegionBreakers(cooldown=0)


def test_order_skips_open_regions_and_keeps_configured_order() -> None:
    breakers = RegionBreakers(failure_threshold=1, cooldown=30)
    assert breakers.order([A, B], 0) == [A, B]
    breakers.failure("ap-northeast", 0)
    assert breakers.order([A, B], 1) == [B]
    # After the cool-down the primary is probed first again, so a recovered primary is used.
    assert breakers.order([A, B], 30) == [A, B]


def test_order_raises_when_every_region_is_open() -> None:
    breakers = RegionBreakers(failure_threshold=1, cooldown=30)
    breakers.failure("ap-northeast", 0)
    breakers.failure("us-west", 10)
    with pytest.raises(AppError) as caught:
        breakers.order([A, B], 12)
    assert caught.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert caught.value.retry_after == pytest.approx(18)
    assert caught.value.retryable


# --- properties ---

events = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=20, allow_nan=False),
        st.sampled_from(["begin", "success", "failure", "release"]),
    ),
    max_size=60,
)


@given(
    threshold=st.integers(min_value=1, max_value=5),
    cooldown=st.floats(min_value=0.5, max_value=30),
    steps=events,
)
def test_retry_after_is_exactly_the_wait_until_allowed(
    threshold: int, cooldown: float, steps: list[tuple[float, str]]
) -> None:
    breaker = CircuitBreaker(threshold, cooldown)
    now = 0.0
    for delta, event in steps:
        now += delta
        getattr(breaker, event)(now)
        wait = breaker.retry_after(now)
        assert wait >= 0
        assert breaker.allows(now) == (wait == 0)
        if wait > 0:
            assert breaker.allows(now + wait + 1e-6)
            if wait > 1e-3:  # float rounding makes "just before" meaningless for tiny waits
                assert not breaker.allows(now + wait / 2)


@given(threshold=st.integers(min_value=1, max_value=8), cooldown=st.floats(0.1, 100))
def test_exactly_threshold_failures_open_a_closed_breaker(threshold: int, cooldown: float) -> None:
    breaker = CircuitBreaker(threshold, cooldown)
    for attempt in range(threshold):
        assert breaker.state(0) is BreakerState.CLOSED, attempt
        breaker.failure(0)
    assert breaker.state(0) is BreakerState.OPEN
    assert breaker.state(cooldown) is BreakerState.HALF_OPEN


class BreakerMachine(RuleBasedStateMachine):
    """A spec-level model of the breaker, driven with random events and clock jumps."""

    THRESHOLD = 3
    COOLDOWN = 10.0

    def __init__(self) -> None:
        super().__init__()
        self.breaker = CircuitBreaker(self.THRESHOLD, self.COOLDOWN)
        self.now = 0.0
        self.streak = 0
        self.opened_at: float | None = None
        self.probe_at: float | None = None

    def model_state(self) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self.now < self.opened_at + self.COOLDOWN:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def probe_busy(self) -> bool:
        return self.probe_at is not None and self.now < self.probe_at + self.COOLDOWN

    @rule(delta=st.floats(min_value=0, max_value=15, allow_nan=False))
    def tick(self, delta: float) -> None:
        self.now += delta

    @rule()
    def begin(self) -> None:
        state = self.model_state()
        expected = state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self.probe_busy()
        )
        assert self.breaker.begin(self.now) == expected
        if expected and state is BreakerState.HALF_OPEN:
            self.probe_at = self.now

    @rule()
    def success(self) -> None:
        self.breaker.success(self.now)
        self.streak, self.opened_at, self.probe_at = 0, None, None

    @rule()
    def failure(self) -> None:
        state = self.model_state()
        self.breaker.failure(self.now)
        if state is BreakerState.HALF_OPEN:
            self.opened_at, self.probe_at, self.streak = self.now, None, 0
        elif state is BreakerState.CLOSED:
            self.streak += 1
            if self.streak >= self.THRESHOLD:
                self.opened_at, self.probe_at, self.streak = self.now, None, 0

    @precondition(lambda self: self.probe_at is not None)
    @rule()
    def release(self) -> None:
        self.breaker.release(self.now)
        self.probe_at = None

    @invariant()
    def same_state(self) -> None:
        assert self.breaker.state(self.now) is self.model_state()

    @invariant()
    def open_never_allows(self) -> None:
        if self.model_state() is BreakerState.OPEN:
            assert not self.breaker.allows(self.now)
            assert self.breaker.retry_after(self.now) > 0


BreakerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40)
TestBreakerMachine = BreakerMachine.TestCase
