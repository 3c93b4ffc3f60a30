"""The Infobip simulator speaks the Calls API, webhooks and media protocol of the reference.

The test plays the orchestrator (it reads CALL_RECEIVED from a tiny webhook receiver and
creates the dialog itself) and the gateway (a tiny websockets server), so the simulator is
tested alone. Source of every expectation: Infobip's Calls API reference (https://www.infobip.com/docs/api).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from websockets.asyncio.server import serve

from callbridge.shared.pcm import is_silent, write_wav
from callbridge.shared.webhook_signing import verify
from callbridge.simulators.infobip import CallScript, InfobipSimulator, MediaLeg
from tests.simulators.fixtures import (
    AUTH,
    KEY,
    FakeGateway,
    Receiver,
    check_envelopes,
    create_dialog,
    tone,
)
from tests.waiting import wait_until


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/webhook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}/webhook"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def sim(receiver: Receiver) -> AsyncIterator[InfobipSimulator]:
    simulator = InfobipSimulator(api_key=KEY, webhook_url=receiver.url, webhook_backoff_s=0.05)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    gw = FakeGateway()
    async with serve(gw.handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        gw.url = f"ws://127.0.0.1:{port}/media"
        yield gw


@pytest.fixture
def caller_wav(tmp_path: Path) -> Path:
    path = tmp_path / "caller.wav"
    write_wav(path, tone(1000, 16000), 16000)
    return path


# --- REST ---------------------------------------------------------------------------------

async def test_auth_refused_without_or_with_wrong_key(sim: InfobipSimulator,
                                                      http: aiohttp.ClientSession) -> None:
    for headers in ({}, {"Authorization": "App wrong"}, {"Authorization": f"Bearer {KEY}"}):
        async with http.get(sim.base_url + "/calls/1/media-stream-configs",
                            headers=headers) as resp:
            assert resp.status == 401
            body = await resp.json()
            assert body["requestError"]["serviceException"]["messageId"] == "UNAUTHORIZED"
            assert body["requestError"]["serviceException"]["text"]
    assert [r.status for r in sim.requests] == [401, 401, 401]


async def test_dialog_validation_errors(sim: InfobipSimulator, http: aiohttp.ClientSession,
                                       caller_wav: Path) -> None:
    call = await sim.place_call(CallScript(caller_wav=caller_wav, hangup_after_s=5))
    config_id = sim.add_media_stream_config("ws://127.0.0.1:9/media", 16000)
    ws_endpoint = {"type": "WEBSOCKET", "websocketEndpointConfigId": config_id}
    cases = {
        "childCallRequest": {"childCallRequest": {"endpoint": ws_endpoint}},  # no parentCallId
        "parentCallId": {"parentCallId": "nope", "childCallRequest": {"endpoint": ws_endpoint}},
        "childCallRequest.endpoint.websocketEndpointConfigId": {
            "parentCallId": call.call_id, "childCallRequest": {
                "endpoint": {"type": "WEBSOCKET", "websocketEndpointConfigId": "missing"}}},
        "childCallRequest.endpoint.type": {  # not an endpoint type of the spec
            "parentCallId": call.call_id, "childCallRequest": {
                "endpoint": {"type": "FAX", "username": "x"}}},
        # The spec's SipEndpoint requires sipTrunkId (our own models never checked it).
        "childCallRequest.endpoint.sipTrunkId": {
            "parentCallId": call.call_id, "childCallRequest": {
                "endpoint": {"type": "SIP", "username": "x"}}},
    }
    for field_hint, body in cases.items():
        async with http.post(sim.base_url + "/calls/1/dialogs", json=body,
                             headers=AUTH) as resp:
            assert resp.status == 400
            exc = (await resp.json())["requestError"]["serviceException"]
            assert exc["messageId"] == "BAD_REQUEST"
            fields = exc["validationErrors"]
            if field_hint == "childCallRequest":
                assert "parentCallId" in fields
            else:
                assert field_hint in fields, fields
    assert len(sim.dialog_requests) == 5
    # Refused by the published spec itself (the other two by the platform's state).
    assert [list(r.spec_problems) for r in sim.invalid_requests] == [
        ["parentCallId"], ["childCallRequest.endpoint.type"],
        ["childCallRequest.endpoint.sipTrunkId"]]
    async with http.get(sim.base_url + "/calls/1/dialogs/unknown", headers=AUTH) as resp:
        assert resp.status == 404
        assert (await resp.json())["requestError"]["serviceException"]["messageId"] == \
            "NOT_FOUND"
    async with http.post(sim.base_url + f"/calls/1/calls/{call.call_id}/answer",
                         headers=AUTH) as resp:
        assert resp.status == 400  # a JSON body is required
    async with http.post(sim.base_url + f"/calls/1/calls/{call.call_id}/answer", json={},
                         headers=AUTH) as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "COMPLETED"}
    async with http.post(sim.base_url + f"/calls/1/calls/{call.call_id}/hangup",
                         headers=AUTH) as resp:
        assert resp.status == 200
        assert (await resp.json())["state"] == "FINISHED"
    await call.wait_finished(10)
    assert call.end_reason == "api_hangup"
    assert [e["type"] for e in call.events_posted] == [
        "CALL_RECEIVED", "CALL_ESTABLISHED", "CALL_FINISHED"]
    assert call.events_posted[-1]["properties"]["callLog"]["hangupSource"] == "API"


async def test_media_stream_configs_round_trip_and_paging(
        sim: InfobipSimulator, http: aiohttp.ClientSession) -> None:
    base = sim.base_url + "/calls/1/media-stream-configs"
    body = {"type": "WEBSOCKET_ENDPOINT", "name": "gw", "url": "ws://127.0.0.1:8090/media",
            "sampleRate": "24000"}
    async with http.post(base, json=body, headers=AUTH) as resp:
        assert resp.status == 201
        created = await resp.json()
    assert created["sampleRate"] == "24000" and created["id"]
    async with http.get(f"{base}/{created['id']}", headers=AUTH) as resp:
        assert (await resp.json())["sampleRate"] == "24000"
    for bad in ({**body, "sampleRate": "48000"}, {**body, "sampleRate": 24000},
                {k: v for k, v in body.items() if k != "url"}):
        async with http.post(base, json=bad, headers=AUTH) as resp:
            assert resp.status == 400
            assert (await resp.json())["requestError"]["serviceException"]["validationErrors"]
    async with http.post(base, json={"type": "WEBSOCKET_ENDPOINT", "name": "d",
                                     "url": "wss://x/y"}, headers=AUTH) as resp:
        assert (await resp.json())["sampleRate"] == "8000"  # the documented default
    for i in range(3):
        sim.add_media_stream_config(f"ws://127.0.0.1:1/{i}", 16000)
    async with http.get(base, params={"page": "1", "size": "2"}, headers=AUTH) as resp:
        page = await resp.json()
    assert page["paging"] == {"page": 1, "size": 2, "totalPages": 3, "totalResults": 5}
    assert len(page["results"]) == 2
    async with http.get(base, params={"size": "101"}, headers=AUTH) as resp:
        assert resp.status == 400
    async with http.put(f"{base}/{created['id']}", json={**body, "sampleRate": "16000"},
                        headers=AUTH) as resp:
        assert (await resp.json())["sampleRate"] == "16000"
    async with http.delete(f"{base}/{created['id']}", headers=AUTH) as resp:
        assert resp.status == 200
    async with http.get(f"{base}/{created['id']}", headers=AUTH) as resp:
        assert resp.status == 404


async def test_fault_injection(sim: InfobipSimulator, http: aiohttp.ClientSession) -> None:
    base = sim.base_url + "/calls/1/media-stream-configs"
    sim.faults.fail_next(1, status=429, retry_after=2, path_prefix="/calls/1/media-stream")
    sim.faults.fail_next(1, status=500, path_prefix="/calls/1/media-stream")
    async with http.get(base, headers=AUTH) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "2"
        exc = (await resp.json())["requestError"]["serviceException"]
        assert exc["messageId"] == "TOO_MANY_REQUESTS"
    async with http.get(base, headers=AUTH) as resp:  # too early: recorded
        assert resp.status == 500
        assert (await resp.json())["requestError"]["serviceException"]["messageId"] == \
            "GENERAL_ERROR"
    async with http.get(base, headers=AUTH) as resp:
        assert resp.status == 200
    assert len(sim.faults.early_retries) == 2
    assert [r.faulted for r in sim.requests] == [True, True, False]

    sim.faults.fail_ratio(1.0, statuses=[503], duration_s=30, seed=1)
    async with http.get(sim.base_url + "/calls/1/calls/x", headers=AUTH) as resp:
        assert resp.status == 503
    sim.faults.clear()

    # A delayed answer: the client gives up, the request still takes effect afterwards.
    sim.faults.delay_next(1, 0.5, path_prefix="/calls/1/media-stream")
    body = {"type": "WEBSOCKET_ENDPOINT", "name": "slow", "url": "ws://127.0.0.1:1/s"}
    with pytest.raises(TimeoutError):
        async with http.post(base, json=body, headers=AUTH,
                             timeout=aiohttp.ClientTimeout(total=0.1)):
            pass
    await wait_until(lambda: sim.requests[-1].status == 201)
    assert any(c.name == "slow" for c in sim.media_stream_configs.values())


async def test_webhooks_signed_and_retried(receiver: Receiver, caller_wav: Path) -> None:
    receiver.fail_first = 1
    simulator = InfobipSimulator(api_key=KEY, webhook_url=receiver.url,
                                 webhook_auth=("infobip", "pw"), webhook_hmac_secret=b"k3y",
                                 webhook_backoff_s=0.05)
    await simulator.start()
    try:
        call = await simulator.place_call(CallScript(caller_wav=caller_wav, hangup_after_s=0.2))
        await call.wait_finished(10)
    finally:
        await simulator.stop()
    assert [w.result for w in simulator.webhooks][:2] == [500, 200]
    assert receiver.types() == ["CALL_RECEIVED", "CALL_FAILED"]  # never answered
    for headers, body in zip(receiver.headers, receiver.bodies, strict=True):
        assert headers["Authorization"].startswith("Basic ")
        assert verify(b"k3y", body, headers.get("X-Callbridge-Signature"),
                      headers.get("X-Callbridge-Timestamp")) is None
    assert call.end_reason == "caller_hangup"
    assert "webhook_acked" in call.timeline


# --- a full call ---------------------------------------------------------------------------

async def test_full_call(sim: InfobipSimulator, receiver: Receiver, gateway: FakeGateway,
                         http: aiohttp.ClientSession, caller_wav: Path) -> None:
    config_id = sim.add_media_stream_config(gateway.url, 16000)
    call = await sim.place_call(CallScript(caller_wav=caller_wav, max_duration_s=30))
    received = await receiver.next("CALL_RECEIVED")
    props = received["properties"]
    assert received["callId"] == call.call_id
    assert props["call"]["endpoint"] == {"type": "PHONE", "phoneNumber": "447700900123"}
    assert props["call"]["state"] == "RINGING" and props["call"]["direction"] == "INBOUND"
    assert set(received["platform"]) == {"applicationId", "entityId"}
    dialog = await create_dialog(http, sim, call.call_id, config_id,
                                 propagation={"childCallHangup": False})
    assert dialog["parentCall"]["dialogId"] == dialog["id"] == dialog["childCall"]["dialogId"]
    assert dialog["childCall"]["endpoint"]["websocketEndpointConfigId"] == config_id
    await call.wait_finished(30)

    assert call.end_reason == "caller_hangup"
    assert receiver.types() == [
        "CALL_RECEIVED", "DIALOG_CREATED", "CALL_ESTABLISHED", "CALL_ESTABLISHED",
        "DIALOG_ESTABLISHED", "CALL_FINISHED", "CALL_FINISHED", "DIALOG_FINISHED"]
    check_envelopes(receiver.events, sim.base_url)
    parent_end, child_end, dialog_end = receiver.events[-3:]
    log = parent_end["properties"]["callLog"]
    assert log["callId"] == call.call_id and log["state"] == "FINISHED"
    assert log["errorCode"]["name"] == "NORMAL_HANGUP" and log["errorCode"]["id"] == 10000
    assert log["hangupSource"] == "ENDPOINT" and log["dialogId"] == call.dialog_id
    assert child_end["properties"]["callLog"]["callId"] == dialog["childCall"]["id"]
    assert dialog_end["properties"]["hangupSource"] == "PARENT_ENDPOINT"
    assert dialog_end["properties"]["dialog"]["applicationId"]

    # websocket:connected: content-type and the flattened customData
    assert gateway.connected == [{"event": "websocket:connected",
                                  "content-type": "audio/l16;rate=16000", "cbToken": "tok",
                                  "cbCallId": call.call_id, "cbProfile": "default"}]
    # 20 ms frames at 16 kHz, at about real time (generous bounds), the caller's speech in it
    sizes = {len(f) for _, f in gateway.frames}
    assert sizes == {640}
    elapsed = gateway.frames[-1][0] - gateway.frames[0][0]
    expected = elapsed / 0.02 + 1
    assert 0.5 * expected <= len(gateway.frames) <= 1.5 * expected + 5
    assert sum(not is_silent(f) for _, f in gateway.frames) >= 40  # 1 s of speech

    # clear dropped the queued greeting; the caller heard the rest
    leg = call.leg
    assert leg is not None and leg.close_code == 1000 and leg.closed_by == "caller"
    assert len(call.clears) == 1 and leg.texts == []
    heard = call.received_pcm()
    assert len(heard) + len(leg.playout.dropped_pcm) == gateway.sent_audio
    assert leg.drops[0].dropped_bytes > 0 and len(heard) < gateway.sent_audio
    assert len(heard) >= 25 * 640
    for mark in ("webhook_sent", "webhook_acked", "dialog_requested", "media_connected",
                 "first_agent_audio", "caller_speech_start", "caller_speech_end", "hangup"):
        assert mark in call.timeline, mark
    assert call.timeline["caller_speech_start"] < call.timeline["caller_speech_end"]


@pytest.mark.parametrize("propagate", [True, False])
async def test_media_close_propagation(sim: InfobipSimulator, receiver: Receiver,
                                       gateway: FakeGateway, http: aiohttp.ClientSession,
                                       caller_wav: Path, propagate: bool) -> None:
    gateway.mode = "close_after"
    config_id = sim.add_media_stream_config(gateway.url, 24000)
    call = await sim.place_call(CallScript(caller_wav=caller_wav, max_duration_s=30))
    await receiver.next("CALL_RECEIVED")
    # propagationOptions absent means childCallHangup true (the reference's default)
    await create_dialog(http, sim, call.call_id, config_id,
                        propagation=None if propagate else {"childCallHangup": False})
    if propagate:
        await call.wait_finished(20)
        assert call.end_reason == "media_closed"
        assert receiver.types()[-3:] == ["CALL_FINISHED", "CALL_FINISHED", "DIALOG_FINISHED"]
        assert receiver.events[-2]["callId"] == call.call_id
        assert receiver.events[-2]["properties"]["callLog"]["hangupSource"] == "PLATFORM"
    else:
        finished = await receiver.next("DIALOG_FINISHED", timeout=20)
        assert finished["properties"]["hangupSource"] == "CHILD_ENDPOINT"
        assert call.state == "ESTABLISHED" and not call.finished  # the caller is still there
        async with http.post(sim.base_url + f"/calls/1/calls/{call.call_id}/hangup",
                             json={"errorCode": "NORMAL_HANGUP"}, headers=AUTH) as resp:
            assert resp.status == 200
        await call.wait_finished(10)
        assert call.end_reason == "api_hangup"
        assert receiver.events[-1]["properties"]["callLog"]["hangupSource"] == "API"
    assert {len(f) for _, f in gateway.frames} == {960}  # 20 ms at 24 kHz
    assert call.leg is not None and call.leg.closed_by == "server"
    check_envelopes(receiver.events, sim.base_url)


async def test_dialog_failed_when_socket_refused(sim: InfobipSimulator, receiver: Receiver,
                                                 http: aiohttp.ClientSession,
                                                 caller_wav: Path) -> None:
    config_id = sim.add_media_stream_config("ws://127.0.0.1:9/media", 8000)
    call = await sim.place_call(CallScript(caller_wav=caller_wav, max_duration_s=30))
    await receiver.next("CALL_RECEIVED")
    dialog = await create_dialog(http, sim, call.call_id, config_id)
    failed = await receiver.next("DIALOG_FAILED")
    assert failed["properties"]["errorCode"]["name"]
    assert "CALL_FAILED" in receiver.types()
    async with http.post(sim.base_url + f"/calls/1/dialogs/{dialog['id']}/hangup",
                         headers=AUTH) as resp:
        assert resp.status == 200
    async with http.post(sim.base_url + f"/calls/1/calls/{call.call_id}/hangup",
                         headers=AUTH) as resp:
        assert resp.status == 200
    await call.wait_finished(10)
    assert call.end_reason == "dialog_failed"


async def test_media_leg_standalone(gateway: FakeGateway) -> None:
    gateway.rate = 24000
    leg = MediaLeg(gateway.url, 24000, {"cbToken": "t"}, caller_pcm=tone(200, 24000))
    await leg.connect()  # autoplay: the caller speaks at once, then silence frames
    try:
        assert await leg.wait_agent_audio(5)
        await leg.send_dtmf("3")
        assert await leg.wait_spoken(5)
        assert await leg.wait_agent_audio(10, after=leg.marks["caller_speech_end"])  # reply
        assert await leg.wait_agent_quiet(300, timeout=10)
    finally:
        await leg.hangup()
    assert leg.close_code == 1000 and leg.closed_by == "caller"
    assert leg.clears and leg.frames
    assert gateway.texts == ['{"event":"websocket:dtmf","digit":"3","duration":250}']
    assert gateway.connected[0]["content-type"] == "audio/l16;rate=24000"


async def test_barge_in_and_dtmf(sim: InfobipSimulator, receiver: Receiver,
                                 gateway: FakeGateway, http: aiohttp.ClientSession,
                                 caller_wav: Path) -> None:
    config_id = sim.add_media_stream_config(gateway.url, 16000)
    # quiet_ms=3000: a polite caller would wait >= 3 s after the greeting; this one barges in
    script = CallScript(caller_wav=caller_wav, barge_in_at_ms=100, dtmf=[(50, "5")],
                        quiet_ms=3000, max_duration_s=30)
    call = await sim.place_call(script)
    await receiver.next("CALL_RECEIVED")
    await create_dialog(http, sim, call.call_id, config_id)
    await call.wait_finished(30)
    assert call.end_reason == "caller_hangup"
    timeline = call.timeline
    assert 0.09 <= timeline["caller_speech_start"] - timeline["first_agent_audio"] < 2.5
    assert gateway.texts == ['{"event":"websocket:dtmf","digit":"5","duration":250}']


async def test_transfer_replaces_the_agent_dialog(sim: InfobipSimulator, receiver: Receiver,
                                                  http: aiohttp.ClientSession,
                                                  caller_wav: Path) -> None:
    config_id = sim.add_media_stream_config("ws://127.0.0.1:9/unused", 24000)
    call = await sim.place_call(CallScript(caller_wav=caller_wav, connect_to_media=False,
                                           transfer_talk_s=0.2, max_duration_s=30))
    await receiver.next("CALL_RECEIVED")
    await create_dialog(http, sim, call.call_id, config_id, {"childCallHangup": False})
    await receiver.next("DIALOG_ESTABLISHED")
    body = {"parentCallId": call.call_id, "childCallRequest": {
        "endpoint": {"type": "PHONE", "phoneNumber": "442035550199"}}}
    async with http.post(sim.base_url + "/calls/1/dialogs", json=body, headers=AUTH) as resp:
        assert resp.status == 201
        phone = await resp.json()
    await call.wait_finished(10)
    assert call.end_reason == "caller_hangup" and call.leg is None
    assert len(call.dialogs) == 2 and call.dialog_id == phone["id"]
    assert receiver.types() == [
        "CALL_RECEIVED", "DIALOG_CREATED", "CALL_ESTABLISHED", "CALL_ESTABLISHED",
        "DIALOG_ESTABLISHED",  # the agent's dialog (no media: connect_to_media=False)
        "CALL_FINISHED", "DIALOG_FINISHED",  # replaced: its child ends, the caller stays
        "DIALOG_CREATED", "CALL_ESTABLISHED", "DIALOG_ESTABLISHED",  # the transfer
        "CALL_FINISHED", "CALL_FINISHED", "DIALOG_FINISHED"]
    check_envelopes(receiver.events, sim.base_url)


async def test_throttle_emulation(receiver: Receiver, http: aiohttp.ClientSession) -> None:
    simulator = InfobipSimulator(api_key=KEY, webhook_url=receiver.url, throttle=True,
                                 throttle_retry_after=1)
    path = "/calls/1/dialogs"
    assert [simulator.throttled("POST", path, 100.0) for _ in range(21)] == [False] * 20 + [True]
    assert not simulator.throttled("POST", path, 101.01)  # the window slid
    assert not simulator.throttled("GET", "/calls/1/media-stream-configs", 101.02)
    await simulator.start()
    try:
        now = time.time()
        for _ in range(20):
            simulator.throttled("POST", path, now)
        async with http.post(simulator.base_url + path, json={}, headers=AUTH) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "1"
            exc = (await resp.json())["requestError"]["serviceException"]
            assert exc["messageId"] == "TOO_MANY_REQUESTS"
    finally:
        await simulator.stop()
    assert simulator.dialog_requests[0].faulted


def test_cli_help_and_parsing(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from callbridge.simulators import cli

    parser = argparse.ArgumentParser(prog="callbridge")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sim", "infobip", "--place", "2", "--webhook-url", "http://x"])
    assert args.port == 8070 and args.place == 2 and args.func is cli.run_infobip
    args = parser.parse_args(["sim", "openai"])
    assert args.port == 8060 and args.speed == 4.0 and args.func is cli.run_openai
    with pytest.raises(SystemExit):
        parser.parse_args(["sim", "infobip", "--help"])
    assert "examples:" in capsys.readouterr().out


# --- media client modes that break one protocol assumption each ---------------------------
# (docs/protocol-assumptions.md; `callbridge preflight --capture-call` reports them)

async def test_nested_custom_data_mode_changes_connected_frame(
        sim: InfobipSimulator, receiver: Receiver, gateway: FakeGateway,
        http: aiohttp.ClientSession, caller_wav: Path) -> None:
    """Through the whole simulated call (simulator -> SimCall -> MediaLeg): customData
    arrives as one nested object, none of its keys at the top level."""
    from callbridge.simulators.infobip.media_leg import MediaLegOptions

    sim.media_options = MediaLegOptions(custom_data="nested")
    config_id = sim.add_media_stream_config(gateway.url, 16000)
    call = await sim.place_call(CallScript(caller_wav=caller_wav, max_duration_s=30))
    await receiver.next("CALL_RECEIVED")
    await create_dialog(http, sim, call.call_id, config_id)
    await wait_until(lambda: gateway.connected, 10, "websocket:connected")
    assert gateway.connected == [{
        "event": "websocket:connected", "content-type": "audio/l16;rate=16000",
        "customData": {"cbToken": "tok", "cbCallId": call.call_id, "cbProfile": "default"}}]
    await call.abort()


def test_connected_message_layouts() -> None:
    import orjson

    from callbridge.simulators.infobip.media_messages import connected_message

    flat = orjson.loads(connected_message(8000, {"cbToken": "t", "event": "x"}))
    assert flat == {"event": "websocket:connected", "content-type": "audio/l16;rate=8000",
                    "cbToken": "t"}  # the protocol keys win over customData's
    nested = orjson.loads(connected_message(8000, {"cbToken": "t"}, "nested"))
    assert nested == {"event": "websocket:connected", "content-type": "audio/l16;rate=8000",
                      "customData": {"cbToken": "t"}}
    with pytest.raises(ValueError):
        connected_message(8000, {}, "sideways")


async def _ping_then_close(answer_pings: bool) -> tuple[BaseException | None, MediaLeg]:
    """A gateway that pings once, then closes. The client handles frames in order, so an
    answering client's pong is on the wire before its close frame: once the closing
    handshake is over, the ping's waiter says for certain whether a pong came (no timing)."""
    import asyncio

    from websockets.asyncio.server import ServerConnection

    from callbridge.simulators.infobip.media_leg import MediaLegOptions

    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # websocket:connected
        waiter = asyncio.ensure_future(await ws.ping(b"preflight"))
        await ws.close(1000, "done")
        await ws.wait_closed()
        outcome.set_result(waiter.exception() if waiter.done() else
                           RuntimeError("pong waiter still pending"))

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        leg = MediaLeg(f"ws://127.0.0.1:{port}/media", 16000, {"cbToken": "t"},
                       options=MediaLegOptions(answer_pings=answer_pings))
        await leg.connect()
        try:
            result = await asyncio.wait_for(outcome, 10)
            await leg.wait_closed(10)
        finally:
            await leg.aclose()
    return result, leg


