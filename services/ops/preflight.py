"""`callbridge preflight`: check the credentials, then prove the protocol assumptions on a
first live call.

Three checks (services/ops/cli.py's PREFLIGHT_HELP is the operator's version):

- **OpenAI**: per agent profile, open a Realtime socket the way the media gateway does and
  send the gateway's own `session.update` (`callbridge.shared.realtime_events`, tools from the
  gateway's registry); report what `session.updated` says is in effect, or the exact
  `error` event and close code. GA protocol: https://platform.openai.com/docs/api-reference/realtime.
- **Infobip**: with the orchestrator's INFOBIP_BASE_URL and key, list the media-stream
  configs and read a call, so a missing scope shows before a caller does (scopes from
  Infobip's Voice OpenAPI document, `x-scopes` of each operation:
  https://www.infobip.com/docs/api/channels/voice/calls), and compare the config
  `callbridge setup` creates with what the gateway needs.
- **Capture** (`--capture-call`): arm the gateways (`redis_keys.PREFLIGHT_ARMED`), wait for
  the next CALL_RECEIVED on the events stream and for that call's `WireObservation`
  (shared/wire_observations.py) and say, assumption by assumption, whether
  docs/protocol-assumptions.md held.

Nothing here prints a secret: keys are sent, never echoed, and server messages are scrubbed
of anything that looks like one before they are shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import aiohttp
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from callbridge.shared import realtime_events as rt
from callbridge.shared import redis_keys
from callbridge.shared.infobip_calls import parse_error_body
from callbridge.shared.infobip_media import TOKEN_KEY
from callbridge.shared.logging_setup import redact
from callbridge.shared.profiles import AgentProfile
from callbridge.shared.wire_observations import WireObservation

if TYPE_CHECKING:  # the gateway's modules load only when its checks run
    from callbridge.services.media_gateway.config import GatewaySettings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_SETUP = 2

Status = Literal["ok", "failed", "setup_error"]

#: The media-stream config name and rate `callbridge setup` uses by default.
DEFAULT_CONFIG_NAME = "callbridge-gateway"
DEFAULT_SAMPLE_RATE = 24000
#: A call id no call has: reading it proves the read scope without touching a real call
#: (404 = the key was accepted; the spec documents 401/403 for a key without the scope).
PROBE_CALL_ID = "callbridge-preflight-probe"
INSTRUCTIONS_SHOWN = 80

#: Scopes each probed operation accepts (Infobip Voice OpenAPI 3.210.0, `x-scopes`).
SCOPES_CONFIGS = "calls:configuration:manage or calls:manage"
SCOPES_READ_CALLS = "calls:logs:read or calls:manage"
SCOPES_DIALOGS = "calls:traffic:send or calls:manage"


@dataclass
class Check:
    """One check's outcome: `lines` for people, `details` for --json."""

    name: str
    status: Status
    summary: str
    lines: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def exit_code(checks: Sequence[Check]) -> int:
    """2 if any check could not run (setup), else 1 if any found a problem, else 0."""
    if any(c.status == "setup_error" for c in checks):
        return EXIT_SETUP
    if any(c.status == "failed" for c in checks):
        return EXIT_FAILED
    return EXIT_OK


_MARK = {"ok": "ok  ", "failed": "FAIL", "setup_error": "SETUP"}


def render(checks: Sequence[Check]) -> str:
    out: list[str] = []
    for check in checks:
        out.append(f"[{_MARK[check.status]}] {check.name}: {check.summary}")
        out.extend(f"       {line}" for line in check.lines)
    code = exit_code(checks)
    out.append({EXIT_OK: "preflight: everything checked held (exit 0)",
                EXIT_FAILED: "preflight: something did not hold (exit 1): see FAIL above",
                EXIT_SETUP: "preflight: a check could not run (exit 2): see SETUP above"}[code])
    return "\n".join(out)


def to_json(checks: Sequence[Check]) -> bytes:
    return orjson.dumps({"exit_code": exit_code(checks), "checks": [asdict(c) for c in checks]})


