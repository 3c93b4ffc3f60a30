"""Barge-in: the caller speaks over the agent, and the agent stops where the caller stopped
hearing it.

References: OpenAI's Realtime conversations guide on interrupting and truncating a response
(https://platform.openai.com/docs/guides/realtime-conversations) and the
`conversation.item.truncate` client event
(https://platform.openai.com/docs/api-reference/realtime-client-events/conversation/item/truncate).
The model generates audio faster than real time, so on `input_audio_buffer.speech_started`:
1. stop playback at Infobip (`{"action":"clear"}`, docs/protocol-assumptions.md) and drop
   our own queued frames (`CallerOutput.clear`);
2. truncate the assistant item at what was actually heard,
   `min(ms sent of that item - what the receiver may still hold (<= allowance), ms generated)`,
   skipped when nothing was heard or playback had already finished (`truncate_point`);
3. drop any later deltas of the cancelled response (`response_id`).
With `interrupt_response: true` the server cancels the response itself but never truncates;
a profile with `interrupt_response: false` wants the agent to talk through, so nothing is
done then.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass

from callbridge.services.media_gateway import metrics
from callbridge.services.media_gateway.caller_output import CallerOutput
from callbridge.services.media_gateway.model_link import ModelLink
from callbridge.shared import realtime_events as rt
from callbridge.shared.audio.playout import AgentItem, truncate_point

log = logging.getLogger(__name__)

_ITEMS_KEPT = 16
_CANCELLED_KEPT = 16


@dataclass(frozen=True)
class Outcome:
    cleared: bool
    item_id: str | None = None
    audio_end_ms: int | None = None


class BargeIn:
    """Per-call agent-item ledger plus the barge-in procedure."""

    def __init__(self, output: CallerOutput, link: ModelLink, allowance_ms: int,
                 enabled: bool = True) -> None:
        self.output = output
        self.playout = output.playout
        self.link = link
        self.allowance_ms = allowance_ms
        self.enabled = enabled
        self.items: OrderedDict[str, AgentItem] = OrderedDict()
        self._cancelled: deque[str] = deque(maxlen=_CANCELLED_KEPT)
        self.barge_ins = 0
        self.truncates = 0

    def item(self, item_id: str, response_id: str) -> AgentItem:
        """The ledger entry for an item, created on its first delta."""
        entry = self.items.get(item_id)
        if entry is None:
            entry = self.items[item_id] = AgentItem(item_id, response_id)
            if len(self.items) > _ITEMS_KEPT:
                self.items.popitem(last=False)
        return entry

    def is_cancelled(self, response_id: str | None) -> bool:
        return response_id is not None and response_id in self._cancelled

    def cancel(self, response_id: str | None) -> None:
        if response_id and response_id not in self._cancelled:
            self._cancelled.append(response_id)

    def on_speech_started(self, now: float, active_response: str | None) -> Outcome:
        if not self.enabled:
            return Outcome(cleared=False)
        # The server cancels the in-progress response: whatever it still sends is stale.
        self.cancel(active_response)
        p = self.playout
        if not p.playing(now):
            return Outcome(cleared=False)  # the agent was quiet: nothing to interrupt
        target = p.last_item if p.last_was_audio and p.lead(now) > 0 else None
        if target is None and p.queued_bytes:
            target = next((i for i in self.items if p.has_queued(i)), None)
        audio_end: int | None = None
        if target is not None:
            entry = self.items.get(target)
            generated = entry.generated_ms if entry else 0.0
            unplayed = p.unplayed_ms(target, now)
            finished = bool(entry and entry.audio_done and not p.has_queued(target)
                            and unplayed <= 0.0)
            audio_end = truncate_point(p.sent_ms(target), unplayed, generated,
                                       self.allowance_ms, finished)
            if entry is not None:
                self.cancel(entry.response_id)
        # Stop the receiver first, then forget what we had queued for it.
        self.output.clear(now)
        self.barge_ins += 1
        metrics.BARGE_INS.inc()
        if target is not None and audio_end is not None:
            if self.link.send(rt.item_truncate(target, audio_end)):
                self.truncates += 1
                metrics.TRUNCATES.inc()
        log.info("barge-in: cleared playout, item %s truncated at %s ms", target, audio_end)
        return Outcome(cleared=True, item_id=target, audio_end_ms=audio_end)
