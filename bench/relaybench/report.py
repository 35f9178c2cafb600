"""The JSON a run writes: each server's figures, and the relay's as ratios against the floor
measured in the same run (absolute figures on a shared 2-core machine swing; ratios hold)."""

from __future__ import annotations

import statistics
from typing import Any, Final

from bench.relaybench.stats import ratio
from bench.relaybench.verdicts import most_sessions

TARGET_CPU_RATIO: Final = 1.15
TARGET_TRANSIT_P99_RATIO: Final = 2.0


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def fixed_load(runs: list[dict[str, Any]], sessions: int) -> dict[str, Any]:
    return {
        "sessions": sessions,
        "rounds": len(runs),
        "server_cpu_us_per_message_median": _median([r["server_cpu_us_per_message"] for r in runs]),
        "server_cpu_us_per_message_all": [r["server_cpu_us_per_message"] for r in runs],
        "server_cpu_ms_per_session_second_median": _median(
            [r["server_cpu_ms_per_session_second"] for r in runs]
        ),
        "transit_p99_ms_median": _median([r["transit_ms"]["p99"] for r in runs]),
        "hop_p99_ms_median": _median([r["hop"]["p99_ms"] for r in runs]),
        "runs": runs,
    }


def echo_summary(
    echo: dict[str, Any], no_echo: dict[str, Any], floor: dict[str, Any]
) -> dict[str, Any]:
    """`audioEcho: false` against the echo and the floor, at the same fixed load."""
    key = "server_cpu_ms_per_session_second_median"

    def down(cpu: dict[str, Any]) -> float | None:
        runs = cpu["runs"]
        return _median([r["media_messages"] / r["sessions"] for r in runs]) if runs else None

    return {
        "sessions": echo["sessions"],
        "cpu_ms_per_session_second": {
            "relay": echo[key],
            "relay_noecho": no_echo[key],
            "floor": floor[key],
        },
        "noecho_ratio_vs_relay": ratio(no_echo[key], echo[key]),
        "noecho_ratio_vs_floor": ratio(no_echo[key], floor[key]),
        "relay_ratio_vs_floor": ratio(echo[key], floor[key]),
        "media_messages_per_session": {"relay": down(echo), "relay_noecho": down(no_echo)},
        "transit_p99_ms": {
            "relay": echo["transit_p99_ms_median"],
            "relay_noecho": no_echo["transit_p99_ms_median"],
            "floor": floor["transit_p99_ms_median"],
        },
    }


def kind_result(
    ttff: dict[str, Any], steps: list[dict[str, Any]], cpu: dict[str, Any]
) -> dict[str, Any]:
    return {
        "cpu_at_fixed_load": cpu,
        "ttff": ttff,
        "steps": steps,
        "most_sessions_kept_up": most_sessions(steps, "kept_up"),
        "most_sessions_real_time": most_sessions(steps, "real_time"),
    }


