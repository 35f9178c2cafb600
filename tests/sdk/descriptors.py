"""A wire schema as plain data, for comparing ours with each SDK's.

Imports nothing from this project: the SDK probe (which runs in an SDK's own venv) uses it too.
"""

from __future__ import annotations

from typing import Any


def schema_of(file: Any) -> dict[str, Any]:
    """`{"messages": {name: {field: [number, type]}}, "enums": {name: {value: number}}}` of a
    protobuf FileDescriptor (map entries left out: a map is one field of its message)."""
    messages: dict[str, dict[str, list[int]]] = {}
    pending = list(file.message_types_by_name.values())
    while pending:
        message = pending.pop()
        if message.GetOptions().map_entry:
            continue
        messages[message.name] = {f.name: [f.number, f.type] for f in message.fields}
        pending.extend(message.nested_types)
    enums = {
        enum.name: {value.name: value.number for value in enum.values}
        for enum in file.enum_types_by_name.values()
    }
    return {"messages": messages, "enums": enums}
