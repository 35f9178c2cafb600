"""The relay benchmark's arithmetic (bench/relaybench/stats.py): the figures it reports are only as
good as these."""

from __future__ import annotations

import math
import os

from hypothesis import given
from hypothesis import strategies as st

from bench.relaybench import stats

BOUNDS = [0.001, 0.01, 0.1, float("inf")]


def test_percentile_is_the_nearest_rank_and_none_for_nothing() -> None:
    values = [float(x) for x in range(1, 101)]
    assert stats.percentile(values, 0.50) == 51.0
    assert stats.percentile(values, 0.99) == 100.0
    assert stats.percentile([3.0, 1.0, 2.0], 0.0) == 1.0
    assert stats.percentile([], 0.5) is None


def test_summary_is_in_milliseconds() -> None:
    assert stats.summary_ms([0.001, 0.002, 0.003]) == {"p50": 2.0, "p99": 3.0, "max": 3.0}
    assert stats.summary_ms([]) == {"p50": None, "p99": None, "max": None}


def test_growth_compares_the_last_quarter_with_the_first() -> None:
    flat = [0.05] * 40
    assert stats.growth(flat) == 0.0
    rising = [i * 0.01 for i in range(40)]  # 10 ms more per frame
    assert math.isclose(stats.growth(rising), 0.30, abs_tol=1e-9)
    assert stats.growth([0.0, 1.0, 2.0]) == 0.0  # too short to say
    # One late frame in the middle is not a growing lag.
    spike = [0.02] * 20 + [0.5] + [0.02] * 19
    assert stats.growth(spike) == 0.0


PROMETHEUS = """# HELP avatar_relay_hop_seconds x
# TYPE avatar_relay_hop_seconds histogram
avatar_relay_hop_seconds_bucket{le="0.001"} 10.0
avatar_relay_hop_seconds_bucket{le="0.01"} 30.0
avatar_relay_hop_seconds_bucket{le="0.1"} 40.0
avatar_relay_hop_seconds_bucket{le="+Inf"} 40.0
avatar_relay_hop_seconds_count 40.0
avatar_relay_event_loop_lag_seconds_bucket{le="0.001"} 7.0
"""


def test_a_histogram_is_read_from_prometheus_text_by_name() -> None:
    assert stats.parse_histogram(PROMETHEUS, "avatar_relay_hop_seconds") == (
        BOUNDS,
        [10.0, 30.0, 40.0, 40.0],
    )
    assert stats.parse_histogram(PROMETHEUS, "avatar_relay_event_loop_lag_seconds") == (
        [0.001],
        [7.0],
    )
    assert stats.parse_histogram(PROMETHEUS, "missing") == ([], [])


def test_bucket_percentile_interpolates_inside_the_bucket() -> None:
    histogram = (BOUNDS, [10.0, 30.0, 40.0, 40.0])
    # rank 20 of 40 is halfway through the (0.001, 0.01] bucket.
    assert math.isclose(stats.bucket_percentile(histogram, 0.5) or 0, 0.0055)
    assert math.isclose(stats.bucket_percentile(histogram, 0.25) or 0, 0.001)
    assert stats.bucket_percentile((BOUNDS, [0.0, 0.0, 0.0, 5.0]), 0.5) is None  # in +Inf
    assert stats.bucket_percentile((BOUNDS, [0.0, 0.0, 0.0, 0.0]), 0.5) is None


def test_deltas_and_sums_of_scrapes() -> None:
    before = (BOUNDS, [1.0, 2.0, 3.0, 3.0])
    after = (BOUNDS, [5.0, 7.0, 9.0, 10.0])
    assert stats.histogram_delta(before, after) == (BOUNDS, [4.0, 5.0, 6.0, 7.0])
    assert stats.histogram_delta(([], []), after) == after
    assert stats.histogram_sum([before, after]) == (BOUNDS, [6.0, 9.0, 12.0, 13.0])
    assert stats.histogram_sum([]) == ([], [])


@given(st.lists(st.floats(min_value=0, max_value=1), max_size=200))
def test_exact_samples_bucket_like_a_scrape(values: list[float]) -> None:
    bounds, counts = stats.histogram_of(values, BOUNDS[:-1])
    assert bounds == BOUNDS
    assert counts == [float(sum(1 for v in values if v <= b)) for b in BOUNDS]
    assert counts == sorted(counts)


def test_ratio_needs_both_figures() -> None:
    assert stats.ratio(115.0, 100.0) == 1.15
    assert stats.ratio(None, 100.0) is None
    assert stats.ratio(1.0, 0.0) is None


def test_this_process_has_cpu_and_memory_and_a_gone_one_none() -> None:
    me = os.getpid()
    sum(i * i for i in range(200_000))  # some CPU to see
    assert stats.cpu_seconds(me) > 0
    assert stats.rss_mib(me) > 1
    gone = 2**22 + 12345  # above pid_max's default: no such process
    assert stats.cpu_seconds(gone) == 0.0
    assert stats.rss_mib(gone) == 0.0
    assert stats.children(gone) == []
    busy, total = stats.machine_busy()
    assert 0 < busy <= total