_SECRETISH = re.compile(r"\b(sk-[A-Za-z0-9_*\-.]{3,}|Bearer\s+\S+|App\s+\S+)")


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """A server message made safe to print: our own keys and anything shaped like a key
    (the live Realtime service echoes a masked key in `invalid_api_key`) are cut out, URL
    credentials redacted, length bounded."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[key]")
    return redact(_SECRETISH.sub("[key]", text))[:500]


# OpenAI ---------------------------------------------------------------------------------

def _describe_turn_detection(td: Any) -> str:
    if not isinstance(td, dict):
        return str(td)
    keys = ("threshold", "silence_duration_ms", "prefix_padding_ms", "eagerness",
            "create_response", "interrupt_response")
    extra = ", ".join(f"{k}={td[k]}" for k in keys if k in td)
    return f"{td.get('type')} ({extra})" if extra else str(td.get("type"))


def _format_name(fmt: Any) -> str:
    if isinstance(fmt, dict):
        rate = fmt.get("rate")
        return f"{fmt.get('type')}" + (f"@{rate}" if rate else "")
    return str(fmt)


def _effective(session: dict[str, Any]) -> dict[str, Any]:
    audio = session.get("audio") or {}
    inp, outp = audio.get("input") or {}, audio.get("output") or {}
    instructions = str(session.get("instructions") or "")
    return {
        "voice": outp.get("voice"),
        "instructions_start": instructions[:INSTRUCTIONS_SHOWN],
        "instructions_chars": len(instructions),
        "tools": [t.get("name") for t in session.get("tools") or [] if isinstance(t, dict)],
        "turn_detection": inp.get("turn_detection"),
        "input_format": inp.get("format"),
        "output_format": outp.get("format"),
    }


def _differences(sent: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """What the server put in effect that differs from what the gateway asked for."""
    problems = []
    for key in ("voice", "tools", "input_format", "output_format"):
        if sent[key] != got[key]:
            problems.append(f"{key}: sent {sent[key]!r}, in effect {got[key]!r}")
    sent_td, got_td = sent["turn_detection"] or {}, got["turn_detection"] or {}
    if sent_td.get("type") != (got_td or {}).get("type"):
        problems.append(f"turn_detection: sent {sent_td.get('type')!r}, in effect "
                        f"{(got_td or {}).get('type')!r}")
    if sent["instructions_chars"] != got["instructions_chars"]:
        problems.append(f"instructions: sent {sent['instructions_chars']} chars, in effect "
                        f"{got['instructions_chars']}")
    return problems


async def check_openai_profile(settings: GatewaySettings, profile: AgentProfile,
                               tools: list[dict[str, Any]], timeout_s: float = 15.0) -> Check:
    """Open a Realtime socket as the gateway does (`ModelLink`: URL, Bearer header, no
    compression) and send the gateway's `session.update` for `profile`; report
    `session.updated` or the `error` / close that came instead."""
    from callbridge.services.media_gateway.model_link import ModelLink

    name = f"openai profile {profile.name!r}"
    key = settings.openai_api_key.get_secret_value()
    url = ModelLink(settings, profile, tools, lambda: ()).url
    update = rt.session_update(rt.session_config(profile, settings.openai_model, tools))
    sent = _effective(update["session"])
    details: dict[str, Any] = {"profile": profile.name, "url": redact(url)}
    try:
        ws = await connect(url, additional_headers={"Authorization": f"Bearer {key}"},
                           compression=None, max_size=settings.gateway_model_max_message_bytes,
                           open_timeout=settings.gateway_model_open_timeout_s, close_timeout=2)
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        text = scrub(f"{type(exc).__name__}: {exc}", [key])
        return Check(name, "setup_error", f"cannot open {redact(url)}", [
            text, "check OPENAI_REALTIME_URL and that this machine reaches it"],
            {**details, "connect_error": text})
    error: dict[str, Any] | None = None
    effective: dict[str, Any] | None = None
    close: tuple[int | None, str] | None = None
    try:
        # The server may already have refused the socket (error event, then close) before
        # the update goes out; the refusal is still in the receive queue, so read on.
        with contextlib.suppress(ConnectionClosed):
            await ws.send(rt.dumps(update))
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await ws.recv()
                event = orjson.loads(raw)
                kind = event.get("type")
                if kind == "session.updated":
                    effective = _effective(event.get("session") or {})
                    break
                if kind == rt.ERROR:
                    err = event.get("error") or {}
                    error = {k: (scrub(str(err.get(k)), [key]) if err.get(k) is not None
                                 else None) for k in ("type", "code", "message", "param",
                                                      "event_id")}
                    if err.get("event_id") == update["event_id"]:
                        break  # our update was discarded; the socket stays open
                    # any other error is followed by a close frame: read on for its code
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        close = (rcvd.code, scrub(rcvd.reason, [key])) if rcvd else (None, "")
    except TimeoutError:
        pass
    finally:
        await ws.close()
    if close is not None:
        details["close"] = {"code": close[0], "reason": close[1]}
    if error is not None:
        details["error"] = error
    if effective is not None:
        details["effective"] = effective
        lines = [f"voice: {effective['voice']}",
                 f"instructions: {effective['instructions_start']!r}"
                 f"{'...' if effective['instructions_chars'] > INSTRUCTIONS_SHOWN else ''} "
                 f"({effective['instructions_chars']} chars)",
                 f"tools: {', '.join(map(str, effective['tools'])) or '(none)'}",
                 f"turn detection: {_describe_turn_detection(effective['turn_detection'])}",
                 f"audio: in {_format_name(effective['input_format'])}, "
                 f"out {_format_name(effective['output_format'])}"]
        problems = _differences(sent, effective)
        details["differences"] = problems
        if problems:
            return Check(name, "failed", "session.updated differs from the gateway's update",
                         lines + [f"differs: {p}" for p in problems], details)
        return Check(name, "ok", "session.update accepted", lines, details)
    lines = []
    if error is not None:
        lines.append(f"error: code={error['code']} message={error['message']!r} "
                     f"param={error['param']}")
    if close is not None:
        lines.append(f"closed: code={close[0]} reason={close[1]!r}")
    if error is None and close is None:
        return Check(name, "setup_error", f"no session.updated within {timeout_s:g} s",
                     ["the server accepted the socket but never answered the update"], details)
    auth = (error or {}).get("code") == "invalid_api_key" or (close or (None,))[0] == 3000
    if auth:
        lines.append("OPENAI_API_KEY was refused: set a valid key (it is never printed)")
        return Check(name, "setup_error", "the API key was refused", lines, details)
    if error is not None and error.get("event_id") == update["event_id"]:
        lines.append("the server discarded this profile's session.update: the gateway would "
                     "end every call of this profile; fix the profile (AGENT_PROFILES_FILE)")
        return Check(name, "failed", "session.update refused", lines, details)
    return Check(name, "failed", "the Realtime socket was refused", lines, details)


async def check_openai(settings: GatewaySettings, profiles: Sequence[AgentProfile],
                       timeout_s: float = 15.0) -> list[Check]:
    """One check per profile, tools from the gateway's own registry."""
    from callbridge.services.media_gateway.tools import default_registry

    registry = default_registry()
    return [await check_openai_profile(settings, p, registry.schemas(p.tools), timeout_s)
            for p in profiles]


