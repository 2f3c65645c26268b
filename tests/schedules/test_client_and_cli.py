"""The Python clients' schedule calls and the `skit-pipelines schedules` commands."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from skit_pipelines_cli.main import main
from skit_pipelines_client import AsyncPipelinesClient, PipelinesClient, RPCError, Schedule

from .conftest import ScheduleService


async def test_sync_and_async_clients_manage_schedules(
    schedule_service: ScheduleService,
) -> None:
    def sync_calls() -> tuple[Schedule, list[str], int]:
        with PipelinesClient(schedule_service.address) as client:
            created = client.create_schedule(
                "typed",
                {"greeting": "hi"},
                cron="0 6 * * 1",
                time_zone="Europe/Berlin",
                schedule_id="weekly",
                overlap_policy="cancel_oldest",
            )
            runs = client.backfill_schedule(
                "weekly", datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 15, tzinfo=UTC)
            )
            with pytest.raises(RPCError) as error:
                client.create_schedule("typed", {"greeting": "hi"}, interval_seconds=-1)
            assert [v.field for v in error.value.violations] == [
                "schedule.trigger.interval.seconds"
            ]
            client.pause_schedule("weekly", "holiday")
            return (
                created,
                [r.labels["skit-schedule-tick"] for r in runs],
                len(client.list_schedules()),
            )

    created, ticks, listed = await asyncio.to_thread(sync_calls)
    assert created.name == "schedules/weekly" and created.overlap_policy == "CANCEL_OLDEST"
    assert created.cron == "0 6 * * 1" and len(created.upcoming_tick_times) == 5
    assert all(t.weekday() == 0 for t in created.upcoming_tick_times)
    assert ticks == ["2025-01-06T05:00:00Z", "2025-01-13T05:00:00Z"]  # 06:00 CET
    assert listed == 1
    async with AsyncPipelinesClient(schedule_service.address) as client:
        paused = await client.get_schedule("weekly")
        assert paused.paused and paused.pause_reason == "holiday"
        resumed = await client.resume_schedule("schedules/weekly")
        assert not resumed.paused and resumed.next_tick_time is not None
        await client.delete_schedule("weekly")
        assert await client.list_schedules() == []


async def test_cli_create_prints_the_next_five_ticks(
    schedule_service: ScheduleService, capsys: pytest.CaptureFixture[str]
) -> None:
    def cli(*argv: str) -> tuple[int, str]:
        code = main(["--server", schedule_service.address, *argv])
        return code, capsys.readouterr().out

    code, text = await asyncio.to_thread(
        cli,
        "schedules",
        "create",
        "typed",
        "--param",
        "greeting=hi",
        "--cron",
        "30 2 * * *",
        "--time-zone",
        "Europe/Berlin",
        "--schedule-id",
        "nightly",
    )
    assert code == 0, text
    assert "schedules/nightly" in text and "next ticks:" in text
    assert text.split("next ticks:")[1].count(":30:00Z") == 5
    code, text = await asyncio.to_thread(cli, "schedules", "pause", "nightly", "--reason", "x")
    assert code == 0 and "PAUSED: x" in text
    code, text = await asyncio.to_thread(cli, "schedules", "list")
    assert code == 0 and "schedules/nightly" in text and "PAUSED" in text
    code, text = await asyncio.to_thread(
        cli,
        "schedules",
        "backfill",
        "nightly",
        "--start",
        "2025-01-01T00:00:00Z",
        "--end",
        "2025-01-03T00:00:00Z",
    )
    assert code == 0 and text.count("runs/") == 2, text
    code, text = await asyncio.to_thread(cli, "schedules", "resume", "nightly")
    assert code == 0 and "ACTIVE" in text
    code, text = await asyncio.to_thread(cli, "schedules", "get", "nightly")
    assert code == 0 and "runs made:    2" in text
    code, text = await asyncio.to_thread(
        cli, "schedules", "update", "nightly", "--every", "3600", "--max-concurrency", "3"
    )
    assert code == 0 and "every 3600s" in text and "at most 3" in text, text
    code, text = await asyncio.to_thread(cli, "schedules", "delete", "nightly")
    assert code == 0
