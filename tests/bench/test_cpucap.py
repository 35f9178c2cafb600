"""bench/relaybench/cpucap.py: what a quota's statistics say, and a refusal where none can be
set."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.relaybench import cpucap


def test_throttled_reads_the_groups_statistics(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text(
        "nr_periods 1200\nnr_throttled 37\nthrottled_time 412600000\nnr_bursts 0\n"
    )
    assert cpucap.throttled(tmp_path) == {
        "periods": 1200,
        "throttled_periods": 37,
        "throttled_seconds": 0.413,
    }


def test_no_cpu_controller_is_a_clear_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpucap, "CPU_CGROUP", tmp_path / "nowhere")
    budget = cpucap.cpu_budget(1, 0.5, "test")
    with pytest.raises(cpucap.NoCpuBudget, match="not a cgroup v1 cpu controller"), budget:
        pass
