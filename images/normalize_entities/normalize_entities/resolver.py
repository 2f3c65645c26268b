"""Resolving one date or time entity: the grammar of `spoken` first, then dateparser."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dateparser.date import DateDataParser
from dateparser.languages.loader import default_loader

from . import spoken

# Relative phrases in entity tasks ("tomorrow", "five pm") are about the future: a payment
# date or a callback time.
_SETTINGS = {
    "TIMEZONE": "UTC",
    "RETURN_AS_TIMEZONE_AWARE": True,
    "PREFER_DATES_FROM": "future",
    "RETURN_TIME_AS_PERIOD": True,
}
DATE_TYPES = ("date", "time")

RESOLVED = "resolved"
UNPARSEABLE = "unparseable"
"""Neither the grammar nor dateparser found a date or time in the text."""
IMPRECISE = "imprecise"
"""A date or time was found, but not at the entity type's precision (a month for a date, a
day for a time, a time of day for a date); the guess is in `reason`, not in `value`."""
SKIPPED = "skipped"
"""Not a date or time entity: left as tagged."""

Resolution = tuple[str, str, str]
"""(value, status, reason) of one entity."""


class Resolver:
    """Resolves date/time text relative to a reference time in a zone: spoken forms of the
    demo languages with `spoken`, anything else with dateparser."""

    def __init__(self) -> None:
        self._known: dict[str, bool] = {}

    def resolve(
        self, kind: str, text: str, language: str, zone: ZoneInfo, reftime: datetime
    ) -> Resolution:
        """(value, status, reason) of one entity of type `kind` ("date" or "time")."""
        said = spoken.parse(text)
        if said is not None:
            return _from_spoken(kind, said, reftime.astimezone(zone))
        return self._with_dateparser(kind, text, language, zone, reftime)

    def _with_dateparser(
        self, kind: str, text: str, language: str, zone: ZoneInfo, reftime: datetime
    ) -> Resolution:
        # English too: callers mix English numbers and times into other languages.
        languages = [language, "en"] if self._knows(language) and language != "en" else ["en"]
        settings = {
            **_SETTINGS,
            "RELATIVE_BASE": reftime.astimezone(zone).replace(tzinfo=None),
            "TIMEZONE": zone.key,
        }
        found = DateDataParser(languages=languages, settings=settings).get_date_data(text)
        moment, period = found.date_obj, found.period
        if moment is None:
            return "", UNPARSEABLE, f"found no {kind} in {text!r}"
        if period == "time":
            moment = _time_of_day_after(text, languages, settings, moment, reftime)
        moment = moment.astimezone(zone)
        if kind == "date":
            if period in ("day", "week"):
                return moment.date().isoformat(), RESOLVED, ""
            if period == "time":
                return "", IMPRECISE, f"a time of day ({moment.isoformat()}), not a date"
            return "", IMPRECISE, f"only a {period} ({moment.date().isoformat()})"
        if period == "time":
            return moment.replace(microsecond=0).isoformat(), RESOLVED, ""
        return "", IMPRECISE, f"no time of day, only a {period} ({moment.date().isoformat()})"

    def _knows(self, language: str) -> bool:
        if language not in self._known:
            try:
                default_loader.get_locale_map(languages=[language])
                self._known[language] = True
            except ValueError:
                self._known[language] = False
        return self._known[language]

    @property
    def unsupported_languages(self) -> list[str]:
        """Languages dateparser does not know, among those it was asked about."""
        return sorted(k for k, known in self._known.items() if not known)


def _from_spoken(kind: str, said: spoken.Spoken, reference: datetime) -> Resolution:
    """An entity's resolution from what the grammar read, said at `reference` (local)."""
    day = said.day
    if kind == "date":
        if day is None:
            moment = spoken.moment_of(said, reference)
            shown = moment.isoformat() if moment else "?"
            return "", IMPRECISE, f"a time of day ({shown}), not a date"
        if day.month_only:
            return "", IMPRECISE, "only a month (next month)"
        found = spoken.day_of(day, reference.date())
        if found is None:
            return "", UNPARSEABLE, f"next month has no day {day.day_of_month}"
        return found.isoformat(), RESOLVED, ""
    if said.time is None:
        assert day is not None  # the grammar reads a day, a time or both
        found = spoken.day_of(day, reference.date())
        shown = found.isoformat() if found else "next month"
        return "", IMPRECISE, f"no time of day, only a day ({shown})"
    moment = spoken.moment_of(said, reference)
    if moment is None:
        return "", UNPARSEABLE, f"next month has no day {day.day_of_month if day else '?'}"
    return moment.replace(microsecond=0).isoformat(), RESOLVED, ""


def _time_of_day_after(
    text: str,
    languages: list[str],
    settings: dict[str, Any],
    future: datetime,
    reftime: datetime,
) -> datetime:
    """A time of day resolved to its first occurrence at or after the reference time.

    dateparser's "future" preference is wrong for times of day: with TIMEZONE set it
    compares them with the reference time as if both were UTC, so "five pm" said at 12:31
    in Kolkata (07:01 UTC) lands a day late (scrapinghub/dateparser#1092), and rolling past
    a month's end keeps the month ("ten am" said on 31 October gives 1 October, #1202). Its
    "current_period" parse places the time on the reference day correctly; when the two
    disagree, that one moved on by whole days until it is not before the reference time.
    """
    current = DateDataParser(
        languages=languages, settings={**settings, "PREFER_DATES_FROM": "current_period"}
    ).get_date_data(text)
    moment = current.date_obj
    if moment is None or current.period != "time" or moment == future:
        return future
    while moment < reftime:
        moment += timedelta(days=1)
    return moment
