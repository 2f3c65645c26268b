"""skit_components.db helpers shared by the components."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from skit_components.db import utc_day_bounds


def test_whole_local_days_become_utc_bounds_even_across_a_dst_change():
    new_york = ZoneInfo("America/New_York")
    # 2026-03-08 has 23 hours in New York (clocks go forward at 02:00).
    start, end = utc_day_bounds(date(2026, 3, 8), date(2026, 3, 8), new_york)
    assert start == datetime(2026, 3, 8, 5, 0, tzinfo=UTC)
    assert end == datetime(2026, 3, 9, 4, 0, tzinfo=UTC)
    assert (end - start).total_seconds() == 23 * 3600


def test_an_open_side_stays_open():
    kolkata = ZoneInfo("Asia/Kolkata")
    assert utc_day_bounds(None, None, kolkata) == (None, None)
    start, end = utc_day_bounds(date(2026, 10, 5), None, kolkata)
    assert start == datetime(2026, 10, 4, 18, 30, tzinfo=UTC) and end is None
