"""The profile summaries (bench/relaybench/spy.py): shares per function from py-spy's collapsed
stacks, as bench/results/profile-*.json report them."""

from __future__ import annotations

from pathlib import Path

from bench.relaybench.spy import summarise

RAW = (
    "main (bench/relay.py:267);_stream (app/emulator/ingress.py:471);"
    "frame_payload (app/emulator/wire.py:90) 6\n"
    "main (bench/relay.py:267);_stream (app/emulator/ingress.py:480) 3\n"
    "main (bench/relay.py:268);write (/usr/lib/python3.11/asyncio/selector_events.py:1) 1\n"
    "not a stack line\n"
)


def test_self_and_inclusive_shares_per_function(tmp_path: Path) -> None:
    raw = tmp_path / "emulator.raw.txt"
    raw.write_text(RAW)
    summary = summarise(raw)
    assert summary["samples"] == 10
    own = dict(summary["self"])
    inclusive = dict(summary["inclusive"])
    # Lines of one function add up; paths are cut to what names the file.
    assert own["frame_payload (app/emulator/wire.py)"] == 0.6
    assert own["_stream (app/emulator/ingress.py)"] == 0.3
    assert own["write (asyncio/selector_events.py)"] == 0.1
    assert inclusive["_stream (app/emulator/ingress.py)"] == 0.9
    assert inclusive["main (bench/relay.py)"] == 1.0
    assert summary["self"][0][0] == "frame_payload (app/emulator/wire.py)"


def test_an_empty_recording_has_no_shares(tmp_path: Path) -> None:
    raw = tmp_path / "empty.raw.txt"
    raw.write_text("")
    assert summarise(raw) == {"samples": 0, "self": [], "inclusive": []}
