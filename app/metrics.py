"""Prometheus metrics: every series the server exports, defined in one place.

One `Metrics` object is built per application (`create_app` stores it on `app.state.metrics`) with
its own `CollectorRegistry`, so several apps in one process (tests, benchmarks) never share or
collide on series. Services receive the object and increment it; `render()` serves `/metrics`.

Label values are small closed sets (the constants below, regions, stable error codes), never ids,
so the number of series stays bounded. Known label combinations are created up front: dashboards
and alerts see a zero instead of a missing series.

Series (all prefixed `avatar_relay_`; before this naming the relay's own series were named
`avatar_relay_relay_*`, see deploy/README.md for a relabelling rule that keeps old dashboards):

- sessions_active (gauge): relay sessions held by this instance
- conversations_total (counter; outcome): ended completed / interrupted / aborted
- messages_total (counter; direction, kind): messages relayed; direction up (browser to
  upstream) / down, kind audio / frame / control
- bytes_total (counter; direction, kind): payload bytes relayed, same labels
- hop_seconds (histogram): upstream message received -> written to the browser socket
- event_loop_lag_seconds (histogram): how late the event loop ran a timer that was due (every
  50 ms, app.loop_lag): what every message of every session waits on a busy loop
- resumes_total (counter; outcome): reconnects in the resume window: resumed / failed
- tickets_issued_total (counter): relay WebSocket tickets issued (sessions and reconnects)
- upstream_connections_active (gauge): open ingress WebSocket connections, pooled ones included
- tokens_minted_total (counter; region, outcome): console mint attempts: success / failure
- upstream_errors_total (counter; code): upstream failures by stable code (app.errors.ErrorCode)
- rate_limit_rejections_total (counter; scope): requests refused by a rate limit: principal / ip
- http_requests_total (counter; method, route, status): HTTP requests by route template
- http_request_duration_seconds (histogram; method, route): HTTP latency (WebSockets excluded)
- rtc_sessions_active (gauge): RTC (LiveKit) sessions held by this instance
- rtc_requests_total (counter; outcome): RTC requests ended: ended / interrupted / aborted
- rtc_duplicate_signals_total (counter): egress playback signals dropped as repeats

Plus prometheus_client's standard collectors, unprefixed as everywhere: `process_*` (CPU, memory,
open file descriptors, start time) and `python_*` (version info, garbage collector).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Final, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from app.errors import ErrorCode, spec
from app.settings import Region

PREFIX: Final = "avatar_relay"

# `*_created` timestamps double the output and no dashboard uses them (process-wide switch).
disable_created_metrics()  # type: ignore[no-untyped-call]

Direction = Literal["up", "down"]
Kind = Literal["audio", "frame", "control"]
ConversationOutcome = Literal["completed", "interrupted", "aborted"]
MintOutcome = Literal["success", "failure"]
ResumeOutcome = Literal["resumed", "failed"]
RateLimitScope = Literal["principal", "ip"]
RtcOutcome = Literal["ended", "interrupted", "aborted"]

DIRECTIONS: Final[tuple[Direction, ...]] = ("up", "down")
KINDS: Final[tuple[Kind, ...]] = ("audio", "frame", "control")
CONVERSATION_OUTCOMES: Final[tuple[ConversationOutcome, ...]] = (
    "completed",
    "interrupted",
    "aborted",
)
MINT_OUTCOMES: Final[tuple[MintOutcome, ...]] = ("success", "failure")
RESUME_OUTCOMES: Final[tuple[ResumeOutcome, ...]] = ("resumed", "failed")
RATE_LIMIT_SCOPES: Final[tuple[RateLimitScope, ...]] = ("principal", "ip")
RTC_OUTCOMES: Final[tuple[RtcOutcome, ...]] = ("ended", "interrupted", "aborted")

# A relay hop is in-process work: sub-millisecond when healthy, tens of ms when the loop is busy.
HOP_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
)
# Event-loop lag: ~1 ms on an idle loop (timer resolution); 200 ms is a frame missing its slot.
LOOP_LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)
HTTP_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

# Every series name (without the `_total`/`_bucket` suffixes Prometheus adds), for docs and tests.
SERIES: Final[tuple[str, ...]] = (
    f"{PREFIX}_sessions_active",
    f"{PREFIX}_conversations_total",
    f"{PREFIX}_messages_total",
    f"{PREFIX}_bytes_total",
    f"{PREFIX}_hop_seconds",
    f"{PREFIX}_event_loop_lag_seconds",
    f"{PREFIX}_resumes_total",
    f"{PREFIX}_tickets_issued_total",
    f"{PREFIX}_upstream_connections_active",
    f"{PREFIX}_tokens_minted_total",
    f"{PREFIX}_upstream_errors_total",
    f"{PREFIX}_rate_limit_rejections_total",
    f"{PREFIX}_http_requests_total",
    f"{PREFIX}_http_request_duration_seconds",
    f"{PREFIX}_rtc_sessions_active",
    f"{PREFIX}_rtc_requests_total",
    f"{PREFIX}_rtc_duplicate_signals_total",
)


# The standard process and Python series every Prometheus client library exports (a sample).
STANDARD_SERIES: Final[tuple[str, ...]] = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
    "python_info",
    "python_gc_collections_total",
)


class RelayTraffic(Collector):
    """The relay's per-message series (messages, bytes, hop latency) kept as plain ints and
    exported at scrape time with the same names, labels and buckets a Counter / Histogram would
    have. They change several thousand times a second under load; prometheus_client's metrics
    take a lock per change, which cost ~5% of the relay's CPU. The event loop's thread is the
    only writer and `/metrics` is served on that same loop, so a scrape sees whole updates."""

    def __init__(self) -> None:
        self.messages = [0] * len(_TRAFFIC_LABELS)
        self.bytes = [0] * len(_TRAFFIC_LABELS)
        self.hop_counts = [0] * (len(HOP_BUCKETS) + 1)  # the last one: above every bound
        self.hop_sum = 0.0

    def collect(self) -> Iterator[Metric]:
        messages = CounterMetricFamily(
            _name("messages_total"),
            "Messages relayed, by direction (up = browser to upstream) and kind.",
            labels=["direction", "kind"],
        )
        size = CounterMetricFamily(
            _name("bytes_total"),
            "Payload bytes relayed, by direction and kind.",
            labels=["direction", "kind"],
        )
        for index, labels in enumerate(_TRAFFIC_LABELS):
            messages.add_metric(labels, float(self.messages[index]))
            size.add_metric(labels, float(self.bytes[index]))
        yield messages
        yield size
        cumulative = 0.0
        buckets: list[tuple[str, float]] = []
        for le, count in zip(_HOP_LE, self.hop_counts, strict=True):
            cumulative += count
            buckets.append((le, cumulative))
        yield HistogramMetricFamily(
            _name("hop_seconds"),
            "Time from an upstream message's arrival to its write on the browser socket.",
            buckets=buckets,
            sum_value=self.hop_sum,
        )


_TRAFFIC_LABELS: Final[tuple[tuple[Direction, Kind], ...]] = tuple(
    (d, k) for d in DIRECTIONS for k in KINDS
)
# The `le` labels exactly as prometheus_client's Histogram writes them.
_HOP_LE: Final[tuple[str, ...]] = tuple(
    floatToGoString(bound)  # type: ignore[no-untyped-call]
    for bound in (*HOP_BUCKETS, float("inf"))
)
_TRAFFIC_INDEX: Final[dict[tuple[Direction, Kind], int]] = {
    labels: index for index, labels in enumerate(_TRAFFIC_LABELS)
}


def _name(suffix: str) -> str:
    # prometheus_client appends `_total` to counters itself; pass the base name.
    return f"{PREFIX}_{suffix}".removesuffix("_total")


class Metrics:
    """All series of one application. Attributes are plain prometheus_client metrics, except
    `traffic` (the relay's per-message series, see RelayTraffic): use `relayed`/`observe_hop`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

        self.relay_sessions_active = Gauge(
            _name("sessions_active"), "Relay sessions held by this instance.", registry=r
        )
        self.conversations_total = Counter(
            _name("conversations_total"),
            "Conversations ended, by outcome (completed, interrupted, aborted).",
            ["outcome"],
            registry=r,
        )
        # relay_messages_total, relay_bytes_total, relay_hop_seconds (see RelayTraffic).
        self.traffic = RelayTraffic()
        r.register(self.traffic)
        self.event_loop_lag_seconds = Histogram(
            _name("event_loop_lag_seconds"),
            "How late the event loop ran a timer that was due (sampled every 50 ms).",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.resumes_total = Counter(
            _name("resumes_total"),
            "Reconnects within the resume window, by outcome (resumed, failed).",
            ["outcome"],
            registry=r,
        )
        self.tickets_issued_total = Counter(
            _name("tickets_issued_total"), "Relay WebSocket tickets issued.", registry=r
        )
        self.upstream_connections_active = Gauge(
            _name("upstream_connections_active"),
            "Open ingress WebSocket connections, pooled ones included.",
            registry=r,
        )
        self.tokens_minted_total = Counter(
            _name("tokens_minted_total"),
            "Session-token mint attempts against the console, by region and outcome.",
            ["region", "outcome"],
            registry=r,
        )
        self.upstream_errors_total = Counter(
            _name("upstream_errors_total"),
            "Upstream failures, by stable error code.",
            ["code"],
            registry=r,
        )
        self.rate_limit_rejections_total = Counter(
            _name("rate_limit_rejections_total"),
            "Requests refused by a rate limit, by scope (principal, ip).",
            ["scope"],
            registry=r,
        )
        self.http_requests_total = Counter(
            _name("http_requests_total"),
            "HTTP requests, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_request_duration_seconds = Histogram(
            _name("http_request_duration_seconds"),
            "HTTP request latency by method and route template (WebSockets excluded).",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.rtc_sessions_active = Gauge(
            _name("rtc_sessions_active"),
            "RTC (LiveKit) sessions held by this instance.",
            registry=r,
        )
        self.rtc_requests_total = Counter(
            _name("rtc_requests_total"),
            "RTC requests ended, by outcome (ended, interrupted, aborted).",
            ["outcome"],
            registry=r,
        )
        self.rtc_duplicate_signals_total = Counter(
            _name("rtc_duplicate_signals_total"),
            "Egress playback signals dropped as repeats (an end that came again).",
            registry=r,
        )
        self._precreate()

    def _precreate(self) -> None:
        for outcome in CONVERSATION_OUTCOMES:
            self.conversations_total.labels(outcome)
        for resume in RESUME_OUTCOMES:
            self.resumes_total.labels(resume)
        for region in Region:
            for mint in MINT_OUTCOMES:
                self.tokens_minted_total.labels(region.value, mint)
        for code in ErrorCode:
            if spec(code).upstream:
                self.upstream_errors_total.labels(code.value)
        for scope in RATE_LIMIT_SCOPES:
            self.rate_limit_rejections_total.labels(scope)
        for rtc_outcome in RTC_OUTCOMES:
            self.rtc_requests_total.labels(rtc_outcome)

    # --- helpers for the common cases (the attributes above can be used directly too) ---

    def relayed(self, direction: Direction, kind: Kind, nbytes: int) -> None:
        """Count one relayed message of `nbytes` payload bytes."""
        index = _TRAFFIC_INDEX[(direction, kind)]
        traffic = self.traffic
        traffic.messages[index] += 1
        traffic.bytes[index] += nbytes

    def observe_hop(self, seconds: float) -> None:
        traffic = self.traffic
        # Prometheus buckets are upper-inclusive (le): the first bound >= seconds.
        traffic.hop_counts[bisect_left(HOP_BUCKETS, seconds)] += 1
        traffic.hop_sum += seconds

    def observe_loop_lag(self, seconds: float) -> None:
        self.event_loop_lag_seconds.observe(seconds)

    def conversation_ended(self, outcome: ConversationOutcome) -> None:
        self.conversations_total.labels(outcome).inc()

    def rtc_request_ended(self, outcome: str) -> None:
        self.rtc_requests_total.labels(outcome).inc()

    def token_minted(self, region: str, outcome: MintOutcome) -> None:
        self.tokens_minted_total.labels(region, outcome).inc()

    def upstream_error(self, code: ErrorCode | str) -> None:
        self.upstream_errors_total.labels(str(code)).inc()

    def rate_limited(self, scope: RateLimitScope) -> None:
        self.rate_limit_rejections_total.labels(scope).inc()

    def resume(self, outcome: ResumeOutcome) -> None:
        self.resumes_total.labels(outcome).inc()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of this registry and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
