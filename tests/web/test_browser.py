"""The demo page in headless Chromium against the real server in emulator mode.

The page (served by the app) uses avatar-relay.js and its built-in recording controller; the test
compares what that controller was given with what the emulator recorded: the audio the upstream
received, and every animation message it sent, byte for byte, in order, exactly once, mapped to
the conversation id that `yieldAudioData()` returned. The emulator runs in this process (its record
is inspected directly); Chromium is driven over the DevTools protocol (tests/web/cdp.py).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from app.agent.speech import synthesize
from app.api.app import create_app
from app.api.web import CLIENT_DIR
from app.emulator import Emulator
from app.proto import message_pb2
from tests.support.relay import relay_test_settings, upstream_frames
from tests.support.servers import running_app
from tests.web.cdp import launch
from tests.web.demo_page import (
    ARTIFACTS,
    CALLER_KEY,
    CHUNK_BYTES,
    SAMPLE,
    WAIT,
    WAIT_FOR_JS,
    Demo,
    check_delivery,
    rms,
    speech_wav,
)

pytestmark = pytest.mark.browser


async def test_page_plays_the_sample_and_the_controller_gets_every_frame_byte_exact(
    demo: Demo,
) -> None:
    await demo.js("window.avatarDemo.playSample()")
    await demo.wait_for("(c) => c.conversations().some((x) => x.status !== 'active')")
    await demo.page.screenshot(str(ARTIFACTS / "web-demo.png"))

    conversations = await demo.conversations()
    assert [c["status"] for c in conversations] == ["completed"]
    delivered = check_delivery(await demo.recording(), conversations, demo.emulator)
    ((audio, frames),) = delivered.values()
    # The whole sample went up and came back, and its animation ends with the final frame.
    assert audio == SAMPLE
    assert len(frames) == -(-len(SAMPLE) // 1280)  # one 40 ms frame per 1280 bytes at 16 kHz
    last = message_pb2.Message()
    last.ParseFromString(frames[-1])
    assert last.server_response_animation.end

    stats = await demo.js("window.avatarDemo.client.stats()")
    assert stats["audioChunksSent"] == -(-len(SAMPLE) // CHUNK_BYTES)
    assert stats["framesHeld"] == 0
    assert stats["outboxMessages"] == 0 or stats["state"] == "open"
    # The page shows the conversation it drew.
    row = await demo.js("document.querySelector('#conversations tbody tr').textContent")
    assert conversations[0]["conversationId"] in row
    assert "completed" in row


async def test_the_say_box_speaks_through_the_demo_agent_and_the_page_shows_it(
    demo: Demo,
) -> None:
    text = "Hello! I am the demo agent, speaking from the server."
    # What a person does: type into the box, press Say; then press it again at once.
    await demo.js(
        f"document.getElementById('say-text').value = {json.dumps(text)};"
        "document.getElementById('say').click(), true"
    )
    await demo.wait_for("(c) => c.conversations().length > 0")
    # The refusal and what the page shows for it, read together (before the speech ends).
    refused, note = await demo.js(
        f"window.avatarDemo.say({json.dumps(text)}).then(() => [null, null],"
        " (err) => [err.code, document.getElementById('say-error').textContent])"
    )
    assert refused == "agentBusy"
    assert "still speaking" in note
    await demo.wait_for("(c) => c.conversations().some((x) => x.status !== 'active')")
    await demo.page.screenshot(str(ARTIFACTS / "web-demo-say.png"))
    assert await demo.js("document.getElementById('say-error').hidden")
    conversations = await demo.conversations()
    assert [c["status"] for c in conversations] == ["completed"]
    ((audio, frames),) = check_delivery(
        await demo.recording(), conversations, demo.emulator
    ).values()
    # What espeak-ng says for the text, every byte once and in order, then its animation.
    assert audio == b"".join([chunk async for chunk in synthesize(text, 16000)])
    assert len(frames) == -(-len(audio) // 1280)
    row = await demo.js("document.querySelector('#conversations tbody tr').textContent")
    assert conversations[0]["conversationId"] in row
    assert "completed" in row
    # The page never kept the producer's credential.
    assert await demo.js("window.avatarDemo.client.session.producer === undefined")


@pytest.mark.parametrize("demo", ["?audioEcho=false"], indirect=True)
async def test_without_the_echo_the_page_yields_its_own_audio_before_the_frames(
    demo: Demo,
) -> None:
    await demo.js("window.avatarDemo.playSample()")
    await demo.wait_for("(c) => c.conversations().some((x) => x.status !== 'active')")
    assert await demo.js("window.avatarDemo.client.audioEcho") is False
    conversations = await demo.conversations()
    assert [c["status"] for c in conversations] == ["completed"]
    # The controller got the same calls as with the echo: the audio first, then every frame.
    ((audio, frames),) = check_delivery(
        await demo.recording(), conversations, demo.emulator
    ).values()
    assert audio == SAMPLE
    assert len(frames) == -(-len(SAMPLE) // 1280)
    # Off the socket: one marker and the frames, no audio.
    stats = await demo.js("window.avatarDemo.client.stats()")
    assert stats["lastServerSeq"] == len(frames) + 1
    assert stats["audioChunksReceived"] == stats["audioChunksSent"]


async def test_a_dropped_connection_mid_conversation_still_delivers_exactly_once(
    demo: Demo,
) -> None:
    playing = asyncio.create_task(demo.js("window.avatarDemo.playSample({seconds: 4})"))
    # Mid-conversation (audio still going up, frames coming back), press the button. The click
    # runs in the same task as the check, so nothing arrives in between.
    at_drop = await demo.js(
        "window.__waitFor((c) => c.stats().framesReceived >= 25).then(() => {"
        "  const c = window.avatarDemo.client;"
        "  const before = {log: window.avatarRecording.length, stats: c.stats()};"
        "  document.getElementById('drop').click();"
        "  return {...before, state: c.state};"
        "})"
    )
    # The link first goes deaf (server messages lost), then drops.
    assert at_drop["state"] == "open"
    await demo.wait_for("(c) => c.state === 'reconnecting' || c.stats().drops === 1")
    await playing
    await demo.wait_for("(c) => c.conversations().some((x) => x.status !== 'active')")
    # A second utterance on the resumed connection.
    await demo.js("window.avatarDemo.playSample({seconds: 1.5})")
    await demo.wait_for("(c) => c.conversations().filter((x) => x.status !== 'active').length == 2")
    await demo.page.screenshot(str(ARTIFACTS / "web-demo-resume.png"))

    conversations = await demo.conversations()
    assert [c["status"] for c in conversations] == ["completed", "completed"]
    delivered = check_delivery(await demo.recording(), conversations, demo.emulator)
    audios = [audio for audio, _ in delivered.values()]
    # Upstream got each utterance exactly once despite the resend after the resume.
    assert audios == [SAMPLE[: 4 * 32000], SAMPLE[:48000]]

    stats = await demo.js("window.avatarDemo.client.stats()")
    assert stats["drops"] == 1
    assert stats["connects"] == 2
    assert stats["state"] == "open"
    # The page kept talking through the (one second) outage: that audio went after the resume.
    assert stats["resentMessages"] > 0
    marks = await demo.js("window.avatarDemo.timeline.marks.map((m) => m.kind)")
    assert marks == ["drop", "resumed"]
    # The drop also lost what the server sent before it noticed: the server replayed it, the page
    # counts it, and (checked above) nothing reached the controller twice or not at all.
    events = await demo.js(
        "Array.from(document.querySelectorAll('#events li')).map((l) => l.textContent)"
    )
    assert stats["replayedOnResume"] > 0, (stats, events)
    shown = await demo.js("document.querySelector('[data-stat=replayedOnResume]').textContent")
    assert int(shown) == stats["replayedOnResume"]
    # The burst of late frames after the resume does not flatten the latency lane: a typical
    # frame still sits well up the (fixed, logarithmic) axis.
    typical = await demo.js(
        "(() => { const l = window.avatarDemo.timeline.frames.map((f) => f.latency)"
        ".filter((x) => x != null).sort((a, b) => a - b); return l[Math.floor(l.length / 2)]; })()"
    )
    worst = await demo.js("Math.max(...window.avatarDemo.timeline.frames.map((f) => f.latency))")
    assert worst > 4 * typical  # there was a burst
    assert await demo.js(f"window.avatarDemo.latencyFraction({typical})") >= 0.15
    # The drop really cut the first conversation: its frames kept coming after the resume.
    first_id = conversations[0]["controllerConversationId"]
    log = await demo.recording()
    assert at_drop["stats"]["conversationsStarted"] == 1
    assert any(e.get("conversationId") == first_id for e in log[at_drop["log"] :])


async def test_interrupt_stops_the_avatar_and_the_next_audio_is_a_new_conversation(
    demo: Demo,
) -> None:
    playing = asyncio.create_task(demo.js("window.avatarDemo.playSample({seconds: 6})"))
    await demo.wait_for("(c) => c.stats().framesReceived >= 10")
    await demo.js("document.getElementById('interrupt').click(), true")
    await playing
    await demo.wait_for("(c) => c.stats().interruptsReceived === 1")
    await demo.js("window.avatarDemo.playSample({seconds: 1})")
    await demo.wait_for("(c) => c.conversations().some((x) => x.status === 'completed')")

    conversations = await demo.conversations()
    assert [c["status"] for c in conversations] == ["interrupted", "completed"]
    log = await demo.recording()
    calls = [entry["call"] for entry in log]
    assert calls.count("interrupt") == 1
    cut = calls.index("interrupt")
    first_id, second_id = (c["controllerConversationId"] for c in conversations)
    assert first_id != second_id
    # Nothing of the interrupted conversation reaches the controller after interrupt().
    assert all(
        entry.get("returned") != first_id and entry.get("conversationId") != first_id
        for entry in log[cut + 1 :]
    )
    second = [e for e in log[cut + 1 :] if e["call"] == "yieldFramesData"]
    request_id = conversations[1]["conversationId"]
    sent = [bytes.fromhex(p) for e in second for p in e["payloads"]]
    assert sent == upstream_frames(demo.emulator)[request_id]


async def test_an_upstream_failure_switches_the_conversation_to_audio_only(demo: Demo) -> None:
    # The avatar service fails the request after 10 frames (SERVER_ERROR for it).
    demo.emulator.faults.error_after_frames = (10, 500, "injected failure")
    await demo.js("window.avatarDemo.playSample({seconds: 2})")
    await demo.wait_for("(c) => c.conversations().some((x) => x.status === 'aborted')")
    await demo.js("window.avatarDemo.playSample({seconds: 1})")
    await demo.wait_for("(c) => c.conversations().some((x) => x.status === 'completed')")

    conversations = await demo.conversations()
    assert [c["status"] for c in conversations] == ["aborted", "completed"]
    assert conversations[0]["code"]
    log = await demo.recording()
    failed_id, next_id = (c["controllerConversationId"] for c in conversations)
    assert failed_id != next_id
    failed_frames = [e for e in log if e.get("conversationId") == failed_id]
    # Its frames, then the audio-only switch (empty frame data), as the SDK documents.
    assert failed_frames[-1]["payloads"] == []
    assert failed_frames[-1]["accepted"]
    payloads = [bytes.fromhex(p) for e in failed_frames for p in e["payloads"]]
    assert payloads == upstream_frames(demo.emulator)[conversations[0]["conversationId"]]
    # Its round was closed (END) before the next conversation's audio, so that one is new.
    first_next = next(i for i, e in enumerate(log) if e.get("returned") == next_id)
    closing = [e for e in log[:first_next] if e["call"] == "yieldAudioData"][-1]
    assert closing["returned"] == failed_id
    assert closing["end"]
    frames = [e for e in log if e.get("conversationId") == next_id]
    sent = [bytes.fromhex(p) for e in frames for p in e["payloads"]]
    assert sent == upstream_frames(demo.emulator)[conversations[1]["conversationId"]]


async def test_the_page_before_and_around_connecting() -> None:
    async with (
        Emulator() as emulator,
        running_app(create_app(relay_test_settings(emulator, [CALLER_KEY]))) as url,
        launch() as browser,
    ):
        page = await browser.new_page()
        await page.goto(url + "/")
        async with asyncio.timeout(WAIT):
            await page.evaluate(
                "new Promise((r) => { const c = () => (document.getElementById('upstream')"
                ".textContent === 'emulator mode' ? r(true) : setTimeout(c, 20)); c(); })"
            )
            text = await page.evaluate("document.body.innerText")
            rtt = await page.evaluate("document.querySelector('[data-stat=rttMs]').textContent")
            region = await page.evaluate("document.getElementById('region').value")
            legend = await page.evaluate("document.querySelector('.legend').textContent")
            # A microphone the browser refuses: the reason shows by the button, not only in the
            # event log below the fold.
            await page.evaluate(
                f"document.getElementById('api-key').value = {json.dumps(CALLER_KEY)};"
                "navigator.mediaDevices.getUserMedia = () => Promise.reject("
                "new DOMException('Permission denied', 'NotAllowedError'));"
                "document.getElementById('mic').click(), true"
            )
            note = await page.evaluate(
                "new Promise((r) => { const n = document.getElementById('mic-error');"
                " const c = () => (n.hidden ? setTimeout(c, 20) : r({text: n.textContent,"
                " top: n.getBoundingClientRect().top, height: innerHeight,"
                " near: n.getBoundingClientRect().top - document.getElementById('mic')"
                ".getBoundingClientRect().bottom})); c(); })"
            )
        await page.screenshot(str(ARTIFACTS / "web-demo-mic-blocked.png"))
        assert page.exceptions == []
        # Not a single failed request: the favicon is there too.
        assert [(c, u) for c, u in page.responses if c >= 400] == []
        assert any(u.endswith("/favicon.svg") for _, u in page.responses)
    assert "NaN" not in text
    assert rtt == "–"
    # The server's region (its /healthz), not a default of the page's own.
    assert region == relay_test_settings(emulator, [CALLER_KEY]).primary_region.value
    assert "not the relay hop" in legend
    assert note["text"].startswith("Microphone blocked")
    assert 0 <= note["near"] < 200
    assert note["top"] < note["height"]  # on screen without scrolling


async def test_microphone_streams_resampled_audio_through_the_worklet(demo: Demo) -> None:
    # Chromium's fake capture device, playing the speech sample, stands in for a microphone.
    await demo.js("window.avatarDemo.startMic().then(() => true)")
    await demo.wait_for("(c) => c.stats().framesReceived >= 50")
    await demo.js("window.avatarDemo.stopMic(), true")
    await demo.wait_for("(c) => c.conversations().some((x) => x.status === 'completed')")
    conversations = await demo.conversations()
    delivered = check_delivery(await demo.recording(), conversations, demo.emulator)
    ((audio, _frames),) = delivered.values()
    # s16le mono at the session's 16 kHz: speech, not silence or noise from a wrong format.
    assert len(audio) % 2 == 0
    assert len(audio) >= 50 * 1280
    # Two seconds of speech at about the sample's level (a wrong byte order or format would be
    # noise far louder; a broken capture, silence).
    assert 0.2 < rms(audio) / rms(SAMPLE) < 5


async def test_the_client_library_is_served_with_its_types() -> None:
    async with (
        Emulator() as emulator,
        running_app(create_app(relay_test_settings(emulator, [CALLER_KEY]))) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        expected = {
            "/": "text/html",
            "/client/avatar-relay.js": "text/javascript",
            "/client/avatar-relay.d.ts": "application/typescript",
            "/client/pcm-capture-worklet.js": "text/javascript",
            **{f"/client/{m.name}": "text/javascript" for m in CLIENT_DIR.glob("*.js")},
            "/static/demo.js": "text/javascript",
            "/static/demo-avatar.js": "text/javascript",
            "/static/demo-panels.js": "text/javascript",
            "/static/demo-timeline.js": "text/javascript",
            "/static/demo.css": "text/css",
            "/static/recording-controller.js": "text/javascript",
            "/static/web-sdk-stand-in.js": "text/javascript",
            "/static/favicon.svg": "image/svg+xml",
            "/favicon.ico": "image/svg+xml",
            "/static/sample_16000.pcm": "application/octet-stream",
        }
        for path, media_type in expected.items():
            response = await http.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith(media_type), path
            assert response.headers["x-content-type-options"] == "nosniff"
        assert (await http.get("/static/sample_16000.pcm")).content == SAMPLE
        for missing in ("/client/nope.js", "/static/index.html", "/static/..%2Fapi%2Fweb.py"):
            response = await http.get(missing)
            assert response.status_code == 404, missing
            assert response.json()["error"]["code"] == "notFound"


README = Path(__file__).resolve().parents[2] / "README.md"
README_RELAY = "http://127.0.0.1:8080"


def readme_page(relay_url: str) -> str:
    """The README's page, exactly as written there, with only the relay's address changed."""
    text = README.read_text()
    marker = "runs this page exactly as written here"
    block = text[text.index(marker) :]
    html = block[block.index("```html\n") + len("```html\n") : block.index("\n```\n")]
    assert README_RELAY in html
    return html.replace(README_RELAY, relay_url)


async def test_the_readme_page_runs_as_pasted_from_another_origin(tmp_path: Path) -> None:
    # Served by another origin, talking to a relay in its default auth mode (none), driving the
    # web SDK's session shape (the offline stand-in the import map names) from the microphone.
    page_app = FastAPI()
    html: dict[str, str] = {}

    @page_app.get("/")
    async def my_page() -> HTMLResponse:
        return HTMLResponse(html["page"])

    async with (
        Emulator(speed=2.0, record=True) as emulator,
        running_app(page_app) as page_url,
    ):
        origin = page_url.replace("127.0.0.1", "localhost")
        settings = relay_test_settings(
            emulator, [], auth_mode="none", auth_api_keys=[], cors_origins=[origin]
        )
        async with (
            running_app(create_app(settings)) as relay_url,
            launch(f"--use-file-for-fake-audio-capture={speech_wav(tmp_path)}") as browser,
        ):
            html["page"] = readme_page(relay_url)
            page = await browser.new_page()
            await page.goto(origin + "/")
            async with asyncio.timeout(WAIT):
                await page.evaluate(
                    """new Promise((resolve) => {
                      const check = () => (window.app ? resolve(true) : setTimeout(check, 20));
                      check();
                    })"""
                )
                status = await page.evaluate("document.getElementById('status').textContent")
                assert status == "ready: press Talk"
                # The one call brought the web SDK its credential: a real token of this app.
                token = await page.evaluate("window.app.session.sessionToken")
                assert emulator.tokens.check(token, "emulator-app").value == "ok"
                await page.evaluate("document.getElementById('talk').click(), true")
                await page.evaluate(WAIT_FOR_JS.replace("avatarDemo.client", "app.relay"))
                await page.evaluate("window.__waitFor((c) => c.stats().framesReceived >= 25)")
                await page.evaluate("document.getElementById('done').click(), true")
                await page.evaluate(
                    "window.__waitFor((c) => c.conversations()[0]?.status === 'completed')"
                )
                calls = await page.evaluate("window.app.avatar.calls")
                conversations = await page.evaluate("window.app.relay.conversations()")
                status = await page.evaluate("document.getElementById('status').textContent")
            await page.screenshot(str(ARTIFACTS / "readme-page.png"))
            assert page.exceptions == []
            # (The test's own page server has no favicon; the relay must answer everything.)
            failed = [(c, u) for c, u in page.responses if c >= 400 and u.startswith(relay_url)]
            assert failed == []
    assert status == "conversation completed"
    ((conversation),) = conversations
    request_id = conversation["conversationId"]
    # The session got the conversation as the web SDK's Host mode wants it: one round, its audio
    # (exactly what went upstream) without `end`, every animation message inside the round, byte
    # for byte and in order, then the round's end after the last one.
    audio_calls = [c for c in calls if c["call"] == "yieldAudioData"]
    frame_calls = [c for c in calls if c["call"] == "yieldFramesData"]
    assert {c["round"] for c in calls} == {"round-1"}
    assert all(c["accepted"] for c in frame_calls)
    assert (
        b"".join(bytes.fromhex(c["audio"]) for c in audio_calls)
        == (emulator.received_audio[request_id])
    )
    frames = [bytes.fromhex(f) for c in frame_calls for f in c["frames"]]
    assert frames == upstream_frames(emulator)[request_id]
    assert [c["end"] for c in audio_calls] == [False] * (len(audio_calls) - 1) + [True]
    assert calls[-1]["call"] == "yieldAudioData"
    assert calls[-1]["audio"] == ""


async def test_the_api_docs_render_without_the_internet() -> None:
    # Swagger UI's assets come from this server (fastapi-offline), not a CDN: the page renders
    # every operation having asked nothing of any other host.
    async with (
        Emulator() as emulator,
        running_app(create_app(relay_test_settings(emulator, [CALLER_KEY]))) as url,
        launch() as browser,
    ):
        page = await browser.new_page()
        await page.goto(url + "/docs")
        async with asyncio.timeout(WAIT):
            operations = await page.evaluate(
                """new Promise((resolve) => {
                  const count = () => document.querySelectorAll('.opblock').length;
                  const check = () => (count() >= 5 ? resolve(count()) : setTimeout(check, 50));
                  check();
                })"""
            )
            title = await page.evaluate("document.querySelector('.swagger-ui .title').textContent")
        await page.screenshot(str(ARTIFACTS / "api-docs.png"))
        assert operations >= 5
        assert "avatar-relay" in title
        assert page.requests
        assert all(request.startswith(url) for request in page.requests), page.requests
        assert all(status < 400 for status, _ in page.responses), page.responses
        assert page.exceptions == []
