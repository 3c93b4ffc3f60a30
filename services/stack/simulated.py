"""The simulated Infobip account and OpenAI Realtime, started the one way every caller
(`LocalStack`, `callbridge demo --target`, the fault suite) needs them.

Returns the service environment that points the orchestrator and the gateway at them, so
the keys, URLs and media-stream config id cannot disagree between the two sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from callbridge.simulators.infobip import InfobipSimulator
    from callbridge.simulators.openai_realtime import RealtimeSimulator

SIM_INFOBIP_KEY = "sim-infobip-key"
SIM_OPENAI_KEY = "sk-sim-openai"
#: User name of the Basic credentials a stack generates for the simulated subscription.
SIM_WEBHOOK_USER = "infobip"
#: Config id `demo --target` creates; compose.yaml's default for the orchestrators.
DEMO_MEDIA_CONFIG_ID = "callbridge-demo"


@dataclass
class SimulatorSettings:
    host: str = "127.0.0.1"            # 0.0.0.0 when containers must reach them
    infobip_port: int = 0
    openai_port: int = 0
    infobip_api_key: str = SIM_INFOBIP_KEY
    openai_api_key: str = SIM_OPENAI_KEY
    webhook_basic: tuple[str, str] | None = None   # what the Infobip subscription sends
    webhook_hmac_secret: str | None = None
    model_speed: float = 4.0
    keep_sessions: int | None = None   # bound the Realtime simulator's records (long runs)
    media_config_id: str | None = None  # fixed id (deployments configured beforehand)
    # Media client modes of the simulated Infobip (callbridge.simulators.infobip.media_leg
    # .MediaLegOptions), each breaking one assumption of docs/protocol-assumptions.md.
    media_custom_data: Literal["flat", "nested"] = "flat"
    media_answer_pings: bool = True
    media_silence_suppression: bool = False


@dataclass
class Simulated:
    infobip: InfobipSimulator
    openai: RealtimeSimulator
    media_config_id: str
    env: dict[str, str]

    async def stop(self) -> None:
        await self.infobip.stop()
        await self.openai.stop()


async def start_simulators(settings: SimulatorSettings, webhook_url: str, media_url: str,
                           sample_rate: int) -> Simulated:
    from callbridge.simulators.infobip import InfobipSimulator
    from callbridge.simulators.infobip.media_leg import MediaLegOptions
    from callbridge.simulators.openai_realtime import RealtimeSimulator

    openai = RealtimeSimulator(host=settings.host, port=settings.openai_port,
                               api_key=settings.openai_api_key, speed=settings.model_speed,
                               keep_sessions=settings.keep_sessions)
    await openai.start()
    infobip = InfobipSimulator(
        host=settings.host, port=settings.infobip_port, api_key=settings.infobip_api_key,
        webhook_url=webhook_url, webhook_auth=settings.webhook_basic,
        webhook_hmac_secret=(settings.webhook_hmac_secret.encode()
                             if settings.webhook_hmac_secret else None),
        media_options=MediaLegOptions(custom_data=settings.media_custom_data,
                                      answer_pings=settings.media_answer_pings,
                                      silence_suppression=settings.media_silence_suppression))
    try:
        await infobip.start()
        config_id = infobip.add_media_stream_config(url=media_url, sample_rate=sample_rate,
                                                    config_id=settings.media_config_id)
    except BaseException:
        await openai.stop()
        await infobip.stop()
        raise
    env = {
        "INFOBIP_BASE_URL": infobip.base_url,
        "INFOBIP_API_KEY": settings.infobip_api_key,
        "INFOBIP_MEDIA_STREAM_CONFIG_ID": config_id,
        "OPENAI_API_KEY": settings.openai_api_key,
        "OPENAI_REALTIME_URL": openai.url,
    }
    if settings.webhook_basic:
        env["WEBHOOK_BASIC_USER"], env["WEBHOOK_BASIC_PASSWORD"] = settings.webhook_basic
    if settings.webhook_hmac_secret:
        env["WEBHOOK_HMAC_SECRET"] = settings.webhook_hmac_secret
    return Simulated(infobip, openai, config_id, env)
