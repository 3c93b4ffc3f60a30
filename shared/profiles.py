"""Agent profiles: who the voice agent is for a given number or calls configuration.

A TOML file (AGENT_PROFILES_FILE) holds `[profiles.<name>]` tables and `[routes]`; the
orchestrator picks a profile per call and passes its *name* in the dialog's customData; the
gateway loads the same file and builds the Realtime `session.update` from it. Without a file
the built-in `default` profile is used.

    [profiles.support]
    instructions = "You are ACME support. Be brief."
    voice = "marin"
    greeting = "Greet the caller and ask how you can help."
    tools = ["hang_up", "transfer_to_human"]
    transfer_number = "+44 113 496 0000"   # sent as 441134960000
    [profiles.support.turn_detection]
    type = "server_vad"
    silence_duration_ms = 500

    [routes]
    by_number = { "+441134960001" = "support" }
    by_calls_configuration = { "acme-config" = "support" }
    default = "support"

`transfer_number` is normalised once, here, when the profiles load: `+`, spaces, dashes and
parentheses are removed, because the Calls API spec writes phone numbers as bare digits
(https://www.infobip.com/docs/api, `PhoneEndpoint.phoneNumber`: "41793026727"). A number that
is not 3 to 20 digits after that refuses to load, naming the profile, rather than failing
the first transfer of a live call. An empty string means "no transfer number".
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from callbridge.shared.infobip_calls import wire_phone_number

Voice = Literal["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin",
                "cedar"]


class TurnDetection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0)
    silence_duration_ms: int = Field(500, ge=0)
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


class AgentProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "default"
    instructions: str = (
        "You are a friendly, concise phone agent. Keep answers short: the caller is on a phone."
    )
    voice: Voice = "marin"
    greeting: str | None = "Greet the caller briefly and ask how you can help."
    turn_detection: TurnDetection = Field(default_factory=TurnDetection)
    transcription_model: str | None = "gpt-4o-transcribe"
    tools: list[str] = Field(default_factory=lambda: ["hang_up", "transfer_to_human"])
    transfer_number: str | None = None

    @field_validator("transfer_number")
    @classmethod
    def _transfer_number_as_the_spec_writes_it(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        digits = wire_phone_number(value)
        if digits is None:
            raise ValueError(
                f"transfer_number {value!r} is not a phone number: after removing '+', "
                "spaces, dashes and parentheses it must be 3 to 20 digits, country code "
                "first (e.g. \"+44 113 496 0000\" or \"441134960000\")")
        return digits


class Routes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by_number: dict[str, str] = Field(default_factory=dict)
    by_calls_configuration: dict[str, str] = Field(default_factory=dict)
    default: str = "default"


class ProfileBook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profiles: dict[str, AgentProfile] = Field(default_factory=dict)
    routes: Routes = Field(default_factory=Routes)

    def model_post_init(self, __context: object) -> None:
        for name, profile in self.profiles.items():
            profile.name = name
        self.profiles.setdefault("default", AgentProfile())
        if self.routes.default not in self.profiles:
            raise ValueError(f"routes.default names unknown profile {self.routes.default!r}")
        for table in (self.routes.by_number, self.routes.by_calls_configuration):
            for key, name in table.items():
                if name not in self.profiles:
                    raise ValueError(f"route {key!r} names unknown profile {name!r}")

    def choose(self, called_number: str | None, calls_configuration_id: str | None) -> AgentProfile:
        """Number first (most specific), then calls configuration, then the default."""
        name = (
            (called_number and self.routes.by_number.get(called_number))
            or (calls_configuration_id
                and self.routes.by_calls_configuration.get(calls_configuration_id))
            or self.routes.default
        )
        return self.profiles[name]

    def get(self, name: str | None) -> AgentProfile:
        """The named profile, or the default one for an unknown or missing name."""
        return self.profiles.get(name or "", self.profiles[self.routes.default])


def load_profiles(path: str | Path | None) -> ProfileBook:
    """Read a profiles TOML file; None or "" gives the built-in default book."""
    if not path:
        return ProfileBook()
    with open(path, "rb") as fh:
        return ProfileBook.model_validate(tomllib.load(fh))
