from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.spatialreal.request_ids import NANOID_ALPHABET, is_request_id, new_request_id


def test_format_is_utc_timestamp_then_twelve_char_nanoid() -> None:
    now = datetime(2024, 3, 9, 7, 5, 4, 999_999, tzinfo=UTC)
    req_id = new_request_id(now)
    stamp, suffix = req_id.split("_", 1)
    assert stamp == "20240309070504"
    assert len(suffix) == 12
    assert set(suffix) <= set(NANOID_ALPHABET)
    assert is_request_id(req_id)


def test_other_timezones_are_converted_to_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    now = datetime(2024, 1, 1, 8, 30, 0, tzinfo=tokyo)
    assert new_request_id(now).startswith("20231231233000_")


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        new_request_id(datetime(2024, 1, 1))


def test_ids_are_unique_and_use_the_whole_alphabet() -> None:
    now = datetime.now(UTC)
    ids = {new_request_id(now) for _ in range(2000)}
    assert len(ids) == 2000
    seen = {char for req_id in ids for char in req_id[15:]}
    assert seen == set(NANOID_ALPHABET)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "20240101000000_abc",
        "2024010100000_ABCDEFGHIJKL",
        "20240101000000-ABCDEFGHIJKL",
        "20240101000000_ABCDEFGHIJK!",
        "20240101000000_ABCDEFGHIJKLM",
    ],
)
def test_malformed_ids_are_recognised(value: str) -> None:
    assert not is_request_id(value)
