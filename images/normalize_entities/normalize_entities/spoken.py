"""Spoken dates and times of the demo languages, read by a small grammar over `lexicon`.

What callers say when asked for a payment date or a callback time: relative days (today,
tomorrow, day after tomorrow, in 3 days, next week), weekdays (friday, next monday), days
of the month (the fifth, पांच तारीख, first of next month), clock times (5 pm, 17:30, half
past five, three o'clock, शाम पांच बजे, ஐந்தரை மணிக்கு, ఐదు గంటలకు) and parts of the day
(in the morning, शाम को, after lunch), alone or together (tomorrow evening, कल सुबह दस
बजे). dateparser reads none of the Indian forms and few of the vague English ones.

The whole span must be read: words the grammar does not know are allowed only before the
first word it knows (an annotator's span often takes in the word before: "by tomorrow",
"maybe five pm", "पर आज"). Anything else unknown, and the caller may have said something
this grammar would misread ("15 October 5 pm"), so `parse` gives up and leaves the text to
dateparser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta

from .lexicon import (
    LEXICON,
    MAX_PHRASE_WORDS,
    MORNING,
    NIGHT,
    PART_HOURS,
    PARTS,
    Kind,
    Token,
    normalize,
)

_WORD = re.compile(r"\d{1,2}[:.]\d{2}(?!\d)|[^\s,;!?()\[\]\"]+")
_CLOCK = re.compile(r"^(\d{1,2})[:.](\d{2})$")
_DIGITS_THEN_WORD = re.compile(r"^(\d+)(\D.*)$")
_TENS = (20, 30, 40, 50)
_AMBIGUOUS_PM = range(1, 8)
"""A bare hour from 1 to 7 is in the afternoon or evening: nobody asks for a call at
3 am ("three o'clock", "after six"); 8 to 11 are morning hours, 12 is noon."""
_AFTER_MIDNIGHT = range(1, 5)
"""Hours "at night" that are after midnight (रात दो बजे), so on the next day."""
_24_HOUR = -1
"""Meridiem of a time written on the 24-hour clock (17:30, 09:15)."""
_PM_PARTS = frozenset(i for i, name in enumerate(PARTS) if name not in ("morning", "night"))


@dataclass(frozen=True)
class Day:
    """A day as said: `offset` days from today, the next `weekday` (0 = Monday) after
    today, or `day_of_month` (the next one after today, or in next month with
    `months_ahead`); with `day_of_month` None and `months_ahead` 1, only "next month"."""

    offset: int | None = None
    weekday: int | None = None
    day_of_month: int | None = None
    months_ahead: int = 0

    @property
    def month_only(self) -> bool:
        return self.offset is None and self.weekday is None and self.day_of_month is None


@dataclass(frozen=True)
class Time:
    """A time of day as said: an `hour` (with `minute`), a `part` of the day, or both; or
    `in_minutes` from the reference time ("in 2 hours")."""

    hour: int | None = None
    minute: int = 0
    meridiem: int | None = None
    """0 (am), 12 (pm), _24_HOUR, or None when not said."""
    part: int | None = None
    """An index into lexicon.PARTS."""
    in_minutes: int | None = None


@dataclass(frozen=True)
class Spoken:
    """What a span says: a day, a time of day, or both."""

    day: Day | None
    time: Time | None


class _Unreadable(Exception):
    """The span is not one this grammar reads whole."""


def words(text: str) -> list[str]:
    """The span's words, normalized: "5pm" and "5ஆம்" split after the digits, hyphenated
    numbers ("twenty-five") split, clock times ("17:30") kept whole."""
    found = []
    for raw in _WORD.findall(normalize(text)):
        word = raw.strip(".-'")
        if not word:
            continue
        if _CLOCK.match(word):
            found.append(word)
            continue
        split = _DIGITS_THEN_WORD.match(word)
        parts = [split.group(1), split.group(2).lstrip("-.")] if split else [word]
        found.extend(p for part in parts for p in part.split("-") if p)
    return found


def tokens(text: str) -> list[Token | None]:
    """Each phrase of the span as a Token (the longest phrase first); None for a word the
    lexicon does not know."""
    said = words(text)
    found: list[Token | None] = []
    i = 0
    while i < len(said):
        for size in range(min(MAX_PHRASE_WORDS, len(said) - i), 0, -1):
            token = LEXICON.get(" ".join(said[i : i + size]))
            if token is not None:
                found.append(token)
                i += size
                break
        else:
            found.append(_number_or_clock(said[i]))
            i += 1
    return found


def _number_or_clock(word: str) -> Token | None:
    clock = _CLOCK.match(word)
    if clock:
        hour, minute = int(clock.group(1)), int(clock.group(2))
        if hour <= 23 and minute <= 59:
            # 17:30 and 09:15 are on the 24-hour clock; 5:30 is not said to be.
            on_24 = hour > 12 or clock.group(1).startswith("0")
            return Token(Kind.CLOCK_24 if on_24 else Kind.CLOCK, hour * 60 + minute)
        return None
    if word.isdecimal() and len(word) <= 2:
        return Token(Kind.NUM, int(word))
    return None


def parse(text: str) -> Spoken | None:
    """The day and time a span says, or None when the grammar cannot read it whole."""
    found = tokens(text)
    # Words before the first known one: the annotator's span took them in.
    while found and found[0] is None:
        found.pop(0)
    if not found or any(token is None for token in found):
        return None
    try:
        return _Reader(_merge_numbers([t for t in found if t is not None])).read()
    except _Unreadable:
        return None


def _merge_numbers(found: list[Token]) -> list[Token]:
    """twenty five -> 25, twenty fifth -> 25th, 5 th -> 5th."""
    merged: list[Token] = []
    for token in found:
        last = merged[-1] if merged else None
        if last is not None and last.kind is Kind.NUM:
            if last.value in _TENS and token.kind in (Kind.NUM, Kind.ORD) and token.value < 10:
                merged[-1] = Token(token.kind, last.value + token.value)
                continue
            if token.kind is Kind.ORD_SUFFIX:
                merged[-1] = Token(Kind.ORD, last.value)
                continue
        merged.append(token)
    return merged


class _Reader:
    """Reads a span's tokens left to right into at most one day and one time."""

    def __init__(self, found: list[Token]) -> None:
        self._tokens = found
        self._i = 0
        self._said_day: Day | None = None
        self._said_time: Time | None = None
        self._part: int | None = None
        self._next_month = False
        self._hour_expected = False
        """A modifier (at, after, around) came before: a bare number is an hour."""

    def read(self) -> Spoken | None:
        while self._i < len(self._tokens):
            token = self._take()
            handler = getattr(self, f"_on_{token.kind.name.lower()}", None)
            if handler is None:
                raise _Unreadable(token.kind.value)
            handler(token)
        return self._spoken()

    def _spoken(self) -> Spoken | None:
        day, moment = self._said_day, self._said_time
        if self._next_month:
            if day is None:
                day = Day(months_ahead=1)
            elif day.day_of_month is not None:
                day = replace(day, months_ahead=1)
            else:
                raise _Unreadable("next month with a day that is not a day of the month")
        if self._part is not None:
            moment = replace(moment or Time(), part=self._part)
        if day is None and moment is None:
            return None
        return Spoken(day, moment)

    # Moving along.

    def _take(self) -> Token:
        token = self._tokens[self._i]
        self._i += 1
        return token

    def _peek(self, *kinds: Kind, skip_fillers: bool = False) -> Token | None:
        """The next token if it is of one of `kinds` (fillers skipped when asked)."""
        i = self._i
        while skip_fillers and i < len(self._tokens) and self._tokens[i].kind is Kind.FILLER:
            i += 1
        if i < len(self._tokens) and self._tokens[i].kind in kinds:
            return self._tokens[i]
        return None

    def _followed_by(self, kind: Kind) -> bool:
        """Whether the token after the next one is of `kind`."""
        return self._i + 1 < len(self._tokens) and self._tokens[self._i + 1].kind is kind

    def _set_day(self, day: Day) -> None:
        if self._said_day is not None and self._said_day != day:
            raise _Unreadable("two days")
        self._said_day = day

    def _set_time(self, hour: int, minute: int = 0, meridiem: int | None = None) -> None:
        if not (0 <= hour <= 23 and 0 <= minute <= 59):
            raise _Unreadable("not a time of day")
        if meridiem is None:
            meridiem = self._meridiem()
        moment = Time(hour=hour, minute=minute, meridiem=meridiem)
        if self._said_time is not None and self._said_time != moment:
            raise _Unreadable("two times")
        self._said_time = moment
        self._hour_expected = False

    def _meridiem(self) -> int | None:
        """An am/pm or o'clock right after the time just read (consumed)."""
        if self._peek(Kind.AMPM):
            return self._take().value
        if self._peek(Kind.HOUR_WORD):
            self._take()
            if self._peek(Kind.AMPM):
                return self._take().value
        return None

    # One method per token kind, `_on_<kind>` (`read` dispatches on the kind's name); a
    # kind without one (an am/pm, a date word alone) makes the span unreadable.

    def _on_num(self, token: Token) -> None:
        n = token.value
        if self._peek(Kind.DATE_WORD):
            self._take()
            self._set_day_of_month(n)
        elif self._peek(Kind.HOUR_WORD):
            self._take()
            minute = 0
            # पांच बजकर तीस मिनट: the minutes after the hour word.
            if self._peek(Kind.NUM) and self._followed_by(Kind.MINUTE_WORD):
                minute = self._take().value
                self._take()
            self._set_time(n, minute)
        elif self._peek(Kind.AMPM):
            self._set_time(n, 0, self._take().value)
        elif self._peek(Kind.DAYS_UNIT):
            self._take()
            self._set_day(Day(offset=n))
        elif self._peek(Kind.WEEKS_UNIT, Kind.WEEK_WORD):
            self._take()
            self._set_day(Day(offset=7 * n))
        elif self._peek(Kind.HOURS_UNIT):
            self._take()
            self._set_in_minutes(60 * n)
        elif (minutes := self._peek(Kind.NUM)) is not None and 10 <= minutes.value <= 59:
            # five thirty, 5 45
            self._take()
            self._set_time(n, minutes.value)
        elif (
            self._hour_expected
            or self._part is not None
            or self._peek(Kind.MODIFIER, skip_fillers=True)
            or (self._said_day is not None and self._said_day.day_of_month is None and n <= 12)
        ):
            # at five, after six, evening five, छह के बाद, tomorrow 10
            self._set_time(n)
        else:
            raise _Unreadable("a bare number")

    def _set_day_of_month(self, n: int) -> None:
        if not 1 <= n <= 31:
            raise _Unreadable("no such day of a month")
        self._set_day(Day(day_of_month=n))

    def _set_in_minutes(self, minutes: int) -> None:
        moment = Time(in_minutes=minutes)
        if self._said_time is not None and self._said_time != moment:
            raise _Unreadable("two times")
        self._said_time = moment

    def _on_ord(self, token: Token) -> None:
        if self._peek(Kind.DATE_WORD):
            self._take()
        self._set_day_of_month(token.value)

    def _on_clock(self, token: Token) -> None:
        self._set_time(*divmod(token.value, 60))

    def _on_clock_24(self, token: Token) -> None:
        self._set_time(*divmod(token.value, 60), meridiem=_24_HOUR)

    def _on_shift(self, token: Token) -> None:
        hour = self._peek(Kind.NUM)
        if hour is None:
            raise _Unreadable("half past what")
        self._take()
        total = hour.value * 60 + token.value
        # quarter to one: 12:45, not 00:45.
        self._set_time((total // 60) or 12, total % 60)

    def _on_day(self, token: Token) -> None:
        self._set_day(Day(offset=token.value))

    def _on_tonight(self, token: Token) -> None:
        self._set_day(Day(offset=0))
        self._set_part(NIGHT)

    def _on_next(self, token: Token) -> None:
        if self._peek(Kind.WEEK_WORD):
            self._take()
            self._set_day(Day(offset=7))
        elif self._peek(Kind.MONTH_WORD):
            self._take()
            self._next_month = True
        elif not self._peek(Kind.WEEKDAY):
            raise _Unreadable("next what")

    def _on_weekday(self, token: Token) -> None:
        self._set_day(Day(weekday=token.value))

    def _on_part(self, token: Token) -> None:
        self._set_part(token.value)

    def _set_part(self, part: int) -> None:
        if self._part is not None and self._part != part:
            raise _Unreadable("two parts of the day")
        self._part = part

    def _on_modifier(self, token: Token) -> None:
        self._hour_expected = True

    def _on_filler(self, token: Token) -> None:
        pass

    def _on_week_word(self, token: Token) -> None:
        pass  # "of the week": no day of its own

    def _on_month_word(self, token: Token) -> None:
        pass  # "the fifth of the month"


# From what was said to a date or a moment.


def day_of(day: Day, today: date) -> date | None:
    """The date a Day means, said on `today`; None for a day of the month next month
    does not have (the 31st in April) or for "next month" alone."""
    if day.offset is not None:
        return today + timedelta(days=day.offset)
    if day.weekday is not None:
        # The next one after today: "friday" said on a Friday is a week away.
        return today + timedelta(days=(day.weekday - today.weekday() - 1) % 7 + 1)
    if day.day_of_month is None:
        return None
    month = _add_months(today.replace(day=1), day.months_ahead)
    if day.months_ahead:
        return _dated(month, day.day_of_month)
    # This month's if it is still to come, else the next month that has that day.
    for ahead in range(13):
        found = _dated(_add_months(month, ahead), day.day_of_month)
        if found is not None and found > today:
            return found
    return None


def hour_of(moment: Time) -> int:
    """The hour on the 24-hour clock: as said (am, pm), by the part of the day, or for a
    bare hour by what callers mean (_AMBIGUOUS_PM)."""
    if moment.hour is None:
        return PART_HOURS[moment.part if moment.part is not None else MORNING]
    hour, meridiem, part = moment.hour, moment.meridiem, moment.part
    if meridiem == _24_HOUR or hour > 12 or hour == 0:
        return hour
    if meridiem is not None:
        return hour % 12 + meridiem
    if part == MORNING:
        return hour
    if part == NIGHT:
        if hour == 12:
            return 0
        return hour if hour in _AFTER_MIDNIGHT else hour + 12
    if part in _PM_PARTS:
        return hour if hour == 12 else hour + 12
    return hour + 12 if hour in _AMBIGUOUS_PM else hour


def moment_of(spoken: Spoken, reference: datetime) -> datetime | None:
    """The moment a span with a time of day means, said at `reference` (aware, in the
    call's zone): on the day said, else the first such time after the reference time.
    None when its day does not exist."""
    said = spoken.time
    if said is None:
        return None
    if said.in_minutes is not None:
        return (reference + timedelta(minutes=said.in_minutes)).replace(second=0, microsecond=0)
    hour = hour_of(said)
    at = time(hour, said.minute)
    zone = reference.tzinfo
    if spoken.day is not None:
        day = day_of(spoken.day, reference.date())
        if day is None:
            return None
        if said.part == NIGHT and said.hour is not None and hour in _AFTER_MIDNIGHT:
            day += timedelta(days=1)
        return datetime.combine(day, at, tzinfo=zone)
    found = datetime.combine(reference.date(), at, tzinfo=zone)
    # "At nine" said at nine is tomorrow's: a callback is never the moment of the call.
    if found <= reference:
        found = datetime.combine(reference.date() + timedelta(days=1), at, tzinfo=zone)
    return found


def _add_months(first: date, months: int) -> date:
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _dated(month: date, day: int) -> date | None:
    try:
        return month.replace(day=day)
    except ValueError:
        return None
