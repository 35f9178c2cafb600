"""Our proto file is exactly the union of the three SDKs' wire schemas: every message, field
number and field type any of them declares, and nothing none of them does."""

from __future__ import annotations

from typing import Any

from app.proto import message_pb2
from tests.sdk.descriptors import schema_of
from tests.sdk.stage import Run


def test_our_schema_is_the_union_of_the_sdks(sdk_runs: dict[str, Run]) -> None:
    union: dict[str, dict[str, Any]] = {}
    for run in sdk_runs.values():
        for message, fields in run.schema["messages"].items():
            for name, declared in fields.items():
                seen = union.setdefault(message, {}).setdefault(name, declared)
                assert seen == declared, (run.sdk, message, name)
    assert schema_of(message_pb2.DESCRIPTOR)["messages"] == union


def test_message_types_agree(sdk_runs: dict[str, Run]) -> None:
    our_types = schema_of(message_pb2.DESCRIPTOR)["enums"]["MessageType"]
    newest = sdk_runs["spatialreal"].schema["enums"]["MessageType"]
    assert our_types == newest
    for sdk in ("avatarkit", "spatius"):
        older = sdk_runs[sdk].schema["enums"]["MessageType"]
        assert older.items() <= our_types.items()
