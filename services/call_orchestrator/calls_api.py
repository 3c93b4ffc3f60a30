"""aiohttp client for the Infobip Calls API: the few requests the orchestrator makes.

Source for every wire fact: Infobip's Calls API reference (https://www.infobip.com/docs/api)
("REST", "Errors"):
`Authorization: App <key>`, POST /calls/1/dialogs -> 201 dialog, GET /calls/1/calls/{id}
-> call (with `dialogId`), POST /calls/1/calls/{id}/hangup, error bodies
{"requestError": {"serviceException": {messageId, text}}}.

Failures are classified once, here, so handlers only decide *what* to do:
- `ApiError.retryable`: 5xx and 429 (honouring Retry-After) - and every `ApiUnreachable`
  (connection error, timeout); other 4xx are final.
- `ambiguous`: whether the request may have taken effect anyway (a timeout, a dropped
  connection after sending, a 5xx). A refused connection and a 4xx/429 did nothing; the
  dialog claim (idempotency.py) is released for those and kept for ambiguous ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from callbridge.shared.infobip_calls import DialogRequest, DialogResponse, parse_error_body

from .api_hosts import DEFAULT_API_HOSTS, ApiBasePolicy
from .failures import JobFailure
from .metrics import API_LATENCY
from .throttle import ThrottleGate

DIALOGS_SCOPE = "dialogs"


class CallsApiFailure(JobFailure):
    """Base of every Calls API failure (`retryable`, `ambiguous`, `retry_after`: JobFailure)."""

    status: int | None = None

    def describe(self) -> str:
        return str(self)


class ApiUnreachable(CallsApiFailure):
    """Connection error or timeout: retryable; ambiguous unless the connection was refused."""

    def __init__(self, endpoint: str, reason: str, ambiguous: bool) -> None:
        super().__init__(f"{endpoint}: {reason}")
        self.ambiguous = ambiguous


class Throttled(CallsApiFailure):
    """A shared Retry-After gate is closed: nothing was sent."""

    ambiguous = False

    def __init__(self, endpoint: str, wait_s: float) -> None:
        super().__init__(f"{endpoint}: held by Retry-After for {wait_s:.2f}s")
        self.retry_after = wait_s


class ApiError(CallsApiFailure):
    """An HTTP error answer, with Infobip's messageId and text."""

    def __init__(self, endpoint: str, status: int, message_id: str, text: str,
                 retry_after: float | None) -> None:
        super().__init__(f"{endpoint}: HTTP {status} {message_id} {text}".rstrip())
        self.endpoint = endpoint
        self.status = status
        self.message_id = message_id
        self.text = text
        self.retry_after = retry_after
        self.retryable = status >= 500 or status == 429
        self.ambiguous = status >= 500


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds form; an HTTP date is ignored)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def path_segment(value: str) -> str:
    """An id as one URL path segment: `../x?y` can never steer a request to another path
    (ids are also validated at the door, shared/infobip_events.py; this is the second wall)."""
    return quote(value, safe="")


#: Awaited right before a request's bytes are written (idempotency: Claim.mark_posting).
BeforeSend = Callable[[], Awaitable[Any]]


def _before_send_trace() -> aiohttp.TraceConfig:
    """Run a request's `before_send` hook when its connection is ready: aiohttp awaits these
    trace signals at the end of `connector.connect()`, after which it writes the request
    with no further await. A crash-recovery note written there ("this POST may now reach
    the platform") is written after every wait that can be long (throttle gate, connection
    pool, TCP connect) and before anything leaves (https://docs.aiohttp.org/en/stable/
    tracing_reference.html)."""

    async def ready(_session: aiohttp.ClientSession, ctx: SimpleNamespace,
                    _params: object) -> None:
        hook = (ctx.trace_request_ctx or {}).get("before_send")
        if hook is not None:
            await hook()

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(ready)
    trace.on_connection_reuseconn.append(ready)
    return trace


