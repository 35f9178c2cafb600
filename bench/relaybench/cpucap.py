"""A CPU budget for one process: Linux's CFS quota (the cgroup v1 `cpu` controller), as a
container's CPU limit sets it (`docker run --cpus`, a Kubernetes CPU limit).

The instances step uses it to give each relay instance the same slice of a core, so that on a
machine too small to give each instance a core of its own (this one has 2, shared with the
emulator, the load generator, nginx and Redis), the step still shows whether sessions grow with
instances: with a budget of B cores per instance, one instance is bound by its budget well before
the machine is full, and a second instance brings a second budget. A short period (10 ms) keeps
the wait of a throttled process short (at most period × (1 − B)), so the figures show the budget,
not the throttling's granularity.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

CPU_CGROUP: Final = Path("/sys/fs/cgroup/cpu")
PERIOD_US: Final = 10_000


class NoCpuBudget(RuntimeError):
    """This machine does not let us set a CPU quota (no writable cgroup v1 `cpu` controller)."""


def throttled(group: Path) -> dict[str, float]:
    """How often the group's quota stopped it, and for how long in all (cpu.stat)."""
    stat = dict(
        line.split() for line in (group / "cpu.stat").read_text().splitlines() if line.strip()
    )
    return {
        "periods": int(stat.get("nr_periods", 0)),
        "throttled_periods": int(stat.get("nr_throttled", 0)),
        "throttled_seconds": round(int(stat.get("throttled_time", 0)) / 1e9, 3),
    }


@contextlib.contextmanager
def cpu_budget(pid: int, cores: float, name: str) -> Iterator[Path]:
    """Run process `pid` (all its threads, and what it starts later) on `cores` of CPU time per
    second until the block ends; yields its cgroup (for `throttled`)."""
    if not (CPU_CGROUP / "cgroup.procs").exists():
        raise NoCpuBudget(f"{CPU_CGROUP} is not a cgroup v1 cpu controller")
    group = CPU_CGROUP / f"avatar-relay-bench-{name}-{pid}"
    try:
        group.mkdir()
    except OSError as exc:
        raise NoCpuBudget(f"cannot create {group}: {exc}") from None
    try:
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(max(1000, round(cores * PERIOD_US))))
        (group / "cgroup.procs").write_text(str(pid))
        yield group
    finally:
        with contextlib.suppress(OSError):  # gone already: nothing to move back
            for task in (group / "cgroup.procs").read_text().split():
                (CPU_CGROUP / "cgroup.procs").write_text(task)
        for _ in range(50):  # the kernel frees an emptied group asynchronously
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.02)