def step_row(relay: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    """One step side by side: the relay's figures, the floor's and their ratio."""
    return {
        "sessions": relay["sessions"],
        "cpu_per_message_ratio_vs_floor": ratio(
            relay["server_cpu_us_per_message"], floor["server_cpu_us_per_message"]
        ),
        "transit_p50_ms": {
            "relay": relay["transit_ms"]["p50"],
            "floor": floor["transit_ms"]["p50"],
        },
        "transit_p99_ms": {
            "relay": relay["transit_ms"]["p99"],
            "floor": floor["transit_ms"]["p99"],
        },
        "transit_p99_ratio_vs_floor": ratio(relay["transit_ms"]["p99"], floor["transit_ms"]["p99"]),
        "frame_lateness_p99_ms": {
            "relay": relay["frame_lateness_ms"]["p99"],
            "floor": floor["frame_lateness_ms"]["p99"],
        },
        "server_event_loop_lag_p99_ms": {
            "relay": relay["server_event_loop_lag_ms"]["p99"],
            "floor": floor["server_event_loop_lag_ms"]["p99"],
        },
        "hop_p99_ms": {"relay": relay["hop"]["p99_ms"], "floor": floor["hop"]["p99_ms"]},
        "kept_up": {"relay": relay["verdict"]["kept_up"], "floor": floor["verdict"]["kept_up"]},
        "real_time": {
            "relay": relay["verdict"]["real_time"],
            "floor": floor["verdict"]["real_time"],
        },
        "load_generator_cpu_share": {
            "relay": relay["load_generator"]["cpu_share"],
            "floor": floor["load_generator"]["cpu_share"],
        },
        "load_generator_bottleneck": {
            "relay": relay["load_generator"]["bottleneck"],
            "floor": floor["load_generator"]["bottleneck"],
        },
    }


def summary(floor: dict[str, Any], relay: dict[str, Any]) -> dict[str, Any]:
    floor_steps = {s["sessions"]: s for s in floor["steps"]}
    rows = [
        step_row(s, floor_steps[s["sessions"]])
        for s in relay["steps"]
        if s["sessions"] in floor_steps
    ]
    mine = relay["cpu_at_fixed_load"]
    theirs = floor["cpu_at_fixed_load"]
    cpu_ratio = ratio(
        mine["server_cpu_us_per_message_median"], theirs["server_cpu_us_per_message_median"]
    )
    floor_best = floor["most_sessions_real_time"]
    at_best = next((r for r in rows if r["sessions"] == floor_best), None)
    return {
        "cpu_per_message_at_fixed_load": {
            "sessions": mine["sessions"],
            "relay_us": mine["server_cpu_us_per_message_median"],
            "floor_us": theirs["server_cpu_us_per_message_median"],
            "ratio_vs_floor": cpu_ratio,
            "relay_ms_per_session_second": mine["server_cpu_ms_per_session_second_median"],
            "floor_ms_per_session_second": theirs["server_cpu_ms_per_session_second_median"],
            "target_ratio": TARGET_CPU_RATIO,
            "met": cpu_ratio is not None and cpu_ratio <= TARGET_CPU_RATIO,
        },
        "most_sessions_real_time": {"relay": relay["most_sessions_real_time"], "floor": floor_best},
        "most_sessions_kept_up": {
            "relay": relay["most_sessions_kept_up"],
            "floor": floor["most_sessions_kept_up"],
        },
        "at_floors_most_real_time_sessions": {
            "sessions": floor_best,
            "relay_real_time": bool(at_best and at_best["real_time"]["relay"]),
            "transit_p99_ratio_vs_floor": at_best["transit_p99_ratio_vs_floor"]
            if at_best
            else None,
            "target_transit_p99_ratio": TARGET_TRANSIT_P99_RATIO,
            "met": bool(
                at_best
                and at_best["real_time"]["relay"]
                and at_best["transit_p99_ratio_vs_floor"] is not None
                and at_best["transit_p99_ratio_vs_floor"] <= TARGET_TRANSIT_P99_RATIO
            ),
        },
        "per_step": rows,
    }


def compression_summary(
    plain: dict[str, Any], deflate: dict[str, Any], micro: dict[str, Any]
) -> dict[str, Any]:
    return {
        "relay_cpu_us_per_message": {
            "off": plain["server_cpu_us_per_message_median"],
            "on": deflate["server_cpu_us_per_message_median"],
            "ratio_on_vs_off": ratio(
                deflate["server_cpu_us_per_message_median"],
                plain["server_cpu_us_per_message_median"],
            ),
        },
        "relay_transit_p99_ms": {
            "off": plain["transit_p99_ms_median"],
            "on": deflate["transit_p99_ms_median"],
        },
        "negotiated_when_on": sorted(
            {e for r in deflate["runs"] for e in r["negotiated_extensions"]}
        ),
        "per_message": micro,
        "runs_on": deflate["runs"],
    }


def scale_summary(by_instances: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    best = {n: most_sessions(steps, "real_time") for n, steps in by_instances.items()}
    one = best.get(1)
    two = best.get(2)
    return {
        "most_sessions_real_time": {str(n): b for n, b in best.items()},
        "most_sessions_kept_up": {
            str(n): most_sessions(steps, "kept_up") for n, steps in by_instances.items()
        },
        "ratio_two_vs_one": ratio(float(two), float(one)) if one and two is not None else None,
        "steps": {str(n): steps for n, steps in by_instances.items()},
    }
