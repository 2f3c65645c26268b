"""The `schedules` commands: one function per subcommand (dispatched by commands.py)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TextIO

from google.protobuf import json_format

from skit_pipelines_cli.exits import EXIT_OK
from skit_pipelines_client import PipelinesClient, Schedule


def _when(value: datetime | None) -> str:
    return (
        value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if value else "-"
    )


def _trigger(schedule: Schedule) -> str:
    if schedule.cron:
        return f"cron {schedule.cron!r} {schedule.time_zone or 'UTC'}"
    return f"every {schedule.interval_seconds}s"


def describe_schedule(schedule: Schedule) -> list[str]:
    """A schedule for people: what, when, its policies, its last and next ticks."""
    state = f"PAUSED: {schedule.pause_reason or '-'}" if schedule.paused else "ACTIVE"
    lines = [
        f"{schedule.name}  {schedule.pipeline}  {_trigger(schedule)}",
        f"  state:        {state}",
        f"  concurrency:  at most {schedule.max_concurrency}, then {schedule.overlap_policy}",
        f"  catch-up:     {schedule.catchup_policy}",
        f"  last tick:    {_when(schedule.last_tick_time)}  last run: {schedule.last_run or '-'}",
        f"  next tick:    {_when(schedule.next_tick_time)}",
        f"  runs made:    {schedule.runs_created}, ticks skipped: {schedule.ticks_skipped},"
        f" runs cancelled: {schedule.runs_cancelled}",
    ]
    if schedule.last_skip_reason:
        lines.append(f"  last skip:    {schedule.last_skip_reason}")
    if schedule.upcoming_tick_times:
        lines.append("  next ticks:")
        lines.extend(f"    {_when(tick)}" for tick in schedule.upcoming_tick_times)
    return lines


def _show(
    args: argparse.Namespace, out: TextIO, schedules: list[Schedule], lines: list[str]
) -> int:
    if args.output == "json":
        data = [json_format.MessageToDict(s.raw) for s in schedules]
        print(json.dumps(data[0] if len(data) == 1 and args.single else data, indent=2), file=out)
    else:
        print("\n".join(lines), file=out)
    return EXIT_OK


def schedules_create(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`schedules create`: prints the schedule with its next ticks, so a cron typo shows."""
    schedule = client.create_schedule(
        args.pipeline,
        dict(args.params),
        cron=args.cron or "",
        time_zone=args.time_zone or "",
        interval_seconds=args.every or 0,
        labels=dict(args.labels),
        start_time=args.start_time,
        end_time=args.end_time,
        max_concurrency=args.max_concurrency,
        overlap_policy=args.overlap,
        catchup_policy=args.catchup,
        schedule_id=args.schedule_id,
        request_id=args.request_id,
    )
    args.single = True
    return _show(args, out, [schedule], describe_schedule(schedule))


def schedules_get(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    schedule = client.get_schedule(args.name)
    args.single = True
    return _show(args, out, [schedule], describe_schedule(schedule))


def schedules_list(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    schedules = client.list_schedules()
    args.single = False
    lines = [
        f"{s.name}  {s.pipeline}  {_trigger(s)}  {'PAUSED' if s.paused else 'ACTIVE'}"
        f"  next {_when(s.next_tick_time)}"
        for s in schedules
    ]
    return _show(args, out, schedules, lines)


def schedules_pause(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    schedule = client.pause_schedule(args.name, args.reason)
    args.single = True
    return _show(args, out, [schedule], describe_schedule(schedule))


def schedules_resume(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    schedule = client.resume_schedule(args.name)
    args.single = True
    return _show(args, out, [schedule], describe_schedule(schedule))


def schedules_delete(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    client.delete_schedule(args.name)
    if args.output != "json":
        print(f"deleted {args.name}", file=out)
    return EXIT_OK


def schedules_backfill(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`schedules backfill`: the run of each tick in [--start, --end), one per line."""
    runs = client.backfill_schedule(args.name, args.start, args.end)
    if args.output == "json":
        print(json.dumps([json_format.MessageToDict(r.raw) for r in runs], indent=2), file=out)
    else:
        for run in runs:
            print(f"{run.labels.get('skit-schedule-tick', '')}  {run.name}  {run.state}", file=out)
    return EXIT_OK


def schedules_update(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`schedules update`: changes only what the flags name."""
    fields = []
    if args.cron or args.every:
        fields.append("trigger")
    for name in ("max_concurrency", "overlap_policy", "catchup_policy"):
        if getattr(args, name):
            fields.append(name)
    schedule = client.update_schedule(
        args.name,
        fields,
        cron=args.cron or "",
        time_zone=args.time_zone or "",
        interval_seconds=args.every or 0,
        max_concurrency=args.max_concurrency or 0,
        overlap_policy=args.overlap_policy or "",
        catchup_policy=args.catchup_policy or "",
    )
    args.single = True
    return _show(args, out, [schedule], describe_schedule(schedule))