# Infobip --------------------------------------------------------------------------------

class _Refused(Exception):
    def __init__(self, check: Check) -> None:
        self.check = check


async def _get(http: aiohttp.ClientSession, url: str, what: str, scopes: str,
               key: str) -> tuple[int, Any]:
    try:
        async with http.get(url) as resp:
            data = await resp.json(content_type=None)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise _Refused(Check("infobip api key", "setup_error", f"cannot reach {what}", [
            scrub(f"{type(exc).__name__}: {exc}", [key]),
            "check INFOBIP_BASE_URL and that this machine reaches it"])) from None
    if status in (401, 403):
        message_id, text = parse_error_body(data)
        if status == 401:
            hint = "the key was not accepted: check INFOBIP_API_KEY (it is never printed)"
        else:
            hint = (f"the key lacks the scope for {what}: give it {scopes} in the Infobip "
                    "portal (API key management), or use a key that has it")
        raise _Refused(Check("infobip api key", "setup_error",
                             f"{what}: {status} {message_id}", [
                                 f"GET {redact(url)} -> {status} {message_id}: "
                                 f"{scrub(str(text), [key])}", hint],
                             {"status": status, "messageId": message_id,
                              "needed_scopes": scopes}))
    return status, data


async def _list_configs(http: aiohttp.ClientSession, base: str, key: str
                        ) -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = []
    page = 0
    while page < 100:  # bounded: 100 pages of 100 configs
        url = f"{base}/calls/1/media-stream-configs?page={page}&size=100"
        status, data = await _get(http, url, "listing media-stream configs", SCOPES_CONFIGS,
                                  key)
        if status >= 400 or not isinstance(data, dict):
            message_id, text = parse_error_body(data)
            raise _Refused(Check("infobip api key", "setup_error",
                                 f"listing media-stream configs: {status} {message_id}",
                                 [scrub(str(text), [key])]))
        configs += [c for c in data.get("results") or [] if isinstance(c, dict)]
        page += 1
        if page >= int((data.get("paging") or {}).get("totalPages", 1)):
            break
    return configs


