"""What one demo call looked like: a timeline from the simulators' and Redis' records.

Every time comes from a record (the Infobip simulator's, the events stream, the gateway's
session record), never from the services' logs, so the report shows what really happened.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from callbridge.shared import redis_keys
from callbridge.shared.pcm import is_silent, ms_of, rms, write_wav

if TYPE_CHECKING:
    from callbridge.simulators.infobip import InfobipSimulator, SimCall

#: Timeline steps in call order: (key, label). Times are ms after the webhook was sent.
STEPS = (
    ("webhook_sent", "webhook sent by Infobip"),
    ("webhook_stored", "webhook stored in the events stream"),
    ("dialog_requested", "dialog requested at the Calls API"),
    ("media_connected", "media WebSocket connected"),
    ("first_agent_audio", "first agent audio heard by the caller"),
    ("caller_speech_start", "caller starts speaking"),
    ("hangup", "hang-up"),
)


@dataclass
class CallReport:
    call_id: str
    completed: bool
    end_reason: str | None
    dialog_requests: int
    timeline_ms: dict[str, float | None]
    heard_ms: float
    heard_rms: float
    session: dict[str, str]
    transcript: list[tuple[str, str]]
    wav_path: str = ""
    transcript_path: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def _stored_at(client: aioredis.Redis, call_id: str) -> float | None:
    """received_at (unix ms) of this call's CALL_RECEIVED entry in the events stream."""
    for _, fields in await client.xrange(redis_keys.EVENTS_STREAM, count=10_000):
        if fields.get(b"call_id") == call_id.encode() and fields.get(b"type") == b"CALL_RECEIVED":
            return float(fields[b"received_at"]) / 1000.0
    return None


async def build_report(call: SimCall, infobip: InfobipSimulator,
                       client: aioredis.Redis | None, sample_rate: int,
                       out_dir: Path) -> CallReport:
    """Without Redis (a deployment whose Redis is not reachable from here) the report
    rests on the simulators' records alone, and says so."""
    timeline: dict[str, float | None] = dict(call.timeline)
    timeline["webhook_stored"] = (await _stored_at(client, call.call_id)
                                  if client is not None else None)
    origin = timeline.get("webhook_sent")
    timeline_ms = {key: (round((timeline[key] - origin) * 1000, 1)  # type: ignore[operator]
                         if origin is not None and timeline.get(key) is not None else None)
                   for key, _ in STEPS}
    session: dict[str, str] = {}
    transcript: list[tuple[str, str]] = []
    if client is not None:
        session = {k.decode(): v.decode() for k, v in
                   (await client.hgetall(redis_keys.session_record(call.call_id))).items()}
        transcript = [(f[b"role"].decode(), f[b"text"].decode()) for _, f in
                      await client.xrange(redis_keys.transcript_stream(call.call_id))]
    dialogs = sum(1 for r in infobip.dialog_requests
                  if (r.json or {}).get("parentCallId") == call.call_id)
    heard = call.received_pcm()
    report = CallReport(
        call_id=call.call_id, completed=False, end_reason=call.end_reason,
        dialog_requests=dialogs, timeline_ms=timeline_ms,
        heard_ms=round(ms_of(len(heard), sample_rate)), heard_rms=round(rms(heard), 1),
        session=session, transcript=transcript)
    out_dir.mkdir(parents=True, exist_ok=True)
    wav = out_dir / f"{call.call_id}-caller-heard.wav"
    write_wav(wav, heard, sample_rate)
    text = out_dir / f"{call.call_id}-transcript.txt"
    text.write_text("".join(f"{role}: {line}\n" for role, line in transcript))
    report.wav_path, report.transcript_path = str(wav), str(text)
    if dialogs != 1:
        report.problems.append(f"{dialogs} dialog requests (expected exactly 1)")
    if not heard or is_silent(heard):
        report.problems.append("the caller heard no agent audio")
    if call.end_reason != "caller_hangup":
        report.problems.append(f"call ended by {call.end_reason}, not by the caller hanging up")
    if client is None:
        report.notes.append("no --redis-url: session record and transcript not read")
    elif session.get("state") != "ended":
        report.problems.append(f"session record state is {session.get('state')!r}, not 'ended'")
    report.completed = not report.problems
    return report


def render_text(reports: list[CallReport]) -> str:
    """A human timeline for each call, then one line per call."""
    lines: list[str] = []
    for rep in reports:
        lines.append(f"\ncall {rep.call_id}  ({'completed' if rep.completed else 'FAILED'})")
        for key, label in STEPS:
            value = rep.timeline_ms.get(key)
            shown = f"{value:>9.1f} ms" if value is not None else "        -   "
            lines.append(f"  {shown}  {label}")
        lines.append(f"  session: state={rep.session.get('state')} "
                     f"end_reason={rep.session.get('end_reason')} "
                     f"frames in/out={rep.session.get('frames_in')}/"
                     f"{rep.session.get('frames_out')} barge-ins={rep.session.get('barge_ins')}")
        lines.append(f"  caller heard {rep.heard_ms / 1000:.1f} s of audio (RMS {rep.heard_rms})"
                     f" -> {rep.wav_path}")
        lines.append(f"  transcript ({len(rep.transcript)} lines) -> {rep.transcript_path}")
        for role, text in rep.transcript:
            lines.append(f"    {role:>6}: {text}")
        for problem in rep.problems:
            lines.append(f"  PROBLEM: {problem}")
        for note in rep.notes:
            lines.append(f"  note: {note}")
    done = sum(r.completed for r in reports)
    lines.append(f"\n{done}/{len(reports)} calls completed")
    return "\n".join(lines)
