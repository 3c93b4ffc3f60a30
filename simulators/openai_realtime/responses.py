"""One model response, streamed with the live server's event order.

Order (the Realtime API reference (https://platform.openai.com/docs/api-reference/realtime), "Events
a bridge needs"): response.created ->
response.output_item.added -> conversation.item.added -> response.content_part.added (part
type audio) -> response.output_audio.delta ... -> response.output_audio_transcript.delta ...
/ .done -> response.output_audio.done -> response.content_part.done -> conversation.item.done
-> response.output_item.done -> [function_call item] -> response.done (with usage) ->
rate_limits.updated. Audio deltas go out at `speed` x real time, the first at once, the rest
timed from it. A cancel (response.cancel or barge-in) stops the deltas at once, closes the
open item as `incomplete` and ends with response.done status `cancelled`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from callbridge.simulators.openai_realtime.audio import Reply, bytes_per_ms, encoded_reply_audio
from callbridge.simulators.openai_realtime.records import ResponseRecord
from callbridge.simulators.openai_realtime.wire import event, new_id

Emit = Callable[..., Awaitable[None]]


@dataclass
class ConvItem:
    """A conversation item; assistant audio items track how much audio was generated."""

    id: str
    type: str
    role: str | None = None
    generated_bytes: int = 0
    bytes_per_ms: int = 48
    truncated_ms: int | None = None
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def generated_ms(self) -> int:
        return self.generated_bytes // self.bytes_per_ms


class ResponseHost:
    """What a response needs from its session (implemented by session.RealtimeSession)."""

    config: dict[str, Any]
    speed: float
    chunk_ms: int
    conversation_id: str
    emit: Emit

    def add_item(self, item: ConvItem) -> str | None:  # returns previous_item_id
        raise NotImplementedError

    def audio_started(self) -> None:
        raise NotImplementedError

    def response_finished(self, response: ActiveResponse) -> None:
        """Called just before response.done: a client may create the next one on it."""
        raise NotImplementedError


class ActiveResponse:
    def __init__(self, host: ResponseHost, reply: Reply, record: ResponseRecord,
                 options: dict[str, Any]) -> None:
        self.host = host
        self.reply = reply
        self.record = record
        self.id = record.id
        self.cancel_reason: str | None = None
        self._wake: asyncio.Future[None] | None = None
        modalities = options.get("output_modalities") or host.config["output_modalities"]
        self.text_only = modalities == ["text"]
        out = host.config["audio"]["output"]
        self.format_type: str = out["format"]["type"]
        self.voice: str = out["voice"]
        self.output: list[dict[str, Any]] = []

    def cancel(self, reason: str) -> None:
        """Stop generating now (`turn_detected` or `client_cancelled`); run() finishes up."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _pause(self, delay: float) -> None:
        """Sleep that a cancel cuts short, without creating a task per chunk."""
        loop = asyncio.get_running_loop()
        self._wake = wake = loop.create_future()
        handle = loop.call_later(delay, _resolve, wake)
        try:
            await wake
        finally:
            handle.cancel()

    def _response_obj(self, status: str, usage: dict[str, Any] | None) -> dict[str, Any]:
        details: dict[str, Any] | None = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": self.cancel_reason}
        elif status == "incomplete":
            details = {"type": "incomplete", "reason": "max_output_tokens"}
        elif status == "failed":
            details = {"type": "failed", "error": {"type": "server_error",
                                                   "code": "server_error"}}
        return {"object": "realtime.response", "id": self.id, "status": status,
                "status_details": details, "output": list(self.output),
                "conversation_id": self.host.conversation_id,
                "output_modalities": ["text"] if self.text_only else ["audio"],
                "max_output_tokens": self.host.config.get("max_output_tokens", "inf"),
                "audio": {"output": {"format": self.host.config["audio"]["output"]["format"],
                                     "voice": self.voice}},
                "usage": usage, "metadata": None}

    async def run(self) -> None:
        emit = self.host.emit
        await emit(event("response.created", response=self._response_obj("in_progress", None)))
        if self.reply.wav is not None or self.reply.transcript:
            await self._message_item(len(self.output))
        if self.reply.tool_call is not None and self.cancel_reason is None:
            await self._function_call_item(len(self.output))
        status = "cancelled" if self.cancel_reason else self.reply.status
        self.record.status = status
        self.record.reason = self.cancel_reason
        self.record.done_at = time.time()
        self.host.response_finished(self)
        await emit(event("response.done", response=self._response_obj(status, self._usage())))
        await emit(event("rate_limits.updated", rate_limits=[
            {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
            {"name": "tokens", "limit": 400000, "remaining": 399000, "reset_seconds": 0.15}]))

    def _usage(self) -> dict[str, Any]:
        # Approximate token counts (the simulator has no tokenizer): 20 audio tokens/s.
        audio = self.record.audio_ms // 50
        text = max(1, len(self.record.transcript) // 4)
        return {"total_tokens": audio + text + 50, "input_tokens": 50, "output_tokens":
                audio + text,
                "input_token_details": {"text_tokens": 50, "audio_tokens": 0,
                                        "cached_tokens": 0},
                "output_token_details": {"text_tokens": text, "audio_tokens": audio}}

    async def _open_item(self, item: ConvItem, body: dict[str, Any],
                         output_index: int) -> str | None:
        """Add an output item to the conversation and announce it, as the server does:
        `response.output_item.added`, then `conversation.item.added`. Returns the
        previous item's id, which the closing events repeat."""
        item.body = body
        previous = self.host.add_item(item)
        await self.host.emit(event("response.output_item.added", response_id=self.id,
                                   output_index=output_index, item=body))
        await self.host.emit(event("conversation.item.added", previous_item_id=previous,
                                   item=body))
        return previous

    async def _close_item(self, item: ConvItem, body: dict[str, Any], output_index: int,
                          previous: str | None) -> None:
        """The item in its final form: `conversation.item.done`, then
        `response.output_item.done`."""
        item.body = body
        self.output.append(body)
        await self.host.emit(event("conversation.item.done", previous_item_id=previous,
                                   item=body))
        await self.host.emit(event("response.output_item.done", response_id=self.id,
                                   output_index=output_index, item=body))

    async def _message_item(self, output_index: int) -> None:
        if self.cancel_reason is not None:
            return
        emit = self.host.emit
        item = ConvItem(new_id("item"), "message", "assistant",
                        bytes_per_ms=bytes_per_ms(self.format_type))
        self.record.item_ids.append(item.id)
        body: dict[str, Any] = {"id": item.id, "object": "realtime.item", "type": "message",
                                "status": "in_progress", "role": "assistant", "content": []}
        previous = await self._open_item(item, body, output_index)
        ids = {"response_id": self.id, "item_id": item.id, "output_index": output_index,
               "content_index": 0}
        part_type = "text" if self.text_only else "audio"
        await emit(event("response.content_part.added", **ids,
                         part={"type": part_type, "transcript": ""} if part_type == "audio"
                         else {"type": "text", "text": ""}))
        transcript = self.reply.transcript
        if self.text_only:
            text = await self._stream_words("response.output_text.delta", ids, transcript)
            await emit(event("response.output_text.done", **ids, text=text))
            part: dict[str, Any] = {"type": "text", "text": text}
            content = {"type": "output_text", "text": text}
        else:
            total = await self._stream_audio(item, ids)
            if self.cancel_reason is not None and total:
                # Cut the transcript in proportion to the audio that was generated.
                words = transcript.split()
                keep = len(words) * item.generated_bytes // total
                transcript = " ".join(words[:keep])
                await emit(event("response.output_audio_transcript.done", **ids,
                                 transcript=transcript))
            else:
                transcript = await self._stream_words(
                    "response.output_audio_transcript.delta", ids, transcript)
                await emit(event("response.output_audio_transcript.done", **ids,
                                 transcript=transcript))
            await emit(event("response.output_audio.done", **ids))
            part = {"type": "audio", "transcript": transcript}
            content = {"type": "output_audio", "transcript": transcript}
        self.record.transcript = transcript
        await emit(event("response.content_part.done", **ids, part=part))
        body = {**body, "status": "incomplete" if self.cancel_reason else "completed",
                "content": [content]}
        await self._close_item(item, body, output_index, previous)

    async def _stream_audio(self, item: ConvItem, ids: dict[str, Any]) -> int:
        """Send the deltas, paced; returns the clip's total bytes."""
        if self.reply.wav is None:
            return 0
        audio = encoded_reply_audio(str(self.reply.wav), self.format_type, self.host.chunk_ms)
        speed = self.host.speed
        period = self.host.chunk_ms / 1000.0 / speed if speed > 0 else 0.0
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, (chunk, size) in enumerate(zip(audio.chunks, audio.sizes, strict=True)):
            if i:
                delay = start + i * period - loop.time()
                if delay > 0:
                    await self._pause(delay)
                else:
                    await asyncio.sleep(0)  # let client events (cancel) in between chunks
            if self.cancel_reason is not None:
                break
            if i == 0:
                self.host.audio_started()
            item.generated_bytes += size
            self.record.audio_ms = item.generated_ms
            await self.host.emit(event("response.output_audio.delta", **ids, delta=chunk),
                                 nbytes=size)
        return audio.total_bytes

    async def _stream_words(self, type_: str, ids: dict[str, Any], text: str) -> str:
        words = text.split(" ")
        for i, word in enumerate(words):
            await self.host.emit(event(type_, **ids, delta=word if i == 0 else " " + word))
        return text

    async def _function_call_item(self, output_index: int) -> None:
        assert self.reply.tool_call is not None
        name, args = self.reply.tool_call
        arguments = orjson.dumps(args).decode()
        emit = self.host.emit
        item = ConvItem(new_id("item"), "function_call")
        call_id = new_id("call")
        self.record.item_ids.append(item.id)
        self.record.tool_call = (name, args)
        body: dict[str, Any] = {"id": item.id, "object": "realtime.item",
                                "type": "function_call", "status": "in_progress",
                                "name": name, "call_id": call_id, "arguments": ""}
        previous = await self._open_item(item, body, output_index)
        ids = {"response_id": self.id, "item_id": item.id, "output_index": output_index,
               "call_id": call_id}
        await emit(event("response.function_call_arguments.delta", **ids, delta=arguments))
        await emit(event("response.function_call_arguments.done", **ids, name=name,
                         arguments=arguments))
        body = {**body, "status": "completed", "arguments": arguments}
        await self._close_item(item, body, output_index, previous)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
