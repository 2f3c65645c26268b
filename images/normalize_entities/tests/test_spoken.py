"""The grammar of spoken dates and times: every phrase the demo callers say, in every demo
language, means what the demo generator meant by it; and the forms around them (clock
times, parts of the day, relative dates) in each language."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from skit_components.loader import import_component
from skit_demo import vocabulary

FOLDER = Path(__file__).resolve().parents[1]
normalize_entities = import_component(FOLDER)

KOLKATA = ZoneInfo("Asia/Kolkata")
WEDNESDAY = datetime(2026, 10, 14, 11, 30, tzinfo=KOLKATA)
"""The reference time of the table tests: Wednesday 14 October 2026, 11:30 in Kolkata."""
REFERENCE_TIMES = (
    WEDNESDAY,
    datetime(2026, 10, 31, 18, 45, tzinfo=KOLKATA),  # a month's last evening, a Saturday
    datetime(2026, 11, 1, 8, 5, tzinfo=KOLKATA),  # a Sunday morning
    datetime(2026, 12, 31, 16, 59, 59, tzinfo=KOLKATA),  # the year's last afternoon
    datetime(2026, 10, 20, 9, 0, tzinfo=KOLKATA),  # the 20th itself
)


def resolve(kind: str, text: str, reference: datetime = WEDNESDAY) -> tuple[str, str, str]:
    return normalize_entities.Resolver().resolve(kind, text, "en", KOLKATA, reference)


# What the demo generator means (service/skit_demo/calls.py), restated independently.


def meant_date(today: date, how: str, n: int) -> date:
    if how == "days":
        return today + timedelta(days=n)
    if how == "weekday":
        return today + timedelta(days=(n - today.weekday() - 1) % 7 + 1)
    first_of_next = (today.replace(day=28) + timedelta(days=4)).replace(day=1)
    if how == "day_of_month" and n > today.day:
        return today.replace(day=n)
    return first_of_next.replace(day=n)


def meant_time(reference: datetime, hour: int) -> datetime:
    day = reference.date() if hour > reference.hour else reference.date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, tzinfo=KOLKATA)


def words_before(language: str, slot: str) -> set[str]:
    """The words callers say right before a date or time: an annotator's span that
    overreaches takes them in ("by tomorrow", "शायद कल")."""
    found = {""}
    for templates in vocabulary.CALLER_SAYS[language].values():
        for template in templates:
            said = template.split()
            if slot in said and said.index(slot) > 0:
                found.add(said[said.index(slot) - 1] + " ")
    return found


DEMO_LANGUAGES = sorted(vocabulary.DATE_PHRASES)


def test_the_demo_speaks_the_languages_the_grammar_reads() -> None:
    assert DEMO_LANGUAGES == ["en", "hi", "ta", "te"]
    assert sorted(vocabulary.TIME_PHRASES) == DEMO_LANGUAGES


@pytest.mark.parametrize("language", DEMO_LANGUAGES)
@pytest.mark.parametrize("reference", REFERENCE_TIMES, ids=lambda r: r.strftime("%a %d %b %H:%M"))
def test_every_demo_date_phrase_resolves_to_what_the_caller_meant(language, reference):
    for before in words_before(language, "{date}"):
        for phrase, how, n in vocabulary.DATE_PHRASES[language]:
            value, status, reason = resolve("date", before + phrase, reference)
            assert status == "resolved", (before + phrase, reason)
            assert value == meant_date(reference.date(), how, n).isoformat(), before + phrase


@pytest.mark.parametrize("language", DEMO_LANGUAGES)
@pytest.mark.parametrize("reference", REFERENCE_TIMES, ids=lambda r: r.strftime("%a %d %b %H:%M"))
def test_every_demo_time_phrase_resolves_to_what_the_caller_meant(language, reference):
    for before in words_before(language, "{time}"):
        for phrase, hour in vocabulary.TIME_PHRASES[language]:
            value, status, reason = resolve("time", before + phrase, reference)
            assert status == "resolved", (before + phrase, reason)
            assert value == meant_time(reference, hour).isoformat(), before + phrase


@pytest.mark.parametrize(
    ("text", "value"),
    [
        # Clock times, said at 11:30.
        ("5 pm", "2026-10-14T17:00:00+05:30"),
        ("5pm", "2026-10-14T17:00:00+05:30"),
        ("5 p.m.", "2026-10-14T17:00:00+05:30"),
        ("17:30", "2026-10-14T17:30:00+05:30"),
        ("09:15", "2026-10-15T09:15:00+05:30"),
        ("5:30 pm", "2026-10-14T17:30:00+05:30"),
        ("half past five", "2026-10-14T17:30:00+05:30"),
        ("quarter past ten", "2026-10-15T10:15:00+05:30"),
        ("quarter to six", "2026-10-14T17:45:00+05:30"),
        ("five thirty", "2026-10-14T17:30:00+05:30"),
        ("three o'clock", "2026-10-14T15:00:00+05:30"),
        ("at 10", "2026-10-15T10:00:00+05:30"),
        ("12 pm", "2026-10-14T12:00:00+05:30"),
        ("12 am", "2026-10-15T00:00:00+05:30"),
        ("in 2 hours", "2026-10-14T13:30:00+05:30"),
        # Parts of the day, alone and with an hour or a day.
        ("in the morning", "2026-10-15T09:00:00+05:30"),
        ("noon", "2026-10-14T12:00:00+05:30"),
        ("afternoon", "2026-10-14T14:00:00+05:30"),
        ("after lunch", "2026-10-14T14:00:00+05:30"),
        ("this evening", "2026-10-14T18:00:00+05:30"),
        ("tonight", "2026-10-14T20:00:00+05:30"),
        ("9 at night", "2026-10-14T21:00:00+05:30"),
        ("8 in the morning", "2026-10-15T08:00:00+05:30"),
        ("tomorrow morning", "2026-10-15T09:00:00+05:30"),
        ("tomorrow at 5", "2026-10-15T17:00:00+05:30"),
        ("tomorrow 10", "2026-10-15T10:00:00+05:30"),
        ("5 pm tomorrow", "2026-10-15T17:00:00+05:30"),
        ("friday evening 6:30", "2026-10-16T18:30:00+05:30"),
        # Hindi.
        ("शाम पांच बजे", "2026-10-14T17:00:00+05:30"),
        ("5 बजे", "2026-10-14T17:00:00+05:30"),
        ("साढ़े पांच बजे", "2026-10-14T17:30:00+05:30"),
        ("सवा दस बजे", "2026-10-15T10:15:00+05:30"),
        ("पौने छह बजे", "2026-10-14T17:45:00+05:30"),
        ("ढाई बजे", "2026-10-14T14:30:00+05:30"),
        ("पांच बजकर तीस मिनट", "2026-10-14T17:30:00+05:30"),
        ("सुबह", "2026-10-15T09:00:00+05:30"),
        ("आज रात", "2026-10-14T20:00:00+05:30"),
        ("रात दो बजे", "2026-10-15T02:00:00+05:30"),
        ("कल शाम पाँच बजे", "2026-10-15T17:00:00+05:30"),
        ("लंच के बाद", "2026-10-14T14:00:00+05:30"),
        # Tamil.
        ("சாயங்காலம் ஐந்து மணிக்கு", "2026-10-14T17:00:00+05:30"),
        ("5 மணிக்கு", "2026-10-14T17:00:00+05:30"),
        ("ஐந்தரை மணிக்கு", "2026-10-14T17:30:00+05:30"),
        ("காலையில", "2026-10-15T09:00:00+05:30"),
        ("இன்னைக்கு ராத்திரி", "2026-10-14T20:00:00+05:30"),
        ("நாளைக்கு காலை பத்து மணிக்கு", "2026-10-15T10:00:00+05:30"),
        # Telugu.
        ("సాయంత్రం ఐదు గంటలకు", "2026-10-14T17:00:00+05:30"),
        ("5 గంటలకు", "2026-10-14T17:00:00+05:30"),
        ("ఐదున్నర గంటలకు", "2026-10-14T17:30:00+05:30"),
        ("ఒంటి గంటకు", "2026-10-14T13:00:00+05:30"),
        ("పొద్దున", "2026-10-15T09:00:00+05:30"),
        ("ఈ రోజు రాత్రి", "2026-10-14T20:00:00+05:30"),
        ("రేపు సాయంత్రం ఐదు గంటలకు", "2026-10-15T17:00:00+05:30"),
    ],
)
def test_clock_times_and_parts_of_the_day(text: str, value: str) -> None:
    assert resolve("time", text) == (value, "resolved", "")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        # Said on Wednesday 14 October.
        ("today", "2026-10-14"),
        ("tomorrow", "2026-10-15"),
        ("day after tomorrow", "2026-10-16"),
        ("next monday", "2026-10-19"),
        ("wednesday", "2026-10-21"),
        ("in 3 days", "2026-10-17"),
        ("after 3 days", "2026-10-17"),
        ("3 days later", "2026-10-17"),
        ("in a week", "2026-10-21"),
        ("in two weeks", "2026-10-28"),
        ("next week", "2026-10-21"),
        ("the 5th", "2026-11-05"),
        ("twenty fifth", "2026-10-25"),
        ("the 14th", "2026-11-14"),
        ("first of next month", "2026-11-01"),
        ("tomorrow 5 pm", "2026-10-15"),
        # Month names and numeric dates are dateparser's.
        ("15 October", "2026-10-15"),
        ("2026-11-05", "2026-11-05"),
        # Hindi.
        ("कल", "2026-10-15"),
        ("परसों", "2026-10-16"),
        ("3 दिन में", "2026-10-17"),
        ("तीन दिन बाद", "2026-10-17"),
        ("अगले सोमवार", "2026-10-19"),
        ("अगले हफ़्ते", "2026-10-21"),
        ("पहली तारीख", "2026-11-01"),
        ("५ तारीख", "2026-11-05"),
        ("अगले महीने की दस तारीख", "2026-11-10"),
        # Tamil.
        ("நாளைக்கு", "2026-10-15"),
        ("நாளை மறுநாள்", "2026-10-16"),
        ("மூணு நாள்ல", "2026-10-17"),
        ("அடுத்த திங்கட்கிழமை", "2026-10-19"),
        ("5ஆம் தேதி", "2026-11-05"),
        ("இருபத்தி ஐந்தாம் தேதி", "2026-10-25"),
        # Telugu.
        ("రేపు", "2026-10-15"),
        ("ఎల్లుండి", "2026-10-16"),
        ("మూడు రోజుల్లో", "2026-10-17"),
        ("వచ్చే సోమవారం", "2026-10-19"),
        ("5వ తేదీ", "2026-11-05"),
        ("ఇరవై ఐదో తారీఖు", "2026-10-25"),
        ("వచ్చే నెల ఒకటో తారీఖు", "2026-11-01"),
    ],
)
def test_relative_dates_weekdays_and_days_of_the_month(text: str, value: str) -> None:
    assert resolve("date", text) == (value, "resolved", "")


@pytest.mark.parametrize(
    ("kind", "text", "status", "reason"),
    [
        ("time", "tomorrow", "imprecise", "no time of day, only a day (2026-10-15)"),
        ("time", "अगले सोमवार", "imprecise", "no time of day, only a day (2026-10-19)"),
        ("date", "five pm", "imprecise", "a time of day (2026-10-14T17:00:00+05:30), not a date"),
        ("date", "next month", "imprecise", "only a month (next month)"),
        ("date", "31st of next month", "unparseable", "next month has no day 31"),
        ("date", "o'clock", "unparseable", 'found no date in "o\'clock"'),
        ("date", "तारीख", "unparseable", "found no date in 'तारीख'"),
        ("date", "whenever you like", "unparseable", "found no date in 'whenever you like'"),
    ],
)
def test_what_is_not_a_date_or_time_at_the_types_precision_stays_unresolved(
    kind: str, text: str, status: str, reason: str
) -> None:
    assert resolve(kind, text) == ("", status, reason)


def test_a_bare_hour_is_the_next_such_time_in_calling_hours() -> None:
    # 1-7 are afternoon or evening hours, 8-11 morning ones; past today's, tomorrow's.
    assert resolve("time", "at 3")[0] == "2026-10-14T15:00:00+05:30"
    assert resolve("time", "at 8")[0] == "2026-10-15T08:00:00+05:30"
    evening = datetime(2026, 10, 14, 19, 10, tzinfo=KOLKATA)
    assert resolve("time", "after six", evening)[0] == "2026-10-15T18:00:00+05:30"


def test_words_before_the_first_known_one_are_the_annotators_overreach() -> None:
    assert resolve("date", "pay next week")[0] == "2026-10-21"
    assert resolve("time", "हम्म छह बजे के बाद")[0] == "2026-10-14T18:00:00+05:30"


def test_an_unknown_word_inside_the_span_leaves_it_to_dateparser() -> None:
    # The grammar would read "5 pm" and lose the month: dateparser reads it all.
    assert normalize_entities.parse("15 October 5 pm") is None
    assert resolve("time", "15 October 5 pm")[0] == "2026-10-15T17:00:00+05:30"
    assert normalize_entities.parse("tomorrow 5 pm") is not None
