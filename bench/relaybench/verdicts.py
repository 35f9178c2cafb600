"""Whether a step kept real time, and whether the load generator was the bottleneck.

Lateness of frame k: its arrival minus the moment audio chunk k+1 was due to be sent (frame k can
exist once that chunk is out), so it counts whatever delayed the frame: the server, the emulator,
the sockets, the load generator's own loop.

- loose ("kept up"): every session finished without an error and 99% of all frames arrived
  within TOLERANCE of their audio (a hiccup is forgiven);
- strict ("real time"): every frame of every session within TOLERANCE, and no session's lateness
  grew by more than GROWTH_LIMIT from its first quarter to its last (a growing lag is falling
  behind, however short the run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from bench.relaybench.stats import growth, percentile

TOLERANCE: Final = 0.200
GROWTH_LIMIT: Final = 0.050
LOOSE_QUANTILE: Final = 0.99
# The load generator is one process: near a whole core, or a loop running late, and the figures
# measure it rather than the server.
LOADGEN_CPU_LIMIT: Final = 0.85
LOADGEN_LAG_LIMIT: Final = 0.050


@dataclass
class SessionRun:
    """What one simulated browser saw: its frames' lateness in arrival order."""

    finished: bool
    error: str = ""
    lateness: list[float] = field(default_factory=list)

    @property
    def strict(self) -> bool:
        return (
            self.finished
            and not self.error
            and bool(self.lateness)
            and max(self.lateness) <= TOLERANCE
            and growth(self.lateness) <= GROWTH_LIMIT
        )


@dataclass(frozen=True)
class Verdict:
    kept_up: bool  # loose
    real_time: bool  # strict
    sessions: int
    sessions_real_time: int
    reasons: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "kept_up": self.kept_up,
            "real_time": self.real_time,
            "sessions": self.sessions,
            "sessions_real_time": self.sessions_real_time,
            "reasons": list(self.reasons),
        }


def judge(runs: Sequence[SessionRun]) -> Verdict:
    reasons: list[str] = []
    unfinished = sum(1 for r in runs if not r.finished or r.error)
    if unfinished:
        reasons.append(f"{unfinished} sessions did not finish")
    lateness = [x for r in runs for x in r.lateness]
    loose_late = percentile(lateness, LOOSE_QUANTILE)
    if loose_late is None or loose_late > TOLERANCE:
        reasons.append(f"p{LOOSE_QUANTILE * 100:.0f} lateness over {TOLERANCE * 1000:.0f} ms")
    late = sum(1 for r in runs if r.lateness and max(r.lateness) > TOLERANCE)
    if late:
        reasons.append(f"{late} sessions had a frame over {TOLERANCE * 1000:.0f} ms late")
    growing = sum(1 for r in runs if growth(r.lateness) > GROWTH_LIMIT)
    if growing:
        reasons.append(f"{growing} sessions' lag grew over {GROWTH_LIMIT * 1000:.0f} ms")
    kept_up = bool(runs) and not unfinished and loose_late is not None and loose_late <= TOLERANCE
    strict_count = sum(1 for r in runs if r.strict)
    return Verdict(
        kept_up=kept_up,
        real_time=bool(runs) and strict_count == len(runs),
        sessions=len(runs),
        sessions_real_time=strict_count,
        reasons=tuple(reasons),
    )


def loadgen_bottleneck(cpu_share: float, loop_lag_p99: float | None) -> str | None:
    """Why the load generator, not the server, may have set the pace; None when it did not."""
    if cpu_share >= LOADGEN_CPU_LIMIT:
        return f"load generator used {cpu_share:.2f} of a core (limit {LOADGEN_CPU_LIMIT})"
    if loop_lag_p99 is not None and loop_lag_p99 >= LOADGEN_LAG_LIMIT:
        return (
            f"load generator's event loop ran {loop_lag_p99 * 1000:.0f} ms late (p99;"
            f" limit {LOADGEN_LAG_LIMIT * 1000:.0f} ms)"
        )
    return None


def most_sessions(steps: Sequence[dict[str, Any]], key: str) -> int:
    """The largest step whose verdict `key` ("kept_up" or "real_time") held."""
    return max((s["sessions"] for s in steps if s["verdict"][key]), default=0)
