"""Simulated calls: a caller walks a template's state machine, ASR mishears some of it, the
SLU model mispredicts some of that, and the bot reacts to what it understood.

Everything comes from one `random.Random`, so a seed reproduces the data exactly.
"""

from __future__ import annotations

import bisect
import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

from skit_demo import vocabulary as v

IST = ZoneInfo("Asia/Kolkata")
Row: TypeAlias = tuple[Any, ...]
"""One database row, its values in the table's column order."""
"""The demo clients are Indian: call times, dates and entities are local to India."""

CALL_COLUMNS = (
    "id",
    "uuid",
    "client_id",
    "client_uuid",
    "flow_id",
    "flow_uuid",
    "flow_name",
    "flow_version",
    "template_id",
    "language",
    "asr_provider",
    "call_type",
    "call_end_status",
    "disposition",
    "previous_disposition",
    "blocking_disposition",
    "started_at",
    "duration_seconds",
    "audio_url",
    "call_url",
)
TURN_COLUMNS = (
    "id",
    "uuid",
    "call_id",
    "turn_index",
    "reftime",
    "state",
    "utterances",
    "bot_response",
    "intent",
    "intent_score",
    "slots",
    "entities",
    "audio_url",
    "asr_latency_ms",
    "slu_latency_ms",
)

MAX_TURNS = 12
AUDIO_HOST = "https://audio.skit.example"
STUDIO_HOST = "https://studio.skit.example"
_NAMESPACE = uuid.UUID("6f1c2a4e-3b7d-4c38-9a51-2f0e8d6b9c11")

# Calls per local hour of day (collection calls outside 08:00-19:00 are timing breaches),
# and per weekday (Monday first).
_HOUR_WEIGHTS = (
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0.15,
    0.5,
    1.0,
    1.2,
    1.2,
    1.2,
    0.9,
    1.1,
    1.1,
    1.1,
    1.1,
    0.8,
    0.3,
    0.15,
    0.05,
    0,
    0,
)
_WEEKDAY_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.35)
_PREVIOUS_DISPOSITIONS = (
    ("", 0.5),
    ("NO_RESPONSE", 0.2),
    ("CALLBACK", 0.15),
    ("PTP", 0.1),
    ("CALL_DROPPED", 0.05),
)
_BLOCKING = {"WRONG_NUMBER", "ALREADY_PAID", "RENEWAL_CONFIRMED"}
_SLOT_STATES_PAYMENT = {"PURPOSE", "NEGOTIATE", "CONFIRM_DATE"}
_CLIENTS = {client.id: client for client in v.CLIENTS}


