"""The committed generated protobuf code must match proto/ (regenerate: scripts/gen-proto)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from app.proto import message_pb2

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("message_pb2.py", "message_pb2.pyi")


def test_committed_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "gen-proto"), str(tmp_path)], check=True, cwd=ROOT)
    for name in GENERATED:
        fresh = (tmp_path / "spatialreal" / name).read_text()
        committed = (ROOT / "app" / "proto" / "spatialreal" / name).read_text()
        assert committed == fresh, f"app/proto/spatialreal/{name} is stale: run scripts/gen-proto"


def numbers(message: type[Any]) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}


def test_field_numbers_are_the_wire_contract() -> None:
    assert numbers(message_pb2.Message) == {
        "type": 1,
        "client_configure_session": 2,
        "server_confirm_session": 3,
        "client_audio_input": 4,
        "server_error": 5,
        "server_response_animation": 6,
        "client_interrupt": 8,
        "client_pause": 9,
        "client_resume": 10,
        "server_playback_state": 11,
    }
    assert message_pb2.Message.DESCRIPTOR.file.package == "message"
    assert message_pb2.MESSAGE_CLIENT_INTERRUPT == 7
    assert (
        message_pb2.MESSAGE_CLIENT_PAUSE,
        message_pb2.MESSAGE_CLIENT_RESUME,
        message_pb2.MESSAGE_SERVER_PLAYBACK_STATE,
    ) == (8, 9, 10)
    assert numbers(message_pb2.ClientAudioInput) == {
        "req_id": 1,
        "end": 2,
        "audio": 3,
        "trace_context": 4,
    }
    assert numbers(message_pb2.ServerResponseAnimation) == {
        "connection_id": 1,
        "req_id": 2,
        "end": 3,
        "animation": 4,
        "avatar_id": 5,
    }
    assert numbers(message_pb2.ServerConfirmSession) == {"connection_id": 1, "capabilities": 2}
    assert numbers(message_pb2.ClientConfigureSession)["extra_params"] == 8
    assert numbers(message_pb2.ServerPlaybackState) == {
        "connection_id": 1,
        "req_id": 2,
        "state": 3,
        "played_ms": 4,
        "reason": 5,
    }
    states = message_pb2.ServerPlaybackState
    assert (states.PLAYING, states.PAUSED, states.ENDED, states.INTERRUPTED) == (1, 2, 3, 4)
