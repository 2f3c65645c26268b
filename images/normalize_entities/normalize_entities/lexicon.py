"""The words of spoken dates and times in the demo languages: English, Hindi, Tamil, Telugu.

Each phrase (one or more words, normalized by `normalize`) stands for one `Token`. The
tables hold the forms callers use, formal and colloquial: numbers, ordinal days with their
date word (पांच तारीख, ஐந்தாம் தேதி, ఐదో తారీఖు), clock words (बजे, மணிக்கு, గంటలకు),
parts of the day, relative days, weekdays and the small words around them. Tamil and
Telugu ordinals and "and a half" forms are built from the cardinals by their spelling rules.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    """What a word means to the grammar in `spoken`."""

    NUM = "number"
    """A cardinal: value is the number."""
    ORD = "ordinal"
    """An ordinal day of the month: value is the day."""
    ORD_SUFFIX = "ordinal suffix"
    """After digits: 5th, 5ஆம், 5వ."""
    DATE_WORD = "date word"
    """तारीख, தேதி, తారీఖు: after a number, it is a day of the month."""
    HOUR_WORD = "hour word"
    """o'clock, बजे, மணிக்கு, గంటలకు: after a number, it is a clock time."""
    MINUTE_WORD = "minute word"
    AMPM = "am/pm"
    """value: 0 for am, 12 for pm."""
    CLOCK = "clock"
    """A clock time in one word (5:30, ஐந்தரை, ढाई): value is minutes after 00:00 (or
    after 12:00: am or pm is left to the words around it)."""
    CLOCK_24 = "24-hour clock"
    """17:30, 09:15: value is minutes after 00:00."""
    SHIFT = "shift"
    """half past, quarter to, साढ़े, सवा, पौने: value is minutes added to the next hour."""
    DAY = "day"
    """today, tomorrow, ...: value is days from today."""
    TONIGHT = "tonight"
    NEXT = "next"
    WEEK_WORD = "week"
    MONTH_WORD = "month"
    WEEKDAY = "weekday"
    """value: 0 for Monday."""
    PART = "part of day"
    """value: an index into PARTS."""
    DAYS_UNIT = "days"
    """After a number: in that many days."""
    WEEKS_UNIT = "weeks"
    HOURS_UNIT = "hours"
    MODIFIER = "modifier"
    """after, around, at, by, बाद, மேல, తర్వాత: the next (or previous) number is an hour."""
    FILLER = "filler"
    """the, of, on, को, की, அன்று, నాడు: no meaning of their own here."""


@dataclass(frozen=True)
class Token:
    kind: Kind
    value: int = 0


MORNING, NOON, AFTERNOON, LUNCH, AFTER_LUNCH, EVENING, NIGHT = range(7)
PARTS = ("morning", "noon", "afternoon", "lunch", "after lunch", "evening", "night")
PART_HOURS = (9, 12, 14, 13, 14, 18, 20)
"""The hour a part of the day alone stands for (a callback "in the evening" is at 18:00)."""

_NUKTA = "\u093c"
_CHANDRABINDU, _ANUSVARA = "\u0901", "\u0902"
_JOINERS = dict.fromkeys(map(ord, "\u200c\u200d"))
_AM_PM = re.compile(r"\b([ap])\.\s?m\b\.?")


def normalize(text: str) -> str:
    """Lower case, NFC; Devanagari without nukta and with anusvara for chandrabindu (both
    spellings of हफ़्ते / हफ्ते, पाँच / पांच are common); "p.m." as "pm"; one apostrophe."""
    text = unicodedata.normalize("NFC", text).lower().translate(_JOINERS)
    text = text.replace(_NUKTA, "").replace(_CHANDRABINDU, _ANUSVARA)
    text = text.replace("\u2019", "'").replace("`", "'")
    return _AM_PM.sub(r"\1m", text)


def _numbers(table: Mapping[int, tuple[str, ...]]) -> dict[str, Token]:
    return {word: Token(Kind.NUM, n) for n, words in table.items() for word in words}


