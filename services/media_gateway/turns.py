"""One model response at a time, and the tool calls each response carries.

The Realtime server refuses a `response.create` while another response is active
(`conversation_already_has_active_response`, server events reference, "error":
https://platform.openai.com/docs/api-reference/realtime-server-events/error), so a request
made meanwhile (a DTMF key, a tool's output) waits for `response.done`. Tool calls are
collected per response and handed out only when that response is done and not cancelled
(a barge-in must not hang up or transfer): Realtime conversations guide, function calling,
https://platform.openai.com/docs/guides/realtime-conversations.
"""

from __future__ import annotations

import logging

from callbridge.services.media_gateway.model_link import ModelLink
from callbridge.services.media_gateway.tools import ToolCall
from callbridge.shared import realtime_events as rt

log = logging.getLogger(__name__)

#: `active` while the first response.create of a socket is on its way (no id yet).
PENDING = "pending"


class ResponseTurns:
    """The call's response bookkeeping (no I/O besides `link.send`)."""

    def __init__(self, link: ModelLink) -> None:
        self.link = link
        #: the response the model is producing ("pending" until it is created), or None
        self.active: str | None = None
        #: event_id of our latest response.create, to recognise an error refusing it
        self.last_request: str | None = None
        self._wanted = False
        self._calls: dict[str, list[ToolCall]] = {}

    def request(self) -> None:
        """`response.create`, now or once the active response is done (one at a time)."""
        if self.active is not None:
            self._wanted = True
            return
        event = rt.response_create()
        self.last_request = event["event_id"]
        if self.link.send(event):
            self.active = PENDING

    def on_model_open(self, response_sent: bool) -> None:
        """A model socket is configured; `response_sent`: its greeting or resume is on the
        way. Tool calls of the lost socket's responses are forgotten."""
        self._calls.clear()
        self.active = PENDING if response_sent else None

    def on_model_lost(self) -> None:
        self.active = None
        self._wanted = False

    def on_created(self, response_id: str) -> None:
        self.active = response_id

    def on_refused(self, event_id: str) -> None:
        """An `error` naming one of our events: if it was our response.create, no response
        is coming."""
        if event_id == self.last_request:
            self.active = None

    def on_function_call(self, event: rt.FunctionCallDone) -> None:
        call = ToolCall.parse(event.name, event.call_id, event.arguments, event.response_id)
        self._calls.setdefault(event.response_id or "", []).append(call)

    def on_done(self, response_id: str | None, status: str) -> list[ToolCall]:
        """The response ended: the tool calls to run now (none if it was cancelled); a
        request made meanwhile is sent after them."""
        self.active = None
        calls = self._calls.pop(response_id or "", [])
        if status == "cancelled" and calls:
            log.info("response cancelled: not running %s", [c.name for c in calls])
            calls = []
        if self._wanted:
            self._wanted = False
            self.request()
        return calls
