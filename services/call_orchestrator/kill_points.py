"""Named steps at which a crash-recovery test can make this process die, at that exact step.

`ORCHESTRATOR_KILL_AT=bridge.claimed` (comma-separated names) makes the process SIGKILL
itself the first time it reaches `kill_point("bridge.claimed")`: no cleanup, no finally
blocks, no flushed buffers, like a power cut or the kernel's OOM killer. Tests use it to
prove that every step of a call's job is recovered by another process (docs: README,
"Crash recovery"). Unset (production), a kill point is one set lookup.

The points, in the order a new call passes them:
- `consumer.read`: stream entries read, their jobs not yet enqueued (nothing acknowledged);
- `bridge.started`: a CALL_RECEIVED job running, nothing claimed yet;
- `bridge.claimed`: the dialog claim taken, the POST not yet sent;
- `bridge.posted`: the Calls API answered the POST, the dialog id not yet recorded.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

KILL_POINTS = frozenset({"consumer.read", "bridge.started", "bridge.claimed", "bridge.posted"})


def _armed() -> frozenset[str]:
    names = frozenset(n.strip() for n in os.environ.get("ORCHESTRATOR_KILL_AT", "").split(",")
                      if n.strip())
    unknown = names - KILL_POINTS
    if unknown:
        raise ValueError(f"ORCHESTRATOR_KILL_AT names unknown kill points {sorted(unknown)}; "
                         f"known: {sorted(KILL_POINTS)}")
    return names


_ARMED = _armed()


def warn_if_armed() -> None:
    """Say so at start: an armed process is a test, and must never be a production one."""
    if _ARMED:
        log.warning("kill points armed: this process will SIGKILL itself at %s (a test "
                    "setting; never set ORCHESTRATOR_KILL_AT in production)", sorted(_ARMED))


def kill_point(name: str) -> None:
    """Die here, at once, when this point is armed (see the module docstring)."""
    if name in _ARMED:
        log.warning("kill point %s reached: SIGKILL", name)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)