def _ordinals(table: Mapping[int, tuple[str, ...]]) -> dict[str, Token]:
    return {word: Token(Kind.ORD, n) for n, words in table.items() for word in words}


def _words(kind: Kind, value: int, *words: str) -> dict[str, Token]:
    return dict.fromkeys(words, Token(kind, value))


# English.

_EN_NUMBERS = {
    1: ("one", "a", "an"),
    2: ("two",),
    3: ("three",),
    4: ("four",),
    5: ("five",),
    6: ("six",),
    7: ("seven",),
    8: ("eight",),
    9: ("nine",),
    10: ("ten",),
    11: ("eleven",),
    12: ("twelve",),
    13: ("thirteen",),
    14: ("fourteen",),
    15: ("fifteen",),
    16: ("sixteen",),
    17: ("seventeen",),
    18: ("eighteen",),
    19: ("nineteen",),
    20: ("twenty",),
    30: ("thirty",),
    40: ("forty",),
    50: ("fifty",),
}
_EN_ORDINALS = {
    1: ("first",),
    2: ("second",),
    3: ("third",),
    4: ("fourth",),
    5: ("fifth",),
    6: ("sixth",),
    7: ("seventh",),
    8: ("eighth",),
    9: ("ninth",),
    10: ("tenth",),
    11: ("eleventh",),
    12: ("twelfth",),
    13: ("thirteenth",),
    14: ("fourteenth",),
    15: ("fifteenth",),
    16: ("sixteenth",),
    17: ("seventeenth",),
    18: ("eighteenth",),
    19: ("nineteenth",),
    20: ("twentieth",),
    30: ("thirtieth",),
}
_EN_WEEKDAYS = (
    ("monday", "mon"),
    ("tuesday", "tue", "tues"),
    ("wednesday", "wed"),
    ("thursday", "thu", "thur", "thurs"),
    ("friday", "fri"),
    ("saturday", "sat"),
    ("sunday", "sun"),
)
ENGLISH: dict[str, Token] = {
    **_numbers(_EN_NUMBERS),
    **_ordinals(_EN_ORDINALS),
    **_words(Kind.ORD_SUFFIX, 0, "st", "nd", "rd", "th"),
    **_words(Kind.HOUR_WORD, 0, "o'clock", "oclock", "o clock", "hrs"),
    **_words(Kind.MINUTE_WORD, 0, "minutes", "minute", "mins", "min"),
    **_words(Kind.AMPM, 0, "am"),
    **_words(Kind.AMPM, 12, "pm"),
    **_words(Kind.SHIFT, 30, "half past", "half"),
    **_words(Kind.SHIFT, 15, "quarter past", "a quarter past"),
    **_words(Kind.SHIFT, -15, "quarter to", "a quarter to"),
    **_words(Kind.DAY, 0, "today"),
    **_words(Kind.DAY, 1, "tomorrow", "tmrw", "tomorow", "tommorow"),
    **_words(Kind.DAY, 2, "day after tomorrow", "the day after tomorrow"),
    **_words(Kind.TONIGHT, 0, "tonight"),
    **_words(Kind.NEXT, 0, "next", "coming", "upcoming"),
    **_words(Kind.WEEK_WORD, 0, "week"),
    **_words(Kind.MONTH_WORD, 0, "month"),
    **{w: Token(Kind.WEEKDAY, n) for n, words in enumerate(_EN_WEEKDAYS) for w in words},
    **_words(Kind.PART, MORNING, "morning"),
    **_words(Kind.PART, NOON, "noon", "midday"),
    **_words(Kind.PART, AFTERNOON, "afternoon"),
    **_words(Kind.PART, LUNCH, "lunch", "lunchtime", "lunch time"),
    **_words(Kind.PART, AFTER_LUNCH, "after lunch"),
    **_words(Kind.PART, EVENING, "evening"),
    **_words(Kind.PART, NIGHT, "night"),
    **_words(Kind.DAYS_UNIT, 0, "days", "day"),
    **_words(Kind.WEEKS_UNIT, 0, "weeks"),
    **_words(Kind.HOURS_UNIT, 0, "hours", "hour"),
    **_words(Kind.MODIFIER, 0, "after", "around", "about", "at", "by", "before", "till", "until"),
    **_words(
        Kind.FILLER,
        0,
        "the",
        "of",
        "on",
        "in",
        "this",
        "within",
        "later",
        "from now",
        "itself",
        "only",
        "sharp",
    ),
}
""""a week" reads as one week: "a" is the number one (in a week, a day later)."""


