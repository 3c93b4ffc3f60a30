"""One row per scenario, the table the README quotes, and `--json`.

Columns (defined precisely in README.md): scenario, calls/events driven, faults injected,
lost, duplicated, calls cut, longest caller silence (ms), recovery time (s), pass/fail.
Every number comes from Redis or the simulators' records, never from the services' logs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    scenario: str
    calls: int = 0              # simulated calls placed (or media legs opened)
    events: int = 0             # webhooks / messages driven
    faults: int = 0             # faults injected
    lost: int | None = 0        # acknowledged but missing (None: not applicable)
    duplicated: int | None = 0  # stored/bridged more than once
    cut: int | None = 0         # calls ended by something other than their script / policy
    silence_ms: float | None = None
    recovery_s: float | None = None
    passed: bool = False
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    log_dir: str = ""
    #: (phase, seconds since the scenario started): where the time went, and where a
    #: scenario that overran its budget was stuck.
    phases: list[tuple[str, float]] = field(default_factory=list)
    interrupted_in: str | None = None  # the phase the time budget cut short
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def phase(self, name: str) -> None:
        """Mark the start of a step of the scenario."""
        self.phases.append((name, round(time.monotonic() - self._t0, 1)))

    def timeline(self) -> str:
        return ", ".join(f"{name} @{t:.1f}s" for name, t in self.phases) or "no phases marked"

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record one invariant; a failed one carries its detail into the notes."""
        self.checks[name] = bool(ok)
        if not ok:
            self.notes.append(f"FAIL {name}: {detail}" if detail else f"FAIL {name}")
        return bool(ok)

    def finish(self) -> Row:
        self.passed = bool(self.checks) and all(self.checks.values())
        return self


def _num(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return str(round(value))
    return f"{value:.{digits}f}"


HEADERS = ("scenario", "calls/events", "faults", "lost", "dup", "cut", "silence ms",
           "recovery s", "result")


def table(rows: list[Row]) -> str:
    """Plain-text table (monospace), one line per scenario, then the failed checks."""
    lines = [[r.scenario, f"{r.calls}/{r.events}", str(r.faults), _num(r.lost),
              _num(r.duplicated), _num(r.cut), _num(r.silence_ms), _num(r.recovery_s, 2),
              "PASS" if r.passed else "FAIL"] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(HEADERS)]

    def fmt(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    out = [fmt(HEADERS), "  ".join("-" * w for w in widths)]
    out += [fmt(line) for line in lines]
    notes = [(r.scenario, n) for r in rows for n in r.notes]
    if notes:
        out.append("")
        out += [f"{name}: {note}" for name, note in notes]
    total = sum(r.duration_s for r in rows)
    out.append("")
    out.append(f"{sum(r.passed for r in rows)} of {len(rows)} scenarios held their "
               f"invariants ({total:.0f} s)")
    return "\n".join(out)


def to_json(rows: list[Row]) -> str:
    data: list[dict[str, Any]] = [{k: v for k, v in asdict(r).items() if not k.startswith("_")}
                                  for r in rows]
    return json.dumps({"rows": data, "passed": all(r.passed for r in rows)}, indent=2)
