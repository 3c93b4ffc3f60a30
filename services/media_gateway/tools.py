"""Tools the voice agent can call, in a small registry a deployment extends.

Protocol (Realtime conversations guide, function calling:
https://platform.openai.com/docs/guides/realtime-conversations): tools are declared in
`session.tools`; the model emits `response.function_call_arguments.done`; we run the tool
only once `response.done` says that response was not cancelled (a barge-in must not hang up
or transfer: turns.py), then send `function_call_output` and, if the tool wants the agent to
go on, `response.create`.

The telephony tools act through orchestrator jobs, never through the Calls API directly:
data flows one way and the orchestrator owns the call (README "Architecture"). The jobs are
`callbridge.shared.jobs.HANGUP_CALL` and `TRANSFER_CALL`, each with the call id and a short reason,
enqueued by `ToolHost.end_call` (state.py `StateStore.enqueue_job`).

A deployment adds a tool with `registry.register(Tool(name, description, parameters,
handler))`; a profile lists the names it may use.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from callbridge.services.media_gateway import metrics
from callbridge.shared.jobs import HANGUP_CALL, TRANSFER_CALL
from callbridge.shared.profiles import AgentProfile

log = logging.getLogger(__name__)

#: How long a hang-up or transfer waits for the agent's last words to be played.
PLAYOUT_WAIT_S = 30.0


class ToolHost(Protocol):
    """What a tool may do to its call (implemented by MediaSession)."""

    call_id: str
    profile: AgentProfile

    async def wait_played_out(self, timeout: float) -> bool: ...

    def end_call(self, job: str, job_reason: str, end_reason: str) -> None: ...


@dataclass(frozen=True)
class ToolCall:
    name: str
    call_id: str  # the model's function call id (for function_call_output)
    arguments: dict[str, Any]
    response_id: str | None = None

    @classmethod
    def parse(cls, name: str, call_id: str, arguments: str,
              response_id: str | None = None) -> ToolCall:
        """Arguments come as a JSON string written by the model: never trust them."""
        try:
            args = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            args = {}
        return cls(name, call_id, args if isinstance(args, dict) else {}, response_id)


@dataclass(frozen=True)
class ToolResult:
    """A handler's answer when it must override the tool's `respond` for this call."""

    output: str
    respond: bool


Handler = Callable[[ToolCall, ToolHost], Awaitable["str | ToolResult"]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    handler: Handler
    parameters: dict[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}})
    #: send `response.create` after the output (False for tools that end the call)
    respond: bool = True

    def schema(self) -> dict[str, Any]:
        """The GA `session.tools` entry."""
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": self.parameters}


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, tool: Tool) -> None:
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def schemas(self, names: list[str]) -> list[dict[str, Any]]:
        """Schemas for the names a profile lists; unknown names are logged and skipped."""
        out = []
        for name in names:
            tool = self._tools.get(name)
            if tool is None:
                log.warning("profile names unknown tool %r: not offered to the model", name)
                continue
            out.append(tool.schema())
        return out


async def run_tool(registry: ToolRegistry, call: ToolCall, host: ToolHost) -> tuple[str, bool]:
    """Run one tool call: (output for the model, whether the agent should respond). Never
    raises: an unknown tool or a failing handler is an output the model can act on."""
    tool = registry.get(call.name)
    metrics.TOOL_CALLS.labels(call.name if tool else "unknown").inc()
    if tool is None:
        return f"There is no tool named {call.name}.", True
    try:
        result = await tool.handler(call, host)
    except Exception:
        log.exception("tool %s failed", call.name)
        result = "The tool failed; apologise and continue without it."
    if isinstance(result, ToolResult):
        return result.output, result.respond
    return result, tool.respond


_REASON = {"type": "object",
           "properties": {"reason": {"type": "string", "description": "why, in a few words"}},
           "required": ["reason"]}


async def hang_up(call: ToolCall, host: ToolHost) -> str:
    """End the call after the goodbye was heard: the orchestrator hangs up via the API."""
    await host.wait_played_out(PLAYOUT_WAIT_S)
    reason = str(call.arguments.get("reason") or "agent_hangup")[:200]
    host.end_call(HANGUP_CALL, reason, "agent_hangup")
    return "The call is being ended."


async def transfer_to_human(call: ToolCall, host: ToolHost) -> str | ToolResult:
    """Hand the caller to a person (the orchestrator dials the profile's transfer number)."""
    if not host.profile.transfer_number:
        return ToolResult("No human agent is available for this line. Tell the caller and "
                          "offer to help further or to end the call.", respond=True)
    await host.wait_played_out(PLAYOUT_WAIT_S)
    reason = str(call.arguments.get("reason") or "caller_request")[:200]
    host.end_call(TRANSFER_CALL, reason, "transferred")
    return "The caller is being transferred to a human agent."


def default_registry() -> ToolRegistry:
    registry = ToolRegistry()
    registry.register(Tool(
        "hang_up",
        "End the phone call. Say goodbye first; call this when the conversation is over or "
        "the caller asks to end it.",
        hang_up, _REASON, respond=False))
    registry.register(Tool(
        "transfer_to_human",
        "Transfer the caller to a human agent when they ask for a person or you cannot help. "
        "Tell them you are transferring them first.",
        transfer_to_human, _REASON, respond=False))
    return registry