async def test_no_pongs_mode_leaves_pings_unanswered() -> None:
    from websockets.exceptions import ConnectionClosed

    error, leg = await _ping_then_close(answer_pings=True)
    assert error is None and leg.pongs_withheld == 0  # default: the pong came back
    error, leg = await _ping_then_close(answer_pings=False)
    assert isinstance(error, ConnectionClosed)  # the ping died with the connection
    assert leg.pongs_withheld == 1 and leg.close_code == 1000


async def _frames_during_silence(suppress: bool) -> tuple[list[bytes], MediaLeg]:
    """The caller says 200 ms, then is silent for at least 25 frame periods (counted on the
    sender's own schedule), then hangs up; what did the gateway receive?"""
    from websockets.asyncio.server import ServerConnection

    from callbridge.simulators.infobip.media_leg import MediaLegOptions

    frames: list[bytes] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        async for msg in ws:
            if isinstance(msg, bytes):
                frames.append(msg)

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        leg = MediaLeg(f"ws://127.0.0.1:{port}/media", 16000, {"cbToken": "t"},
                       caller_pcm=tone(200, 16000),
                       options=MediaLegOptions(silence_suppression=suppress))
        await leg.connect()
        try:
            assert await leg.wait_spoken(10)
            await wait_until(lambda: leg.sent_frames + leg.suppressed_frames >= 10 + 25, 10,
                             "25 frame periods of silence")
        finally:
            await leg.hangup()
    return frames, leg


