"""The emulator's token memory: expired tokens stay known as expired for an hour, then go."""

from __future__ import annotations

from app.emulator.state import EXPIRED_TOKEN_MEMORY_SECONDS, TokenCheck, TokenStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_expired_tokens_are_remembered_for_an_hour_then_forgotten() -> None:
    clock = Clock()
    store = TokenStore(clock)
    # Minted out of expiry order, so forgetting cannot rely on insertion order.
    late = store.mint("app", int(clock.now) + 300)
    early = store.mint("app", int(clock.now) + 100)
    clock.now += 200
    store.mint("app", int(clock.now) + 3600)  # a mint is what triggers forgetting
    assert store.check(early, "app") is TokenCheck.EXPIRED
    assert store.check(late, "app") is TokenCheck.OK
    clock.now += EXPIRED_TOKEN_MEMORY_SECONDS - 100  # `early` is exactly an hour past expiry
    store.mint("app", int(clock.now) + 3600)
    assert store.check(early, "app") is TokenCheck.UNKNOWN
    assert store.check(late, "app") is TokenCheck.EXPIRED
    clock.now += 199
    store.mint("app", int(clock.now) + 3600)
    assert store.check(late, "app") is TokenCheck.EXPIRED
    clock.now += 1  # now `late` is an hour past expiry too
    store.mint("app", int(clock.now) + 3600)
    assert store.check(late, "app") is TokenCheck.UNKNOWN


def test_used_and_live_tokens_survive_forgetting() -> None:
    clock = Clock()
    store = TokenStore(clock)
    used = store.mint("app", int(clock.now) + 7200)
    store.consume(used)
    live = [store.mint("app", int(clock.now) + 7200) for _ in range(50)]
    clock.now += 3600
    store.mint("app", int(clock.now) + 60)
    assert store.check(used, "app") is TokenCheck.UNKNOWN  # used: single-use, not forgotten
    assert all(store.check(token, "app") is TokenCheck.OK for token in live)