# Hindi (Devanagari, normalized: no nukta, anusvara).

_HI_NUMBERS = {
    1: ("एक",),
    2: ("दो",),
    3: ("तीन",),
    4: ("चार",),
    5: ("पांच",),
    6: ("छह", "छः", "छे", "छै"),
    7: ("सात",),
    8: ("आठ",),
    9: ("नौ",),
    10: ("दस",),
    11: ("ग्यारह",),
    12: ("बारह",),
    13: ("तेरह",),
    14: ("चौदह",),
    15: ("पंद्रह", "पन्द्रह"),
    16: ("सोलह",),
    17: ("सत्रह",),
    18: ("अठारह",),
    19: ("उन्नीस",),
    20: ("बीस",),
    21: ("इक्कीस",),
    22: ("बाईस",),
    23: ("तेईस",),
    24: ("चौबीस",),
    25: ("पच्चीस",),
    26: ("छब्बीस",),
    27: ("सत्ताईस",),
    28: ("अट्ठाईस", "अठाईस"),
    29: ("उनतीस", "उन्तीस"),
    30: ("तीस",),
    31: ("इकतीस", "इकत्तीस"),
    35: ("पैंतीस",),
    40: ("चालीस",),
    45: ("पैंतालीस",),
    50: ("पचास",),
}
_HI_WEEKDAYS = (
    ("सोमवार",),
    ("मंगलवार",),
    ("बुधवार",),
    ("गुरुवार", "बृहस्पतिवार", "वीरवार"),
    ("शुक्रवार",),
    ("शनिवार",),
    ("रविवार", "इतवार"),
)
HINDI: dict[str, Token] = {
    **_numbers(_HI_NUMBERS),
    **_words(Kind.ORD, 1, "पहली", "पहला"),
    **_words(Kind.DATE_WORD, 0, "तारीख", "तारिख", "तारीक", "तिथि"),
    **_words(Kind.HOUR_WORD, 0, "बजे", "बजकर", "बज", "बजें"),
    **_words(Kind.MINUTE_WORD, 0, "मिनट"),
    **_words(Kind.SHIFT, 30, "साढ़े", "साढे"),
    **_words(Kind.SHIFT, 15, "सवा"),
    **_words(Kind.SHIFT, -15, "पौने"),
    **_words(Kind.CLOCK, 90, "डेढ़", "डेढ"),
    **_words(Kind.CLOCK, 150, "ढाई"),
    **_words(Kind.DAY, 0, "आज"),
    # कल is yesterday or tomorrow, परसों the day before yesterday or after tomorrow:
    # entity tasks are payment dates and callback times, so the future.
    **_words(Kind.DAY, 1, "कल"),
    **_words(Kind.DAY, 2, "परसों", "परसो"),
    **_words(Kind.NEXT, 0, "अगले", "अगला", "अगली", "आने वाले", "आने वाला"),
    **_words(Kind.WEEK_WORD, 0, "हफ्ते", "हफ्ता", "सप्ताह"),
    **_words(Kind.MONTH_WORD, 0, "महीने", "महीना", "माह"),
    **{w: Token(Kind.WEEKDAY, n) for n, words in enumerate(_HI_WEEKDAYS) for w in words},
    **_words(Kind.PART, MORNING, "सुबह", "सवेरे"),
    **_words(Kind.PART, AFTERNOON, "दोपहर"),
    **_words(Kind.PART, LUNCH, "लंच"),
    **_words(Kind.PART, AFTER_LUNCH, "लंच के बाद"),
    **_words(Kind.PART, EVENING, "शाम"),
    **_words(Kind.PART, NIGHT, "रात"),
    **_words(Kind.DAYS_UNIT, 0, "दिन", "दिनों"),
    **_words(Kind.HOURS_UNIT, 0, "घंटे", "घंटा", "घंटों"),
    **_words(Kind.MODIFIER, 0, "बाद", "आसपास", "करीब", "लगभग", "पहले"),
    **_words(Kind.FILLER, 0, "को", "की", "के", "का", "तक", "में", "से", "ही"),
}


