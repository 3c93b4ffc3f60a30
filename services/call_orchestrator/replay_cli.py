"""The rich output of `callbridge replay` and `callbridge dead-letters` (tables, progress).

Kept apart from cli.py so `callbridge --help` never imports rich or Redis clients.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from . import dead_letters, replay

Confirm = Callable[[str, bool], bool]


def _when(ms: str) -> str:
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime(
            "%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    except (ValueError, OSError):
        return ms or "-"


def _console() -> Console:
    return Console(stderr=False, highlight=False)


async def run_replay(redis: Any, args: argparse.Namespace, confirm: Confirm) -> int:
    console = _console()
    if args.force and not args.call_id:
        console.print("[red]--force needs --call-id: the guards are bypassed for one call "
                      "only.[/red]")
        return 2
    try:
        since = replay.parse_time(args.since) if args.since else None
        until = replay.parse_time(args.until) if args.until else None
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    entries = await replay.select(redis, from_id=args.from_id, to_id=args.to_id, since=since,
                                  until=until, call_id=args.call_id, types=args.types)
    if args.dry_run:
        table = Table(title=f"{len(entries)} event(s) would be replayed")
        for col in ("stream id", "received", "type", "call id", "job id"):
            table.add_column(col)
        for e in entries:
            table.add_row(e.stream_id, _when(e.received_at), e.type, e.call_id or "-",
                          e.job_id)
        console.print(table)
        return 0
    if not entries:
        console.print("No events match; nothing replayed.")
        return 0
    if args.force:
        console.print(
            f"[bold red]FORCE: clearing every idempotency guard of call {args.call_id} "
            f"({len(entries)} event(s)); a NEW dialog WILL be requested if the call is still "
            "up.[/bold red]")
        if not confirm(f"Clear the guards of call {args.call_id}?", args.yes):
            console.print("Not confirmed (use --yes); nothing replayed.")
            return 1
        await replay.clear_guards(redis, args.call_id, entries)
    with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("replay", total=len(entries))
        summary = await replay.replay(redis, entries,
                                      progress=lambda _: progress.advance(task))
    console.print(f"enqueued {summary.enqueued} / skipped as duplicates "
                  f"{summary.duplicates} / ignored (types we do not act on) {summary.ignored} / "
                  f"failed {summary.failed}")
    for err in summary.errors[:20]:
        console.print(f"[red]{err}[/red]")
    return 1 if summary.failed else 0


async def run_dl_list(redis: Any, args: argparse.Namespace) -> int:
    letters = await dead_letters.list_all(redis)
    if args.json:
        sys.stdout.write(orjson.dumps([d.as_dict() for d in letters]).decode() + "\n")
        return 0
    table = Table(title=f"{len(letters)} dead letter(s)")
    for col in ("id", "at", "job", "call id", "attempts", "error"):
        table.add_column(col, overflow="fold")
    for d in letters:
        table.add_row(d.id, _when(d.at), d.job, d.call_id or "-", d.attempts, d.error)
    _console().print(table)
    return 0


async def run_dl_replay(redis: Any, args: argparse.Namespace) -> int:
    console = _console()
    if not args.ids and not args.all:
        console.print("[red]Name dead-letter ids or pass --all (see `dead-letters list`).[/red]")
        return 2
    letters = await (dead_letters.list_all(redis) if args.all
                     else dead_letters.get(redis, args.ids))
    ok = failed = 0
    for letter in letters:
        if await dead_letters.replay(redis, letter):
            ok += 1
        else:
            failed += 1
            console.print(f"[red]{letter.id}: not re-enqueued (job {letter.job_id} is still "
                          "queued or the letter lacks job data)[/red]")
    missing = 0 if args.all else len(set(args.ids) - {d.id for d in letters})
    console.print(f"re-enqueued {ok} / failed {failed} / not found {missing}")
    return 0 if not failed and not missing else 1


async def run_dl_purge(redis: Any, args: argparse.Namespace, confirm: Confirm) -> int:
    console = _console()
    try:
        older = replay.parse_duration(args.older_than) if args.older_than else None
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    what = f"older than {args.older_than}" if older is not None else "ALL"
    if not confirm(f"Delete {what} dead letters?", args.yes):
        return 1
    count = await dead_letters.purge(redis, older)
    console.print(f"purged {count} dead letter(s)")
    return 0
