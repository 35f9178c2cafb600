"""A producer that mints its own tickets (`Producer(tickets=...)`), as the server's demo agent
does: it holds no API credential, yet connects and, after a cut, reconnects and resumes with the
tickets its source gives it, losing and repeating nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from avatar_relay_client import Audio, Frame, RelayClient
from avatar_relay_client.producer import ConversationCompleted, Producer
from tests.producers.conftest import AUTH, CHUNKS, PCM, WAIT, running_relay, take_until


async def test_a_producer_without_credentials_reconnects_with_its_own_tickets() -> None:
    async with running_relay() as relay:
        session = await relay.session()
        minted: list[str] = []

        async def tickets() -> Mapping[str, Any]:
            # What the app server would do in process; here, the REST route with the owner's key.
            answer = await relay.http.post(
                f"{relay.url}/v1/relay/sessions/{session.session_id}/producer-tickets",
                headers=AUTH,
            )
            assert answer.status_code == 201, answer.text
            body: dict[str, Any] = answer.json()
            minted.append(body["ticket"])
            return body

        page = RelayClient(relay.url, headers=AUTH, session=session.answer)
        await page.start()
        # No headers and no first ticket: every ticket comes from the source.
        producer = Producer(relay.url, session.session_id, tickets=tickets)
        try:
            await producer.start()
            assert len(minted) == 1
            async with producer.utterance() as utterance:
                half = len(CHUNKS) // 2
                for chunk in CHUNKS[:half]:
                    await utterance.send(chunk)
                assert producer.drop_connection()
                for chunk in CHUNKS[half:]:
                    await utterance.send(chunk)
            outcome = await asyncio.wait_for(utterance.outcome(), WAIT)
            events = await take_until(page, lambda e: isinstance(e, Frame) and e.end)
        finally:
            await producer.close(bye=False)
            await page.close()

    assert len(minted) == 2  # the first connection's, and the reconnect's
    assert producer.stats.reconnects == 1
    assert isinstance(outcome, ConversationCompleted)
    assert b"".join(e.pcm for e in events if isinstance(e, Audio)) == PCM
    assert relay.emulator.received_audio == {outcome.conversation_id: PCM}