async def test_silence_suppression_mode_sends_nothing_while_silent() -> None:
    frames, leg = await _frames_during_silence(suppress=False)
    assert sum(is_silent(f) for f in frames) >= 25 and leg.suppressed_frames == 0
    frames, leg = await _frames_during_silence(suppress=True)
    assert len(frames) == 10 and not any(is_silent(f) for f in frames)  # the speech only
    assert leg.suppressed_frames >= 25 and leg.sent_frames == 10


def test_cli_media_mode_flags() -> None:
    import argparse

    from callbridge.services.stack import cli as stack_cli
    from callbridge.simulators import cli

    parser = argparse.ArgumentParser(prog="callbridge")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    stack_cli.register(sub)
    args = parser.parse_args(["sim", "infobip"])
    assert (args.media_custom_data, args.no_pongs, args.silence_suppression) == (
        "flat", False, False)
    args = parser.parse_args(["sim", "infobip", "--media-custom-data", "nested", "--no-pongs",
                              "--silence-suppression"])
    assert (args.media_custom_data, args.no_pongs, args.silence_suppression) == (
        "nested", True, True)
    args = parser.parse_args(["stack", "--media-custom-data", "nested", "--no-pongs"])
    assert (args.media_custom_data, args.no_pongs, args.silence_suppression) == (
        "nested", True, False)


async def test_stack_simulator_settings_reach_the_media_client() -> None:
    from callbridge.services.stack.simulated import SimulatorSettings, start_simulators
    from callbridge.simulators.infobip.media_leg import MediaLegOptions

    simulated = await start_simulators(
        SimulatorSettings(media_custom_data="nested", media_answer_pings=False,
                          media_silence_suppression=True),
        "http://127.0.0.1:9/webhook", "ws://127.0.0.1:9/media", 16000)
    try:
        assert simulated.infobip.media_options == MediaLegOptions(
            custom_data="nested", answer_pings=False, silence_suppression=True)
    finally:
        await simulated.stop()
