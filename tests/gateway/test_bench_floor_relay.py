"""The benchmark's floor relay (bench/gateway/floor_relay.py) really relays: its CPU figures
in the README mean something only if the caller's audio reaches the model and the agent's
answer reaches the caller through it."""

from __future__ import annotations

from bench.gateway.floor_relay import serve_floor
from callbridge.shared.pcm import is_silent
from callbridge.simulators.infobip import MediaLeg
from callbridge.simulators.openai_realtime import RealtimeSimulator
from tests.gateway.fixtures import caller_speech


async def test_the_floor_relays_both_ways(rt_sim: RealtimeSimulator) -> None:
    async with serve_floor("127.0.0.1", 0, rt_sim.url, "sk-sim") as server:
        port = server.sockets[0].getsockname()[1]
        leg = MediaLeg(f"ws://127.0.0.1:{port}/media", 24000, {}, autoplay=False)
        await leg.connect()
        try:
            assert await leg.wait_agent_audio(15), "no greeting through the floor"
            heard_greeting = len(leg.received_pcm())
            await leg.play(caller_speech(24000))  # returns once its last frame was sent
            # The model answers only speech it received, once the caller stops (server VAD):
            # audio after that proves the uplink too (the unpaced greeting ended long before).
            assert await leg.wait_agent_audio(20, after=leg.marks["caller_speech_end"]), \
                "no answer"
            assert len(leg.received_pcm()) > heard_greeting
            assert not is_silent(leg.received_pcm())
        finally:
            await leg.aclose()
