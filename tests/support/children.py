"""This test process's own child processes, read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path


def children_named(prefix: str) -> dict[int, str]:
    """pid -> state letter (R, S, Z, ...) of each child of this process whose name starts with
    `prefix`; a zombie ('Z') has exited and was not reaped yet."""
    found: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text.split("(", 1)[1].rsplit(")", 1)[0]
        state, ppid = text.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and name.startswith(prefix):
            found[int(stat.parent.name)] = state
    return found


def bytes_written(pid: int) -> int:
    """How many bytes the process has written so far (to pipes and files), or 0 once gone."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def blocked_writing_to_a_pipe(pid: int) -> bool:
    """Whether the process sleeps in the kernel waiting for room in a pipe it writes to."""
    try:
        # "pipe_write", or "anon_pipe_write" on newer kernels.
        return Path(f"/proc/{pid}/wchan").read_text().strip().endswith("pipe_write")
    except OSError:
        return False
