"""The committed generated protobuf code must match proto/ (regenerate: scripts/gen-proto)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from app.proto import message_pb2

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("message_pb2.py", "message_pb2.pyi")


def test_committed_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "gen-proto"), str(tmp_path)], check=True, cwd=ROOT)
    for name in GENERATED:
        fresh = (tmp_path / "spatialreal" / name).read_text()
        committed = (ROOT / "app" / "proto" / "spatialreal" / name).read_text()
        assert committed == fresh, f"app/proto/spatialreal/{name} is stale: run scripts/gen-proto"


def test_field_numbers_are_the_wire_contract() -> None:
    fields = {f.name: f.number for f in message_pb2.Message.DESCRIPTOR.fields}
    assert fields == {
        "type": 1,
        "client_configure_session": 2,
        "server_confirm_session": 3,
        "client_audio_input": 4,
        "server_error": 5,
        "server_response_animation": 6,
        "client_interrupt": 8,
    }
    assert message_pb2.Message.DESCRIPTOR.file.package == "message"
    assert message_pb2.MESSAGE_CLIENT_INTERRUPT == 7
    audio = {f.name: f.number for f in message_pb2.ClientAudioInput.DESCRIPTOR.fields}
    assert audio == {"req_id": 1, "end": 2, "audio": 3}
    anim = {f.name: f.number for f in message_pb2.ServerResponseAnimation.DESCRIPTOR.fields}
    assert anim == {"connection_id": 1, "req_id": 2, "end": 3}