def _setup_command(public_url: str | None, name: str, rate: int, update: bool) -> str:
    command = (f"callbridge setup --public-url {public_url or 'wss://<your gateway>/media'} "
               f"--name {name} --sample-rate {rate}")
    return command + (" --update" if update else "")


def config_check(configs: Sequence[dict[str, Any]], name: str, public_url: str | None,
                 sample_rate: int, configured_id: str) -> Check:
    """Found / missing / mismatched: the WEBSOCKET_ENDPOINT config named `name` (names are
    not unique across types, so a MEDIA_STREAMING config of that name does not count)."""
    title = "infobip media-stream config"
    named = [c for c in configs if c.get("name") == name]
    ws = [c for c in named if c.get("type") == "WEBSOCKET_ENDPOINT"]
    if configured_id:
        ws.sort(key=lambda c: c.get("id") != configured_id)  # the configured one first
    details: dict[str, Any] = {"name": name, "found": [c.get("id") for c in ws],
                               "configured_id": configured_id or None}
    if not ws:
        lines = [f"no WEBSOCKET_ENDPOINT config named {name!r} among {len(configs)} config(s)"]
        other = [c for c in named if c not in ws]
        if other:
            lines.append(f"(a {other[0].get('type')} config has that name: it cannot carry a "
                         "call's media)")
        lines.append(f"fix: run `{_setup_command(public_url, name, sample_rate, False)}` "
                     "and set the id it prints as INFOBIP_MEDIA_STREAM_CONFIG_ID")
        return Check(title, "failed", "missing", lines, {**details, "state": "missing"})
    config = ws[0]
    got_url, got_rate = str(config.get("url")), str(config.get("sampleRate"))
    details.update(id=config.get("id"), url=got_url, sampleRate=got_rate)
    lines = [f"{config.get('id')} -> {got_url} at {got_rate} Hz"]
    problems = []
    if public_url is not None and got_url != public_url:
        problems.append(f"url is {got_url}, the gateway's public URL is {public_url}")
    if got_rate != str(sample_rate):
        problems.append(f"sampleRate is {got_rate}, expected {sample_rate}")
    if public_url is None:
        lines.append("url not compared: pass --public-url (the gateway's wss:// URL)")
    fixes = []
    if problems:
        fixes.append(f"fix: run `{_setup_command(public_url, name, sample_rate, True)}`")
    if configured_id and configured_id != config.get("id"):
        problems.append(f"INFOBIP_MEDIA_STREAM_CONFIG_ID is {configured_id}, not this config")
        fixes.append(f"fix: set INFOBIP_MEDIA_STREAM_CONFIG_ID={config.get('id')}")
    if len(ws) > 1:
        lines.append(f"{len(ws)} configs share the name {name!r}: "
                     f"{', '.join(str(c.get('id')) for c in ws)}")
    if problems:
        return Check(title, "failed", "mismatched", lines + problems + fixes,
                     {**details, "state": "mismatched", "problems": problems})
    return Check(title, "ok", "found", lines, {**details, "state": "found"})