class CallsApi:
    """One shared aiohttp session; each method takes the call's base URL (apiBaseUrl)."""

    def __init__(self, api_key: str, default_base_url: str, timeout_s: float,
                 gate: ThrottleGate, throttle_max_wait_s: float = 2.0,
                 allowed_hosts: Sequence[str] = DEFAULT_API_HOSTS) -> None:
        self._policy = ApiBasePolicy(default_base_url, allowed_hosts)
        self._headers = {"Authorization": f"App {api_key}", "Content-Type": "application/json",
                         "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._gate = gate
        self._max_wait = throttle_max_wait_s
        self._session: aiohttp.ClientSession | None = None

    def base(self, api_base_url: str | None) -> str:
        """Where a request for a call goes: every request passes here, so the key reaches
        only Infobip's hosts whatever a webhook said (api_hosts.py)."""
        return self._policy.choose(api_base_url)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout, json_serialize=lambda o:
                orjson.dumps(o).decode(),
                connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=30),
                trace_configs=[_before_send_trace()])
        return self._session

    async def gate_wait_s(self, scope: str) -> float:
        """Seconds until `scope` is open (lets a caller fetch it concurrently with other
        work, then pass `gate_checked=True`)."""
        return await self._gate.wait_s(scope)

    async def _respect_gate(self, scope: str, endpoint: str) -> None:
        """Never send before a Retry-After the platform gave for `scope`: wait in-job for a
        short gate (bounded loop), hand a long one back to the retry machinery."""
        for _ in range(5):
            wait = await self._gate.wait_s(scope)
            if wait <= 0:
                return
            if wait > self._max_wait:
                raise Throttled(endpoint, wait)
            await asyncio.sleep(wait)
        raise Throttled(endpoint, self._max_wait)

    async def _request(self, method: str, url: str, endpoint: str, scope: str,
                       body: dict[str, Any] | None = None,
                       ok: tuple[int, ...] = (200, 201),
                       gate_checked: bool = False,
                       before_send: BeforeSend | None = None) -> tuple[int, Any]:
        if not gate_checked:
            await self._respect_gate(scope, endpoint)
        started = time.perf_counter()
        status_label = "error"
        try:
            async with self._client().request(
                    method, url, json=body,
                    trace_request_ctx={"before_send": before_send} if before_send else None
            ) as resp:
                status_label = str(resp.status)
                raw = await resp.read()
                try:
                    data = orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError:
                    data = raw[:200].decode(errors="replace")
                if resp.status in ok:
                    return resp.status, data
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                if retry_after is not None and (resp.status == 429 or resp.status >= 500):
                    await self._gate.close_for(scope, retry_after)
                message_id, text = parse_error_body(data)
                raise ApiError(endpoint, resp.status, message_id, text, retry_after)
        except aiohttp.ClientConnectorError as exc:
            # Nothing was sent: the connection itself failed.
            raise ApiUnreachable(endpoint, f"cannot connect: {exc}", ambiguous=False) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            status_label = "timeout" if isinstance(exc, TimeoutError) else "error"
            raise ApiUnreachable(endpoint, f"{type(exc).__name__}: {exc}",
                                 ambiguous=True) from exc
        finally:
            API_LATENCY.labels(endpoint, status_label).observe(time.perf_counter() - started)

    async def create_dialog(self, api_base_url: str | None, request: DialogRequest,
                            gate_checked: bool = False,
                            before_send: BeforeSend | None = None) -> DialogResponse:
        """POST /calls/1/dialogs. `gate_checked`: the caller saw the dialogs gate open
        (`gate_wait_s(DIALOGS_SCOPE) == 0`) just before. `before_send`: awaited once the
        connection is ready, right before the request is written (see _before_send_trace)."""
        url = f"{self.base(api_base_url)}/calls/1/dialogs"
        _, data = await self._request("POST", url, "POST /calls/1/dialogs", DIALOGS_SCOPE,
                                      request.to_wire(), ok=(200, 201),
                                      gate_checked=gate_checked, before_send=before_send)
        return DialogResponse.model_validate(data)

    async def get_call(self, api_base_url: str | None, call_id: str) -> dict[str, Any] | None:
        """The call object, or None when the platform does not know it (404)."""
        url = f"{self.base(api_base_url)}/calls/1/calls/{path_segment(call_id)}"
        try:
            _, data = await self._request("GET", url, "GET /calls/1/calls/{id}",
                                          f"calls/{call_id}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return data if isinstance(data, dict) else None

    async def hangup_call(self, api_base_url: str | None, call_id: str,
                          error_code: str = "NORMAL_HANGUP") -> bool:
        """Hang a call up; False when it is already gone (404), which is the goal anyway."""
        url = f"{self.base(api_base_url)}/calls/1/calls/{path_segment(call_id)}/hangup"
        try:
            await self._request("POST", url, "POST /calls/1/calls/{id}/hangup",
                                f"calls/{call_id}/hangup", {"errorCode": error_code})
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True