# Tamil.

_TA_NUMBERS = {
    1: ("ஒன்று", "ஒண்ணு", "ஒன்னு"),
    2: ("இரண்டு", "ரெண்டு"),
    3: ("மூன்று", "மூணு"),
    4: ("நான்கு", "நாலு"),
    5: ("ஐந்து", "அஞ்சு"),
    6: ("ஆறு",),
    7: ("ஏழு",),
    8: ("எட்டு",),
    9: ("ஒன்பது",),
    10: ("பத்து",),
    11: ("பதினொன்று", "பதினொண்ணு"),
    12: ("பன்னிரண்டு", "பன்னெண்டு"),
    13: ("பதின்மூன்று", "பதிமூன்று", "பதிமூணு"),
    14: ("பதினான்கு", "பதினாலு"),
    15: ("பதினைந்து", "பதினஞ்சு"),
    16: ("பதினாறு",),
    17: ("பதினேழு",),
    18: ("பதினெட்டு",),
    19: ("பத்தொன்பது",),
    20: ("இருபது",),
    21: ("இருபத்தொன்று",),
    22: ("இருபத்திரண்டு",),
    23: ("இருபத்துமூன்று",),
    24: ("இருபத்துநான்கு",),
    25: ("இருபத்தைந்து",),
    26: ("இருபத்தாறு",),
    27: ("இருபத்தேழு",),
    28: ("இருபத்தெட்டு",),
    29: ("இருபத்தொன்பது",),
    30: ("முப்பது",),
    31: ("முப்பத்தொன்று",),
}
_TA_TENS = {20: ("இருபத்தி", "இருபத்து"), 30: ("முப்பத்தி", "முப்பத்து")}
"""The tens before a separate unit word: இருபத்தி ஐந்து (25)."""
_TA_U = "\u0bc1"


def _ta_ordinals() -> dict[int, tuple[str, ...]]:
    """ஐந்து -> ஐந்தாம்: the final u-sign becomes -ஆம்."""
    return {
        n: tuple(w[:-1] + "\u0bbe\u0bae\u0bcd" for w in words if w.endswith(_TA_U))
        for n, words in _TA_NUMBERS.items()
    }


def _ta_halves() -> dict[str, Token]:
    """ஐந்து -> ஐந்தரை (half past five), for the hours."""
    return {
        w[:-1] + "\u0bb0\u0bc8": Token(Kind.CLOCK, n * 60 + 30)
        for n, words in _TA_NUMBERS.items()
        if n <= 12
        for w in words
        if w.endswith(_TA_U)
    }