@cache
def stable_uuid(kind: str, key: object) -> str:
    """A UUID that names the same demo client or flow whatever the seed."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{key}"))


def random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(frozen=True)
class SimulatedCall:
    call: Row
    """A row of CALL_COLUMNS."""
    turns: list[Row]
    """Rows of TURN_COLUMNS."""
    threat: bool
    """A bot turn carries a compliance-breach phrase."""
    off_hours: bool
    """An outbound collection call placed outside the allowed hours."""


class CallSimulator:
    """Generates `calls` calls between local midnight of `start` and `start + days`, in
    time order, ids from 1.

    Args:
        timestamp: turns an aware datetime into the value stored for the target database.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        calls: int,
        start: date,
        days: int,
        timestamp: Callable[[datetime], Any],
    ) -> None:
        self._rng = rng
        self._calls = calls
        self._start = datetime.combine(start, datetime.min.time(), IST)
        self._timestamp = timestamp
        weights = [
            _WEEKDAY_WEIGHTS[(start + timedelta(days=day)).weekday()] * hour_weight
            for day in range(days)
            for hour_weight in _HOUR_WEIGHTS
        ]
        self._hour_cumulative = _cumulative(weights)
        self._flow_cumulative = _cumulative([flow.weight for flow in v.FLOWS])
        self._turn_id = 0

    def __iter__(self) -> Iterator[SimulatedCall]:
        for call_id, started in enumerate(self._start_times(), start=1):
            yield self._call(call_id, started)

    def _start_times(self) -> Iterator[datetime]:
        """Call start times in ascending order, drawn from the hourly weights without ever
        holding them all: the order statistics of uniforms, generated one by one."""
        total = self._hour_cumulative[-1]
        remaining = 1.0
        for k in range(self._calls, 0, -1):
            remaining *= self._rng.random() ** (1.0 / k)
            position = min(1.0 - remaining, 1.0 - 1e-12) * total
            hour = bisect.bisect_right(self._hour_cumulative, position)
            below = self._hour_cumulative[hour - 1] if hour else 0.0
            width = self._hour_cumulative[hour] - below
            fraction = (position - below) / width if width else 0.0
            offset = timedelta(hours=hour + fraction)
            yield self._start + timedelta(milliseconds=round(offset.total_seconds() * 1000))

    def _call(self, call_id: int, started: datetime) -> SimulatedCall:
        rng = self._rng
        pick = rng.random() * self._flow_cumulative[-1]
        flow = v.FLOWS[bisect.bisect_right(self._flow_cumulative, pick)]
        conversation = _Conversation(rng, flow, started.astimezone(IST))
        turns_spoken = conversation.run()
        client_uuid = stable_uuid("client", flow.client_id)
        call_uuid = random_uuid(rng)
        turns = []
        for index, turn in enumerate(turns_spoken):
            self._turn_id += 1
            turn_uuid = random_uuid(rng)
            turns.append(
                (
                    self._turn_id,
                    turn_uuid,
                    call_id,
                    index,
                    self._timestamp(turn.reftime),
                    turn.state,
                    _json(turn.utterances),
                    turn.bot_response,
                    turn.intent,
                    turn.intent_score,
                    _json(turn.slots),
                    _json(turn.entities),
                    f"{AUDIO_HOST}/{client_uuid}/{call_uuid}/{turn_uuid}.wav",
                    turn.asr_latency_ms,
                    turn.slu_latency_ms,
                )
            )
        call_type = v.CALL_TYPES[flow.template_id]
        previous = ""
        if call_type == "OUTBOUND":
            previous = _weighted(rng, _PREVIOUS_DISPOSITIONS)
        disposition = conversation.disposition
        call = (
            call_id,
            call_uuid,
            flow.client_id,
            client_uuid,
            flow.id,
            stable_uuid("flow", flow.id),
            flow.name,
            flow.version,
            flow.template_id,
            flow.language,
            flow.asr_provider,
            call_type,
            conversation.end_status,
            disposition,
            previous,
            disposition if disposition in _BLOCKING else "",
            self._timestamp(started),
            round(conversation.duration_seconds(), 2),
            f"{AUDIO_HOST}/{client_uuid}/{call_uuid}.wav",
            f"{STUDIO_HOST}/clients/{flow.client_id}/calls/{call_uuid}",
        )
        local_hour = started.astimezone(IST).hour
        low, high = v.COLLECTION_HOURS_IST
        off_hours = flow.template_id == v.DEBT_COLLECTION and not low <= local_hour < high
        return SimulatedCall(call, turns, conversation.threat, off_hours)


@dataclass(frozen=True)
class _Turn:
    reftime: datetime
    state: str
    bot_response: str
    utterances: list[Any]
    intent: str | None = None
    intent_score: float | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    entities: list[Any] = field(default_factory=list)
    asr_latency_ms: int | None = None
    slu_latency_ms: int | None = None


