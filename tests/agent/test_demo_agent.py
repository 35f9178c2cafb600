"""The built-in demo agent over real sockets: `POST /v1/relay/sessions/{id}/say` on a running
server in front of the emulator, the page's browser client listening, espeak-ng speaking. The
agent is a producer on the server's own producer endpoint; what it says reaches the page byte for
byte as one conversation, with the avatar service's frames."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from app.agent.demo_agent import DemoAgent
from app.agent.speech import MAX_TEXT_CHARS, synthesize
from avatar_relay_client import Audio, Frame, RelayClient
from tests.producers.conftest import AUTH, CALLER_KEY, WAIT, Relay, running_relay, take_until
from tests.support.children import children_named
from tests.support.relay import upstream_frames

OTHER_KEY = "another-caller-key-0123456789abcdef"
TEXT = "Hello from the demo agent."
# Long enough to be still speaking while the test acts (upstream paced in real time).
LONG_TEXT = "This sentence is long enough to be spoken for a few seconds by the agent. " * 3


async def _spoken(text: str, rate: int) -> bytes:
    return b"".join([chunk async for chunk in synthesize(text, rate)])


async def _page(relay: Relay, **fields: Any) -> tuple[str, RelayClient]:
    response = await relay.http.post(
        f"{relay.url}/v1/relay/sessions", headers=AUTH, json={"allowProducer": True, **fields}
    )
    assert response.status_code == 201, response.text
    answer = response.json()
    page = RelayClient(relay.url, headers=AUTH, session=answer)
    await page.start()
    return answer["sessionId"], page


async def _say(relay: Relay, session_id: str, text: Any, **kwargs: Any) -> Any:
    return await relay.http.post(
        f"{relay.url}/v1/relay/sessions/{session_id}/say",
        headers=kwargs.pop("headers", AUTH),
        json={"text": text},
        **kwargs,
    )


def _agent(relay: Relay) -> DemoAgent:
    agent: DemoAgent = relay.app.state.services.agent
    return agent


def _over(event: Any) -> bool:
    return isinstance(event, Frame) and event.end


async def test_said_text_reaches_the_page_byte_for_byte_with_its_frames() -> None:
    async with running_relay(speed=50.0) as relay:
        session_id, page = await _page(relay)
        try:
            answer = await _say(relay, session_id, f"  {TEXT}  ")
            assert answer.status_code == 202, answer.text
            assert answer.json() == {"sessionId": session_id, "text": TEXT}
            events = await take_until(page, _over)
            await asyncio.wait_for(_agent(relay).wait_quiet(session_id), WAIT)
        finally:
            await page.close()
        frames = upstream_frames(relay.emulator)

    expected = await _spoken(TEXT, 16000)
    assert len(expected) > 16000  # espeak-ng said something (over half a second)
    audio = [e for e in events if isinstance(e, Audio)]
    (cid,) = {e.conversation_id for e in events}
    # every byte espeak-ng produced, once, in order, as one conversation
    assert b"".join(e.pcm for e in audio) == expected
    assert audio[0].first
    assert audio[-1].end
    assert relay.emulator.received_audio == {cid: expected}
    # and the avatar service's frames for it, exactly
    assert [e.payload for e in events if isinstance(e, Frame)] == frames[cid]


async def test_a_second_text_while_speaking_is_refused_and_taken_after() -> None:
    async with running_relay(speed=1.0) as relay:
        session_id, page = await _page(relay)
        try:
            assert (await _say(relay, session_id, LONG_TEXT)).status_code == 202
            busy = await _say(relay, session_id, TEXT)
            assert busy.status_code == 409
            assert busy.json()["error"]["code"] == "agentBusy"
            await take_until(page, _over)
            await asyncio.wait_for(_agent(relay).wait_quiet(session_id), WAIT)
            # The same producer says the next text: a second conversation of the session.
            assert (await _say(relay, session_id, TEXT)).status_code == 202
            second = await take_until(page, _over)
        finally:
            await page.close()
    assert b"".join(e.pcm for e in second if isinstance(e, Audio)) == await _spoken(TEXT, 16000)
    assert len(relay.emulator.received_audio) == 2


BAD_BODIES: list[tuple[str, Any, int, str]] = [
    ("empty text", {"text": ""}, 400, "invalidRequest"),
    ("blank text", {"text": " \n\t "}, 400, "invalidRequest"),
    ("too long", {"text": "a" * (MAX_TEXT_CHARS + 1)}, 400, "invalidRequest"),
    ("not a string", {"text": 42}, 400, "invalidRequest"),
    ("no text", {}, 400, "invalidRequest"),
    ("unknown field", {"text": "hi", "voice": "x"}, 400, "invalidRequest"),
    ("not an object", ["hi"], 400, "invalidRequest"),
]


async def test_bad_requests_get_stable_codes_and_leave_nothing_running() -> None:
    async with running_relay(
        speed=50.0, auth_api_keys=[SecretStr(CALLER_KEY), SecretStr(OTHER_KEY)]
    ) as relay:
        session_id, page = await _page(relay)
        plain_id, plain = await _page(relay, allowProducer=False)
        url = f"{relay.url}/v1/relay/sessions"
        try:
            got = []
            for name, body, _, _ in BAD_BODIES:
                r = await relay.http.post(f"{url}/{session_id}/say", headers=AUTH, json=body)
                got.append((name, r.status_code, r.json()["error"]["code"]))
            r = await relay.http.post(f"{url}/{session_id}/say", headers=AUTH, content=b"{not json")
            got.append(("not JSON", r.status_code, r.json()["error"]["code"]))
            cases = [
                ("unknown session", "rs_unknown", AUTH, 404, "sessionNotFound"),
                (
                    "another principal's",
                    session_id,
                    {"X-API-Key": OTHER_KEY},
                    404,
                    "sessionNotFound",
                ),
                ("no allowProducer", plain_id, AUTH, 409, "producerNotAllowed"),
                ("no credentials", session_id, {}, 401, "unauthorized"),
                ("id too long", "rs_" + "x" * 70, AUTH, 400, "invalidRequest"),
            ]
            for name, sid, headers, _, _ in cases:
                r = await _say(relay, sid, TEXT, headers=headers)
                got.append((name, r.status_code, r.json()["error"]["code"]))
            assert _agent(relay).sessions_attached == 0
            assert relay.emulator.received_audio == {}
        finally:
            await plain.close()
            await page.close()
    expected = [(n, s, c) for n, _, s, c in BAD_BODIES]
    expected += [("not JSON", 400, "invalidRequest")]
    expected += [(n, s, c) for n, _, _, s, c in cases]
    assert got == expected


async def _refusal(**overrides: Any) -> tuple[int, str, str]:
    """What a say answers on a server with `overrides`: status, code, message."""
    async with running_relay(**overrides) as relay:
        session_id, page = await _page(relay)
        answer = await _say(relay, session_id, TEXT)
        await page.close()
        assert _agent(relay).sessions_attached == 0
    error = answer.json()["error"]
    return answer.status_code, error["code"], error["message"]


async def test_switched_off_or_without_espeak_it_says_speech_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    status, code, message = await _refusal(demo_agent_enabled=False)
    assert (status, code) == (503, "speechUnavailable")
    assert "DEMO_AGENT_ENABLED" in message

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no espeak-ng on the PATH
    status, code, message = await _refusal()
    assert (status, code) == (503, "speechUnavailable")
    assert "apt-get install espeak-ng" in message


async def test_the_session_ending_mid_speech_cancels_the_agent() -> None:
    async with running_relay(speed=1.0) as relay:
        agent = _agent(relay)
        session_id, page = await _page(relay)
        assert (await _say(relay, session_id, LONG_TEXT)).status_code == 202
        await take_until(page, lambda e: isinstance(e, Frame))  # speaking now
        assert agent.speaking(session_id)
        await page.close()  # BYE: the session ends
        try:
            await asyncio.wait_for(agent.idle(), WAIT)
        except TimeoutError:
            live = relay.app.state.services.sessions.get(session_id) is not None
            raise AssertionError(f"the agent is still attached (session live: {live})") from None
        assert agent.sessions_attached == 0
        assert not agent.speaking(session_id)
        assert children_named("espeak") == {}
        after = await _say(relay, session_id, TEXT)
        assert after.status_code == 409
        assert after.json()["error"]["code"] == "sessionClosed"


async def test_server_shutdown_cancels_the_agent() -> None:
    async with running_relay(speed=1.0) as relay:
        agent = _agent(relay)
        session_id, page = await _page(relay)
        assert (await _say(relay, session_id, LONG_TEXT)).status_code == 202
        await take_until(page, lambda e: isinstance(e, Audio))
        assert agent.sessions_attached == 1
    await page.close(bye=False)
    assert agent.sessions_attached == 0
    assert children_named("espeak") == {}