_TA_WEEKDAYS = (
    ("திங்கள்", "திங்கட்கிழமை", "திங்கள்கிழமை", "திங்கக்கிழமை"),
    ("செவ்வாய்", "செவ்வாய்க்கிழமை"),
    ("புதன்", "புதன்கிழமை"),
    ("வியாழன்", "வியாழக்கிழமை"),
    ("வெள்ளி", "வெள்ளிக்கிழமை"),
    ("சனி", "சனிக்கிழமை"),
    ("ஞாயிறு", "ஞாயிற்றுக்கிழமை", "ஞாயித்துக்கிழமை"),
)
TAMIL: dict[str, Token] = {
    **_numbers(_TA_NUMBERS),
    **_numbers(_TA_TENS),
    **_ordinals(_ta_ordinals()),
    **_ta_halves(),
    **_words(Kind.ORD, 1, "முதல்"),
    **_words(Kind.ORD_SUFFIX, 0, "ஆம்", "ம்", "வது", "ஆவது"),
    **_words(Kind.DATE_WORD, 0, "தேதி", "தேதிக்கு", "தேதியன்று", "தேதியில்", "தேதில", "தேதிக்குள்"),
    **_words(Kind.HOUR_WORD, 0, "மணி", "மணிக்கு", "மணிக்குள்", "மணியளவில்", "மணிக்கு மேல", "மணிக்கு மேல்"),
    **_words(Kind.MINUTE_WORD, 0, "நிமிடம்", "நிமிஷம்"),
    **_words(Kind.DAY, 0, "இன்னைக்கு", "இன்று", "இன்றைக்கு", "இன்னிக்கு"),
    **_words(Kind.DAY, 1, "நாளைக்கு", "நாளை", "நாளைக்கி"),
    **_words(Kind.DAY, 2, "நாளை மறுநாள்", "நாளன்னைக்கு", "நாளை மறுதினம்", "நாளைமறுநாள்"),
    **_words(Kind.NEXT, 0, "அடுத்த", "வர்ற", "வரும்", "வருகிற"),
    **_words(Kind.WEEK_WORD, 0, "வாரம்", "வாரத்துல", "வாரத்தில்"),
    **_words(Kind.MONTH_WORD, 0, "மாசம்", "மாதம்", "மாசத்துல", "மாதத்தில்"),
    **{w: Token(Kind.WEEKDAY, n) for n, words in enumerate(_TA_WEEKDAYS) for w in words},
    **_words(Kind.PART, MORNING, "காலை", "காலையில்", "காலையில", "காலைல"),
    **_words(Kind.PART, AFTERNOON, "மதியம்", "மதியத்துக்கு", "மத்தியானம்"),
    **_words(Kind.PART, EVENING, "சாயங்காலம்", "சாயந்திரம்", "மாலை", "மாலையில்"),
    **_words(Kind.PART, NIGHT, "இரவு", "ராத்திரி", "ராத்திரிக்கு", "இரவில்"),
    **_words(Kind.DAYS_UNIT, 0, "நாள்", "நாள்ல", "நாளில்", "நாட்களில்", "நாட்கள்", "நாள்ள"),
    **_words(Kind.HOURS_UNIT, 0, "மணி நேரத்துல", "மணி நேரத்தில்", "மணிநேரத்தில்"),
    **_words(Kind.MODIFIER, 0, "மேல", "மேலே", "மேல்", "அப்புறம்", "பிறகு", "கழிச்சு", "கழித்து", "சுமார்"),
    **_words(Kind.FILLER, 0, "அன்று", "அன்னைக்கு", "அன்னிக்கு", "குள்ள", "அளவில்"),
}


# Telugu.

_TE_NUMBERS = {
    1: ("ఒకటి", "ఒక", "ఒంటి"),
    2: ("రెండు",),
    3: ("మూడు",),
    4: ("నాలుగు",),
    5: ("ఐదు", "అయిదు"),
    6: ("ఆరు",),
    7: ("ఏడు",),
    8: ("ఎనిమిది",),
    9: ("తొమ్మిది",),
    10: ("పది",),
    11: ("పదకొండు",),
    12: ("పన్నెండు",),
    13: ("పదమూడు",),
    14: ("పద్నాలుగు",),
    15: ("పదిహేను",),
    16: ("పదహారు",),
    17: ("పదిహేడు",),
    18: ("పద్దెనిమిది",),
    19: ("పంతొమ్మిది",),
    20: ("ఇరవై",),
    30: ("ముప్పై",),
}
_TE_VOWEL_SIGNS = ("\u0c41", "\u0c3f")
"""The final u- and i-signs that ordinals replace: ఐదు -> ఐదో, పది -> పదో."""