class _Conversation:
    """One call's dialogue: the bot's turns and the caller's answers."""

    def __init__(self, rng: random.Random, flow: v.Flow, started: datetime) -> None:
        self.rng = rng
        self.flow = flow
        self.language = flow.language
        self.states = v.TEMPLATES[flow.template_id]
        self.started = started
        self.clock = started + timedelta(seconds=rng.uniform(0.5, 2.5))
        self.today = started.date()
        self.end_status = "CALLER_HANGUP"
        self.disposition = "CALL_DROPPED"
        self.threat = False
        self.extra_seconds = 0.0
        self.slots: dict[str, str] = {}
        self.context = {
            "client": _CLIENTS[flow.client_id].name[self.language],
            "amount": f"{rng.randrange(15, 450) * 100:,}",
            "digits": f"{rng.randrange(10_000):04d}",
        }
        # The date the bot mentions unprompted: a payment deadline, a policy expiry, a pack's
        # validity, depending on the template.
        self.default_date = self.today + timedelta(days=rng.randrange(2, 21))
        self.threaten = flow.template_id == v.DEBT_COLLECTION and rng.random() < 0.04

    def run(self) -> list[_Turn]:
        turns: list[_Turn] = []
        state = "INIT"
        silent_turns = 0
        for _ in range(MAX_TURNS):
            spec = self.states[state]
            prompt = self._prompt(state, reprompt=silent_turns > 0)
            bot_seconds = 0.4 + len(prompt) / 14
            reftime = _to_milliseconds(self.clock)
            if spec.terminal:
                turns.append(_Turn(reftime, state, prompt, []))
                self.clock += timedelta(seconds=bot_seconds)
                self.end_status = "TRANSFERRED" if state == "AGENT_TRANSFER" else "COMPLETED"
                self.disposition = spec.disposition
                if state == "AGENT_TRANSFER":
                    self.extra_seconds = self.rng.uniform(30, 420)
                return turns
            roll = self.rng.random()
            hangup = 0.12 if state == "INIT" else 0.04
            if roll < 0.004:
                turns.append(_Turn(reftime, state, prompt, []))
                self.end_status, self.disposition = "ERROR", "TECHNICAL_ERROR"
                self.clock += timedelta(seconds=bot_seconds)
                return turns
            if roll < hangup:
                turns.append(_Turn(reftime, state, prompt, []))
                self.clock += timedelta(seconds=self.rng.uniform(1.0, bot_seconds))
                return turns
            if roll < hangup + 0.07:
                turns.append(_Turn(reftime, state, prompt, []))
                self.clock += timedelta(seconds=bot_seconds + 5.0)
                silent_turns += 1
                if silent_turns >= 2:
                    self.end_status, self.disposition = "NO_INPUT", "NO_RESPONSE"
                    return turns
                continue
            silent_turns = 0
            turn, understood = self._caller_turn(reftime, state, prompt)
            turns.append(turn)
            caller_seconds = 0.6 + len(turn.utterances[0][0]["transcript"]) / 12
            latency = (turn.asr_latency_ms or 0) + (turn.slu_latency_ms or 0)
            self.clock += timedelta(seconds=bot_seconds + caller_seconds + latency / 1000)
            state = spec.transitions.get(understood, state)
        return turns

    def duration_seconds(self) -> float:
        return (self.clock - self.started).total_seconds() + self.extra_seconds

    def _prompt(self, state: str, *, reprompt: bool) -> str:
        template = v.bot_prompt(self.flow.template_id, self.language, state)
        when = self.default_date
        if state in ("CONFIRM_DATE", "END_PTP") and "payment_date" in self.slots:
            when = date.fromisoformat(self.slots["payment_date"])
        prompt = template.format(date=_spoken_date(self.language, when), **self.context)
        if reprompt:
            prompt = f"{v.bot_prompt(self.flow.template_id, self.language, 'NO_INPUT')} {prompt}"
        if self.threaten and not self.threat and state in ("PURPOSE", "NEGOTIATE"):
            self.threat = True
            prompt = f"{prompt} {self.rng.choice(v.COMPLIANCE_BREACH_PHRASES[self.language])}"
        return prompt

    def _caller_turn(self, reftime: datetime, state: str, prompt: str) -> tuple[_Turn, str]:
        rng = self.rng
        spec = self.states[state]
        intent = _weighted(rng, tuple(spec.caller.items()))
        template = rng.choice(v.CALLER_SAYS[self.language][intent])
        entity = self._entity(template, reftime)
        words = template.split()
        alternatives, clean, start = _asr_alternatives(rng, self.language, words, entity)
        understood = intent
        if rng.random() > (0.94 if clean else 0.7):
            others = [i for i in (*spec.caller, "_oos_") if i != intent]
            understood = rng.choice(others)
            score = round(rng.uniform(0.32, 0.68), 4)
        else:
            score = round(rng.uniform(0.72, 0.99), 4)
        label = understood
        if self.flow.legacy_labels and understood in v.INTENT_ALIASES:
            label = v.INTENT_ALIASES[understood][0]
        entities = []
        slots = {}
        if entity is not None:
            kind, text, value = entity
            entities.append(
                {
                    "type": kind,
                    "text": text,
                    "start": start,
                    "end": start + len(text),
                    "value": value,
                    "score": round(rng.uniform(0.8, 0.99), 4),
                }
            )
            if understood == intent:
                slot = self._slot_name(kind, state)
                slots[slot] = value
                self.slots[slot] = value
        turn = _Turn(
            reftime,
            state,
            prompt,
            alternatives,
            intent=label,
            intent_score=score,
            slots=slots,
            entities=entities,
            asr_latency_ms=rng.randrange(180, 900),
            slu_latency_ms=rng.randrange(15, 120),
        )
        return turn, understood

    def _entity(self, template: str, now: datetime) -> tuple[str, str, str] | None:
        rng = self.rng
        if "{date}" in template:
            text, kind, arg = rng.choice(v.DATE_PHRASES[self.language])
            return "date", text, _resolve_date(now.date(), kind, arg).isoformat()
        if "{time}" in template:
            text, hour = rng.choice(v.TIME_PHRASES[self.language])
            day = now.date() if hour > now.hour else now.date() + timedelta(days=1)
            when = datetime(day.year, day.month, day.day, hour, tzinfo=IST)
            return "time", text, when.isoformat()
        if "{number}" in template:
            digits = f"{rng.randrange(10_000):04d}"
            return "number", digits, digits
        return None

    @staticmethod
    def _slot_name(kind: str, state: str) -> str:
        if kind == "number":
            return "account_last4"
        if kind == "date" and state in _SLOT_STATES_PAYMENT:
            return "payment_date"
        return f"callback_{kind}"


