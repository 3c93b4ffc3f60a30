"""What the Calls API handlers need from the simulated platform, as a Protocol.

`InfobipSimulator` (simulator.py) owns the platform's state and builds the API app
(api.py); the handlers reach that state through `request.app[PLATFORM]`, typed by the
Protocol below rather than by the simulator class, so the handlers never import the module
that imports them.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from .calls import CallState, DialogState, Identity
from .faults import Faults
from .http_common import RecordedRequest
from .sim_call import SimCall


class Platform(Protocol):
    api_key: str
    throttle_retry_after: float | None
    refuse_second_media_dialog: bool
    ident: Identity
    faults: Faults
    requests: list[RecordedRequest]
    dialog_requests: list[RecordedRequest]
    invalid_requests: list[RecordedRequest]
    spec_violations: list[str]
    parent_calls: dict[str, SimCall]
    dialogs: dict[str, tuple[SimCall, DialogState]]

    def register_dialog(self, call: SimCall, dialog: DialogState) -> None: ...

    def find_call(self, call_id: str) -> tuple[SimCall, CallState] | None: ...

    def throttled(self, method: str, path: str, at: float) -> bool: ...


PLATFORM: web.AppKey[Platform] = web.AppKey("infobip_platform")