def _te_ordinals() -> dict[int, tuple[str, ...]]:
    """ఐదు -> ఐదో and ఐదవ; ఇరవై -> ఇరవయ్యో."""
    found: dict[int, tuple[str, ...]] = {
        20: ("ఇరవయ్యో", "ఇరవైయో", "ఇరవయో", "ఇరవైయవ", "ఇరవయ్యవ"),
        30: ("ముప్పయ్యో", "ముప్పైయో", "ముప్పయో", "ముప్పైయవ"),
        1: ("మొదటి",),
    }
    for n, words in _TE_NUMBERS.items():
        stems = [w[:-1] for w in words if w.endswith(_TE_VOWEL_SIGNS)]
        forms = [s + "\u0c4b" for s in stems] + [s + "\u0c35" for s in stems]
        found[n] = (*found.get(n, ()), *forms)
    return found


def _te_halves() -> dict[str, Token]:
    """ఐదు -> ఐదున్నర (half past five), for the hours."""
    return {
        w + "\u0c28\u0c4d\u0c28\u0c30": Token(Kind.CLOCK, n * 60 + 30)
        for n, words in _TE_NUMBERS.items()
        if n <= 12
        for w in words
    }


_TE_WEEKDAYS = (
    ("సోమవారం",),
    ("మంగళవారం",),
    ("బుధవారం",),
    ("గురువారం",),
    ("శుక్రవారం",),
    ("శనివారం",),
    ("ఆదివారం",),
)
TELUGU: dict[str, Token] = {
    **_numbers(_TE_NUMBERS),
    **_ordinals(_te_ordinals()),
    **_te_halves(),
    **_words(Kind.ORD_SUFFIX, 0, "వ", "వది", "వ తేదీ"),
    **_words(Kind.DATE_WORD, 0, "తారీఖు", "తారీకు", "తేదీ", "తేదీన", "తారీఖున", "తారీఖుకి", "తారీఖుకు"),
    **_words(Kind.HOUR_WORD, 0, "గంటలకు", "గంటలకి", "గంటకు", "గంటకి", "గంటలు", "గంటల", "గంట"),
    **_words(Kind.MINUTE_WORD, 0, "నిమిషాలు", "నిమిషాలకు", "నిమిషం"),
    **_words(Kind.DAY, 0, "ఈరోజు", "ఈ రోజు", "ఇవాళ", "ఇవ్వాళ", "నేడు"),
    **_words(Kind.DAY, 1, "రేపు"),
    **_words(Kind.DAY, 2, "ఎల్లుండి"),
    **_words(Kind.NEXT, 0, "వచ్చే", "రాబోయే"),
    **_words(Kind.WEEK_WORD, 0, "వారం", "వారంలో"),
    **_words(Kind.MONTH_WORD, 0, "నెల", "నెలలో"),
    **{w: Token(Kind.WEEKDAY, n) for n, words in enumerate(_TE_WEEKDAYS) for w in words},
    **_words(Kind.PART, MORNING, "ఉదయం", "పొద్దున", "పొద్దున్న"),
    **_words(Kind.PART, AFTERNOON, "మధ్యాహ్నం"),
    **_words(Kind.PART, EVENING, "సాయంత్రం"),
    **_words(Kind.PART, NIGHT, "రాత్రి"),
    **_words(Kind.DAYS_UNIT, 0, "రోజు", "రోజుల్లో", "రోజుల", "రోజులు", "రోజులలో"),
    **_words(Kind.HOURS_UNIT, 0, "గంటల్లో", "గంటలలో"),
    **_words(Kind.MODIFIER, 0, "తర్వాత", "తరువాత", "ప్రాంతంలో", "సుమారు", "దాకా", "లోపు"),
    **_words(Kind.FILLER, 0, "నాడు", "న", "కి", "కు"),
}


def _lexicon() -> dict[str, Token]:
    merged: dict[str, Token] = {}
    # The scripts do not share words, so one table serves every language: callers mix
    # English words (and digits) into the others.
    for table in (ENGLISH, HINDI, TAMIL, TELUGU):
        for phrase, token in table.items():
            merged[" ".join(normalize(phrase).split())] = token
    return merged


LEXICON = _lexicon()
MAX_PHRASE_WORDS = max(len(phrase.split()) for phrase in LEXICON)