def _asr_alternatives(
    rng: random.Random, language: str, words: list[str], entity: tuple[str, str, str] | None
) -> tuple[list[list[dict[str, Any]]], bool, int]:
    """ASR n-best list(s) for what the caller said, whether the best alternative is right,
    and where the entity starts in it (-1 without one).

    The best alternative never garbles the entity, so its span stays valid (the entity
    parser ran on it); lower alternatives may.
    """
    entity_text = entity[1] if entity else ""
    count = rng.choices((1, 2, 3, 4, 5), weights=(0.25, 0.2, 0.25, 0.2, 0.1))[0]
    clean = rng.random() < 0.72
    best_words = words if clean else _garble(rng, language, words)
    best_text, entity_start = _render(best_words, entity_text)
    texts = [best_text]
    spoken = _render(words, entity_text)[0].split()
    for _ in range(count * 3):
        if len(texts) >= count:
            break
        candidate = " ".join(_garble(rng, language, spoken))
        if candidate and candidate not in texts:
            texts.append(candidate)
    confidence = rng.uniform(0.82, 0.98) if clean else rng.uniform(0.45, 0.85)
    best = []
    for text in texts:
        best.append({"transcript": text, "confidence": round(confidence, 4)})
        confidence = max(0.05, confidence - rng.uniform(0.02, 0.15))
    segments = [best]
    if rng.random() < 0.05:
        filler = rng.choice(v.FILLERS[language])
        segments.append([{"transcript": filler, "confidence": round(rng.uniform(0.3, 0.7), 4)}])
    return segments, clean, entity_start


def _render(words: list[str], entity_text: str) -> tuple[str, int]:
    """The words as text with the placeholder word replaced, and where it starts."""
    parts = []
    start = -1
    offset = 0
    for word in words:
        if word.startswith("{") and word.endswith("}"):
            start = offset
            word = entity_text
        parts.append(word)
        offset += len(word) + 1
    return " ".join(parts), start


def _garble(rng: random.Random, language: str, words: list[str]) -> list[str]:
    """One or two ASR mistakes: a misheard word, a dropped word, a filler, a stutter.
    Placeholder words ("{date}") are left alone."""
    confusions = v.ASR_CONFUSIONS[language]
    out = list(words)
    for _ in range(rng.choice((1, 1, 2))):
        editable = [i for i, w in enumerate(out) if not w.startswith("{")]
        confusable = [i for i in editable if out[i] in confusions]
        op = rng.random()
        if confusable and op < 0.55:
            i = rng.choice(confusable)
            out[i] = rng.choice(confusions[out[i]])
        elif len(editable) > 1 and op < 0.75:
            del out[rng.choice(editable)]
        elif op < 0.9 or not editable:
            out.insert(0, rng.choice(v.FILLERS[language]))
        else:
            i = rng.choice(editable)
            out.insert(i, out[i])
    return out


def _resolve_date(today: date, kind: str, arg: int) -> date:
    if kind == "days":
        return today + timedelta(days=arg)
    if kind == "weekday":
        return today + timedelta(days=(arg - today.weekday() - 1) % 7 + 1)
    if kind == "day_of_month":
        if arg > today.day:
            return today.replace(day=arg)
        return _first_of_next_month(today).replace(day=arg)
    if kind == "next_month_day":
        return _first_of_next_month(today).replace(day=arg)
    raise ValueError(f"unknown date phrase kind {kind!r}")


def _first_of_next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _spoken_date(language: str, day: date) -> str:
    month = v.MONTHS[language][day.month - 1]
    return f"{day.day} {month}" if language in ("en", "hi") else f"{month} {day.day}"


def _json(value: list[Any] | dict[str, Any]) -> str:
    if not value:
        return "[]" if isinstance(value, list) else "{}"
    return json.dumps(value, ensure_ascii=False)


def _to_milliseconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _cumulative(weights: list[float]) -> list[float]:
    total = 0.0
    out = []
    for weight in weights:
        total += weight
        out.append(total)
    return out


def _weighted(rng: random.Random, choices: tuple[tuple[str, float], ...]) -> str:
    names = [name for name, _ in choices]
    return rng.choices(names, weights=[weight for _, weight in choices])[0]