async def check_infobip(base_url: str, api_key: str, *, config_name: str = DEFAULT_CONFIG_NAME,
                        public_url: str | None = None, sample_rate: int = DEFAULT_SAMPLE_RATE,
                        configured_id: str = "", timeout_s: float = 15.0) -> list[Check]:
    """The key's scopes (list configs, read a call), then the media-stream config."""
    base = base_url.rstrip("/")
    headers = {"Authorization": f"App {api_key}", "Accept": "application/json"}
    async with aiohttp.ClientSession(headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
        try:
            configs = await _list_configs(http, base, api_key)
            status, _ = await _get(http, f"{base}/calls/1/calls/{quote(PROBE_CALL_ID)}",
                                   "reading calls", SCOPES_READ_CALLS, api_key)
        except _Refused as refused:
            return [refused.check]
    scopes = Check("infobip api key", "ok", "accepted", [
        f"list media-stream configs: allowed ({len(configs)} config(s))",
        f"read calls: allowed (probe answered {status})",
        f"create dialogs ({SCOPES_DIALOGS}): not checkable without a live call; "
        "--capture-call proves it"], {"configs": len(configs), "read_calls_status": status})
    return [scopes, config_check(configs, config_name, public_url, sample_rate, configured_id)]


# Capture --------------------------------------------------------------------------------

@dataclass
class Row:
    """One line of the capture table. `held` None: the call did not exercise it."""

    assumption: str
    expected: str
    observed: str
    held: bool | None


def api_base_row(value: str | None, policy: Any) -> Row:
    """The form of `properties.apiBaseUrl`, judged by the orchestrator's own policy
    (services/call_orchestrator/api_hosts.py). Only its shape and host are shown."""
    from callbridge.services.call_orchestrator.api_hosts import parse_origin

    expected = "https://<host in INFOBIP_API_HOSTS>, no path"
    if not value:
        return Row("apiBaseUrl form", expected, "absent from CALL_RECEIVED", False)
    scheme = "scheme present" if "://" in value else "no scheme (read as https)"
    origin, problem = parse_origin(value)
    host = origin.host if origin else "?"
    _, refused = policy.check(value)
    verdict = "allowed" if refused is None else f"refused ({refused})"
    return Row("apiBaseUrl form", expected, f"{scheme}; host {host}; {verdict}",
               refused is None and "://" in value and problem is None)


_RATE = re.compile(r"rate=(\d+)")


def assumption_rows(obs: WireObservation, sample_rate: int) -> list[Row]:
    """Each media-socket assumption of docs/protocol-assumptions.md against one call."""
    c = obs.connected
    custom = (f"; customData{{{', '.join(c.custom_data_keys)}}}"
              if c.custom_data_keys is not None else "")
    rows = [Row("media token location", f"top-level keys ({TOKEN_KEY}, ...)",
                f"{c.token_location}: keys {', '.join(c.keys) or '(none)'}{custom}",
                c.token_location == "top")]
    match = _RATE.search(c.content_type)
    rows.append(Row("content-type / rate", f"audio/l16;rate={sample_rate}",
                    c.content_type or "(none)",
                    c.content_type.lower().startswith("audio/l16") and match is not None
                    and int(match.group(1)) == sample_rate))
    a = obs.inbound
    frame = sample_rate // 50 * 2
    sizes = ", ".join(f"{size} B x{n}" for size, n in sorted(a.frame_sizes.items()))
    rows.append(Row("continuous inbound audio",
                    f"a {frame} B frame every 20 ms; no gap > {a.gap_threshold_ms:g} ms",
                    f"{a.frames} frames ({sizes or 'none'}); max gap {a.max_gap_ms:.0f} ms; "
                    f"{a.gaps_over_threshold} gap(s) > {a.gap_threshold_ms:g} ms",
                    None if a.frames == 0 else a.gaps_over_threshold == 0))
    k = obs.keepalive
    rtt = f"; max RTT {k.max_rtt_ms:.0f} ms" if k.max_rtt_ms is not None else ""
    # the last ping may still be in flight when the call ends
    rows.append(Row("pong replies", "every ping answered",
                    f"{k.pings_sent} ping(s) sent, {k.pongs_received} pong(s){rtt}",
                    None if k.pings_sent == 0 else
                    k.pongs_received > 0 and k.pongs_received >= k.pings_sent - 1))
    cl = obs.clear
    replies = ", ".join(f"{name} x{n}" for name, n in sorted(cl.replies.items()))
    rows.append(Row('{"action":"clear"} acknowledged', "no reply (nothing sent back)",
                    f"{cl.sent} clear(s) sent; replies within the window: {replies or 'none'}",
                    None if cl.sent == 0 else not cl.replies))
    return rows


HINTS = {
    "media token location": "the gateway refuses the call (1008) unless it reads the token "
                            "where Infobip puts it: tell the lead (shared/infobip_media.py)",
    "content-type / rate": "check the media-stream config's sampleRate (callbridge setup)",
    "continuous inbound audio": "Infobip suppresses silence: raise GATEWAY_IDLE_TIMEOUT_S "
                                "above the longest pause, or callers are cut off",
    "pong replies": "Infobip does not answer pings: calls end after GATEWAY_KEEPALIVE_TIMEOUT_S; "
                    "set GATEWAY_KEEPALIVE_INTERVAL_S=0 and rely on GATEWAY_IDLE_TIMEOUT_S",
    '{"action":"clear"} acknowledged': "harmless: the gateway logs the reply and carries on",
    "apiBaseUrl form": "the configured INFOBIP_BASE_URL is used instead; add the host to "
                       "INFOBIP_API_HOSTS if Infobip really serves the account from it",
}
UNTESTED = {
    "continuous inbound audio": "no inbound audio: the media socket never carried the call",
    "pong replies": "no ping was sent: stay on the line longer than GATEWAY_KEEPALIVE_INTERVAL_S",
    '{"action":"clear"} acknowledged': "no barge-in happened: interrupt the agent once",
}


def capture_check(rows: Sequence[Row], call_id: str, obs: WireObservation | None,
                  header_names: list[str] | None) -> Check:
    width = max(len(r.assumption) for r in rows)
    wexp = max(len(r.expected) for r in rows)
    lines = [f"call {call_id}" + (f" (ended: {obs.end_reason or '?'}, gateway "
                                  f"{obs.gateway_id or '?'})" if obs else ""),
             f"{'assumption':<{width}} | {'expected':<{wexp}} | observed | held?"]
    for r in rows:
        held = {True: "yes", False: "NO", None: "not tested"}[r.held]
        lines.append(f"{r.assumption:<{width}} | {r.expected:<{wexp}} | {r.observed} | {held}")
    for r in rows:
        if r.held is False:
            lines.append(f"{r.assumption}: {HINTS.get(r.assumption, '')}")
        elif r.held is None:
            lines.append(f"{r.assumption}: {UNTESTED.get(r.assumption, 'not exercised')}; "
                         "call again")
    if header_names is not None:
        lines.append(f"webhook header names seen by the ingress: {', '.join(header_names)}")
    details = {"call_id": call_id, "rows": [asdict(r) for r in rows],
               "observation": obs.model_dump() if obs else None,
               "webhook_header_names": header_names}
    failed = [r for r in rows if r.held is not True]
    if not failed:
        return Check("capture", "ok", "every assumption held", lines, details)
    return Check("capture", "failed",
                 f"{sum(r.held is False for r in rows)} did not hold, "
                 f"{sum(r.held is None for r in rows)} not tested", lines, details)


def _header_names(fields: dict[bytes, bytes]) -> list[str] | None:
    """Header names, if the ingress records them with the event (today it does not)."""
    raw = fields.get(b"header_names") or fields.get(b"headers")
    if not raw:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    names = list(data) if isinstance(data, dict | list) else []
    return sorted(str(n)[:100] for n in names)[:50]


async def _last_id(client: aioredis.Redis, stream: str) -> bytes:
    """The id `$` means now, fixed, so later XREADs miss nothing that arrives in between."""
    last = await client.xrevrange(stream, count=1)
    return last[0][0] if last else b"0-0"


Progress = Callable[[str], None]


async def _wait_entry(client: aioredis.Redis, stream: str, after: bytes, deadline: float,
                      match: Callable[[dict[bytes, bytes]], bool], what: str,
                      progress: Progress, every_s: float) -> dict[bytes, bytes] | None:
    """XREAD BLOCK from `after` until an entry matches or the deadline passes; a progress
    line every `every_s` seconds of waiting."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        block_ms = max(1, int(min(every_s, remaining) * 1000))
        reply = await client.xread({stream: after}, count=100, block=block_ms)
        if not reply:
            left = deadline - time.monotonic()
            if left > 0:
                progress(f"still waiting for {what}... ({left:.0f} s left)")
            continue
        for _, entries in reply:
            for entry_id, fields in entries:
                after = entry_id
                if match(fields):
                    return fields


async def capture_call(client: aioredis.Redis, *, number: str, timeout_s: float,
                       policy: Any, sample_rate: int = DEFAULT_SAMPLE_RATE,
                       progress: Progress = print, every_s: float = 15.0,
                       armed: Callable[[], None] | None = None) -> Check:
    """Arm, wait for the next CALL_RECEIVED, then for that call's WireObservation; disarm
    whatever happens (Ctrl-C included). `armed` is called once the gateways are armed."""
    events_from = await _last_id(client, redis_keys.EVENTS_STREAM)
    obs_from = await _last_id(client, redis_keys.WIRE_OBSERVATIONS_STREAM)
    marker = orjson.dumps({"by": f"{getpass.getuser()}@{socket.gethostname()}",
                           "at": int(time.time() * 1000), "nonce": time.monotonic_ns()})
    await client.set(redis_keys.PREFLIGHT_ARMED, marker, ex=max(1, int(timeout_s)))
    deadline = time.monotonic() + timeout_s
    try:
        progress(f"armed for {timeout_s:g} s. Place a test call to {number} now; talk, "
                 "interrupt the agent once, stay silent ~15 s, then hang up")
        if armed is not None:
            armed()
        event = await _wait_entry(
            client, redis_keys.EVENTS_STREAM, events_from, deadline,
            lambda f: f.get(b"type") == b"CALL_RECEIVED", "the call", progress, every_s)
        if event is None:
            return Check("capture", "setup_error", f"no call arrived within {timeout_s:g} s", [
                "no CALL_RECEIVED reached the events stream: check the webhook subscription "
                "(callbridge setup prints it), the ingress and the number called"])
        call_id = (event.get(b"call_id") or b"").decode(errors="replace")
        try:
            body = orjson.loads(event.get(b"body") or b"{}")
        except orjson.JSONDecodeError:
            body = {}
        props = body.get("properties") if isinstance(body, dict) else None
        api_base = props.get("apiBaseUrl") if isinstance(props, dict) else None
        progress(f"call {call_id} arrived; waiting for it to end (hang up when done)")
        obs_fields = await _wait_entry(
            client, redis_keys.WIRE_OBSERVATIONS_STREAM, obs_from, deadline,
            lambda f: f.get(b"call_id", b"").decode(errors="replace") == call_id,
            f"call {call_id} to end", progress, every_s)
        api_row = api_base_row(str(api_base) if api_base is not None else None, policy)
        if obs_fields is None:
            check = capture_check([api_row], call_id, None, _header_names(event))
            check.status = "setup_error"
            check.summary = f"no wire observation for call {call_id} within {timeout_s:g} s"
            check.lines.append("did the call reach a media gateway, and is every gateway "
                               "new enough to record observations?")
            return check
        obs = WireObservation.from_stream_fields(obs_fields)
        rows = [*assumption_rows(obs, sample_rate), api_row]
        return capture_check(rows, call_id, obs, _header_names(event))
    finally:
        # Disarm, also on Ctrl-C (CancelledError): only if the arm is still ours. If Redis
        # is gone, the key's TTL disarms the gateways anyway.
        with contextlib.suppress(RedisError):
            if await client.get(redis_keys.PREFLIGHT_ARMED) == marker:
                await client.delete(redis_keys.PREFLIGHT_ARMED)


# Running the checks ---------------------------------------------------------------------

def _settings_error(name: str, exc: Exception) -> Check:
    from pydantic import ValidationError

    from callbridge.shared.settings import describe_validation_error

    lines = (describe_validation_error(exc).splitlines() if isinstance(exc, ValidationError)
             else [scrub(str(exc))])
    return Check(name, "setup_error", "settings missing or invalid",
                 [line.strip() for line in lines] + ["see README.md, 'Configuration'"])


def _infobip_settings() -> Any:
    """The orchestrator's own settings (INFOBIP_API_HOSTS parsed its way); the config id
    is optional here: preflight tells you which one to set."""
    from callbridge.services.call_orchestrator.config import OrchestratorSettings

    class PreflightSettings(OrchestratorSettings):
        infobip_media_stream_config_id: str = ""

    return PreflightSettings()


def _api_base_policy() -> Any:
    """The orchestrator's policy as configured; with no Infobip settings, its defaults."""
    from pydantic import ValidationError

    from callbridge.services.call_orchestrator.api_hosts import DEFAULT_API_HOSTS, ApiBasePolicy

    try:
        settings = _infobip_settings()
        return ApiBasePolicy(settings.infobip_base_url, settings.infobip_api_hosts)
    except (ValidationError, ValueError):
        return ApiBasePolicy("https://api.infobip.com", DEFAULT_API_HOSTS)


async def run_preflight(checks: Sequence[str], *, number: str = "your Infobip number",
                        timeout_s: float = 600.0, public_url: str | None = None,
                        config_name: str = DEFAULT_CONFIG_NAME,
                        sample_rate: int = DEFAULT_SAMPLE_RATE, progress: Progress = print,
                        every_s: float = 15.0, openai_timeout_s: float = 15.0) -> list[Check]:
    """Run the named checks (openai, infobip, capture) in that order; settings come from
    the environment as each service reads them."""
    from pydantic import ValidationError

    results: list[Check] = []
    if "openai" in checks:
        from callbridge.services.media_gateway.config import GatewaySettings
        from callbridge.shared.profiles import load_profiles

        try:
            gw = GatewaySettings()
            book = load_profiles(gw.agent_profiles_file)
        except (ValidationError, OSError, ValueError) as exc:
            results.append(_settings_error("openai", exc))
        else:
            results += await check_openai(gw, list(book.profiles.values()), openai_timeout_s)
    if "infobip" in checks:
        try:
            ib = _infobip_settings()
        except (ValidationError, ValueError) as exc:
            results.append(_settings_error("infobip", exc))
        else:
            results += await check_infobip(
                ib.infobip_base_url, ib.infobip_api_key.get_secret_value(),
                config_name=config_name, public_url=public_url, sample_rate=sample_rate,
                configured_id=ib.infobip_media_stream_config_id)
    if "capture" in checks:
        results.append(await _run_capture(number, timeout_s, sample_rate, progress, every_s))
    return results


async def _run_capture(number: str, timeout_s: float, sample_rate: int, progress: Progress,
                       every_s: float) -> Check:
    from pydantic import ValidationError

    from callbridge.shared.settings import CommonSettings

    try:
        redis_url = CommonSettings().redis_url
    except ValidationError as exc:
        return _settings_error("capture", exc)
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=3)
    try:
        return await capture_call(client, number=number, timeout_s=timeout_s,
                                  policy=_api_base_policy(), sample_rate=sample_rate,
                                  progress=progress, every_s=every_s)
    except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
        return Check("capture", "setup_error", "cannot reach Redis", [
            scrub(f"{type(exc).__name__}: {exc}"), "check REDIS_URL and that Redis is running"])
    finally:
        await client.aclose()
