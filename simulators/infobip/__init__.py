"""Simulated Infobip Calls platform: Calls API, webhooks, callers and the media WebSocket.

Follows Infobip's Calls API reference (https://www.infobip.com/docs/api) to the letter; see
`InfobipSimulator`.
"""

from .calls import CallState, DialogState, Identity
from .faults import EarlyRetry, Faults
from .http_common import RecordedRequest
from .media_leg import GapStats, MediaLeg
from .playout import Drop, Playout
from .script import CallScript
from .sim_call import SimCall
from .simulator import InfobipSimulator
from .webhooks import WebhookAttempt

__all__ = [
    "CallScript",
    "CallState",
    "DialogState",
    "Drop",
    "EarlyRetry",
    "Faults",
    "GapStats",
    "Identity",
    "InfobipSimulator",
    "MediaLeg",
    "Playout",
    "RecordedRequest",
    "SimCall",
    "WebhookAttempt",
]
