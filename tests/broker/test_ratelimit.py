"""Rate limits per caller and per client address, shared by instances through Redis."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from app.emulator import Emulator
from app.ratelimit import client_ip, parse_networks
from app.settings import ConfigError
from tests.broker.conftest import broker_settings, error_code, running_broker, unique

PROXIES = parse_networks(["10.0.0.0/8", "127.0.0.1"])


def test_client_ip_is_the_peer_unless_the_peer_is_a_trusted_proxy() -> None:
    assert client_ip("198.51.100.9", ["1.2.3.4"], ()) == "198.51.100.9"
    assert client_ip("198.51.100.9", ["1.2.3.4"], PROXIES) == "198.51.100.9"
    assert client_ip("10.1.2.3", ["203.0.113.7"], PROXIES) == "203.0.113.7"
    # Walk right to left over trusted hops; left of the first untrusted hop is client-made.
    assert client_ip("10.1.2.3", ["6.6.6.6, 203.0.113.7, 10.9.9.9"], PROXIES) == "203.0.113.7"
    assert client_ip("10.1.2.3", ["6.6.6.6", "203.0.113.7"], PROXIES) == "203.0.113.7"
    # Garbage in the chain never becomes a bucket name.
    assert client_ip("10.1.2.3", ["not-an-ip"], PROXIES) == "10.1.2.3"
    assert client_ip("10.1.2.3", [], PROXIES) == "10.1.2.3"
    assert client_ip("::ffff:198.51.100.9", [], ()) == "198.51.100.9"
    assert client_ip("10.1.2.3", ["2001:db8::1"], PROXIES) == "2001:db8::1"
    assert client_ip(None, [], PROXIES) == "unknown"


def test_trusted_proxies_must_parse() -> None:
    with pytest.raises(ConfigError, match=r"proxy\.internal"):
        parse_networks(["10.0.0.0/8", "proxy.internal"])


async def test_principal_limit_answers_429_with_retry_after(emu: Emulator) -> None:
    mine, other = unique("key-aaaaaaaaaaaa"), unique("key-bbbbbbbbbbbb")
    settings = broker_settings(
        emu, auth_api_keys=[SecretStr(mine), SecretStr(other)], rate_limit_principal_per_minute=3
    )
    async with running_broker(settings) as broker:
        allowed = [await broker.mint(key=mine) for _ in range(3)]
        refused = await broker.mint(key=mine)
        someone_else = await broker.mint(key=other)
    assert [r.status_code for r in allowed] == [201, 201, 201]
    assert refused.status_code == 429
    assert error_code(refused) == "rateLimited"
    # One request per 20 s refills the bucket (a little less is left by the time we ask).
    assert 19 <= int(refused.headers["retry-after"]) <= 20
    assert someone_else.status_code == 201
    assert emu.stats.tokens_minted == 4


async def test_ip_limit_honours_forwarded_for_from_trusted_proxies(emu: Emulator) -> None:
    settings = broker_settings(emu, rate_limit_ip_per_minute=2, trusted_proxies=["127.0.0.1"])
    client_a = {"X-Forwarded-For": "203.0.113.7"}
    client_b = {"X-Forwarded-For": "203.0.113.8"}
    async with running_broker(settings) as broker:
        a = [(await broker.mint(headers=client_a)).status_code for _ in range(3)]
        b = (await broker.mint(headers=client_b)).status_code
    assert a == [201, 201, 429]
    assert b == 201


async def test_failed_authentication_spends_the_address_budget(emu: Emulator) -> None:
    settings = broker_settings(emu, rate_limit_ip_per_minute=2, trusted_proxies=["127.0.0.1"])
    guesser = {"X-Forwarded-For": "198.51.100.66"}
    async with running_broker(settings) as broker:
        guesses = [(await broker.mint(key=f"guess-{i}", headers=guesser)) for i in range(2)]
        then_real = await broker.mint(headers=guesser)
    assert [g.status_code for g in guesses] == [401, 401]
    assert then_real.status_code == 429


async def test_two_instances_share_one_limit_through_redis(emu: Emulator, redis_url: str) -> None:
    key = unique("shared-caller-key")
    settings = broker_settings(
        emu,
        auth_api_keys=[SecretStr(key)],
        redis_url=redis_url,
        rate_limit_principal_per_minute=4,
    )
    async with running_broker(settings) as a, running_broker(settings) as b:
        statuses = [(await x.mint(key=key)).status_code for x in (a, b, a, b)]
        over_a = await a.mint(key=key)
        over_b = await b.mint(key=key)
    assert statuses == [201, 201, 201, 201]
    assert over_a.status_code == over_b.status_code == 429
    assert int(over_b.headers["retry-after"]) >= 1


async def test_in_process_stores_do_not_share(emu: Emulator) -> None:
    """The contrast that shows the sharing above is Redis's doing."""
    key = unique("local-caller-key")
    settings = broker_settings(
        emu, auth_api_keys=[SecretStr(key)], rate_limit_principal_per_minute=2
    )
    async with running_broker(settings) as a, running_broker(settings) as b:
        statuses = [(await x.mint(key=key)).status_code for x in (a, a, b, b)]
    assert statuses == [201, 201, 201, 201]


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_answers_carry_the_ietf_ratelimit_headers(
    emu: Emulator, store: str, request: pytest.FixtureRequest
) -> None:
    redis = request.getfixturevalue("redis_url") if store == "redis" else None
    # Buckets of their own (the Redis server is shared by the whole test session).
    key = unique("key-cccccccccccc")
    client = {"X-Forwarded-For": f"2001:db8::{uuid.uuid4().hex[:4]}"}
    settings = broker_settings(
        emu,
        rate_limit_principal_per_minute=3,
        # Slow refills (one per 10 s): a busy machine's delay between calls cannot move `r`.
        rate_limit_ip_per_minute=6,
        redis_url=redis,
        auth_api_keys=[SecretStr(key)],
        trusted_proxies=["127.0.0.1"],
    )
    async with running_broker(settings) as broker:
        answers = [await broker.mint(key=key, headers=client) for _ in range(4)]
        relay = await broker.client.post(
            "/v1/relay/sessions", json={}, headers={"Authorization": f"Bearer {key}", **client}
        )
        health = await broker.client.get("/healthz")
    policy = '"ip";q=6;w=60, "principal";q=3;w=60'
    # Successful calls say how much is left (and when it is whole again), not only the 429.
    first, second, third, refused = answers
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    for answer in answers:
        assert answer.headers["ratelimit-policy"] == policy
    assert first.headers["ratelimit"] == '"ip";r=5;t=10, "principal";r=2;t=20'
    assert second.headers["ratelimit"] == '"ip";r=4;t=20, "principal";r=1;t=40'
    assert third.headers["ratelimit"] == '"ip";r=3;t=30, "principal";r=0;t=60'
    # The refused one charged nothing (all or nothing), and says so.
    assert refused.headers["ratelimit"] == '"ip";r=3;t=30, "principal";r=0;t=60'
    assert "retry-after" in refused.headers
    # Every rate-limited route answers them; unlimited ones do not.
    assert relay.status_code == 429
    assert relay.headers["ratelimit-policy"] == policy
    assert "ratelimit" not in health.headers


async def test_no_ratelimit_headers_when_the_limits_are_off(emu: Emulator) -> None:
    async with running_broker(broker_settings(emu)) as broker:
        answer = await broker.mint()
    assert answer.status_code == 201
    assert "ratelimit" not in answer.headers
    assert "ratelimit-policy" not in answer.headers
