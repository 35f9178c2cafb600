"""The Metrics object: every documented series is exported, helpers count, apps stay isolated."""

from __future__ import annotations

import itertools

from prometheus_client.parser import text_string_to_metric_families

from app.errors import ErrorCode
from app.metrics import SERIES, STANDARD_SERIES, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.render()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_every_documented_series_is_exported_and_starts_at_zero() -> None:
    metrics = Metrics()
    body, content_type = metrics.render()
    text = body.decode()
    assert content_type.startswith("text/plain")
    for name in SERIES:
        assert f"# TYPE {name} " in text, name
    assert "_created" not in text
    got = samples(metrics)
    assert got[("avatar_relay_conversations_total", (("outcome", "aborted"),))] == 0
    key = ("avatar_relay_messages_total", (("direction", "up"), ("kind", "audio")))
    assert got[key] == 0
    key = ("avatar_relay_tokens_minted_total", (("outcome", "failure"), ("region", "us-west")))
    assert got[key] == 0
    assert got[("avatar_relay_upstream_errors_total", (("code", "creditsExhausted"),))] == 0
    # Our own (non-upstream) codes are not pre-created as upstream errors.
    assert ("avatar_relay_upstream_errors_total", (("code", "unauthorized"),)) not in got


def test_helpers_count_what_they_are_given() -> None:
    metrics = Metrics()
    metrics.relayed("down", "frame", 300)
    metrics.relayed("down", "frame", 200)
    metrics.relayed("up", "audio", 640)
    metrics.observe_hop(0.0007)
    metrics.observe_loop_lag(0.03)
    metrics.conversation_ended("interrupted")
    metrics.token_minted("ap-northeast", "success")
    metrics.upstream_error(ErrorCode.CONNECTION_FAILED)
    metrics.rate_limited("ip")
    metrics.resume("resumed")
    metrics.tickets_issued_total.inc()
    metrics.relay_sessions_active.inc()
    got = samples(metrics)
    down_frame = (("direction", "down"), ("kind", "frame"))
    assert got[("avatar_relay_messages_total", down_frame)] == 2
    assert got[("avatar_relay_bytes_total", down_frame)] == 500
    up_audio = (("direction", "up"), ("kind", "audio"))
    assert got[("avatar_relay_bytes_total", up_audio)] == 640
    assert got[("avatar_relay_hop_seconds_count", ())] == 1
    assert got[("avatar_relay_hop_seconds_bucket", (("le", "0.001"),))] == 1
    assert got[("avatar_relay_hop_seconds_bucket", (("le", "0.0005"),))] == 0
    assert got[("avatar_relay_event_loop_lag_seconds_bucket", (("le", "0.05"),))] == 1
    assert got[("avatar_relay_event_loop_lag_seconds_bucket", (("le", "0.025"),))] == 0
    assert got[("avatar_relay_conversations_total", (("outcome", "interrupted"),))] == 1
    key = ("avatar_relay_tokens_minted_total", (("outcome", "success"), ("region", "ap-northeast")))
    assert got[key] == 1
    assert got[("avatar_relay_upstream_errors_total", (("code", "connectionFailed"),))] == 1
    assert got[("avatar_relay_rate_limit_rejections_total", (("scope", "ip"),))] == 1
    assert got[("avatar_relay_resumes_total", (("outcome", "resumed"),))] == 1
    assert got[("avatar_relay_tickets_issued_total", ())] == 1
    assert got[("avatar_relay_sessions_active", ())] == 1


def test_two_instances_do_not_share_series() -> None:
    first, second = Metrics(), Metrics()
    first.rate_limited("principal")
    key = ("avatar_relay_rate_limit_rejections_total", (("scope", "principal"),))
    assert samples(first)[key] == 1
    assert samples(second)[key] == 0


def test_the_standard_process_and_python_series_are_exported() -> None:
    text = Metrics().render()[0].decode()
    for name in STANDARD_SERIES:
        assert f"\n{name}" in text, name
    got = samples(Metrics())
    assert got[("process_resident_memory_bytes", ())] > 1_000_000
    assert got[("process_open_fds", ())] > 0


def test_no_series_name_repeats_a_word() -> None:
    # `avatar_relay_relay_sessions_active` did; dashboards read better without.
    for family in text_string_to_metric_families(Metrics().render()[0].decode()):
        words = family.name.split("_")
        assert all(a != b for a, b in itertools.pairwise(words)), family.name
