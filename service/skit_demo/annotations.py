"""Demo rows of the annotation store: Label Studio projects and Tog jobs, their tasks (caller
turns of the demo calls, as the labelling tool showed them) and the annotations people made.

Tasks are derived from the turns already in the calls database, so every task names a real
call and turn. The calls database keeps only what ASR heard, so what the caller really said
is recovered as the caller phrase (`vocabulary.CALLER_SAYS`, with the turn's entity filled
in) nearest to the turn's ASR n-best list: most best alternatives are exact, the rest one or
two word edits away. That phrase gives the true intent and the true transcript.

Annotators are then simulated on that truth with the mistakes real ones make, each at their
own rate: a confusable intent, legacy label names in old Tog jobs, entity spans that miss,
overreach or carry the wrong type, transcripts with noise markup and typos. Some tasks are
labelled twice (annotators disagree on some of those) and gold tasks get a reviewer's
correct label last.

Everything comes from one `random.Random` and the turns in id order, so a seed and a calls
database reproduce the rows exactly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from skit_components.db import Database
from skit_demo import vocabulary as v
from skit_demo.calls import IST, Row

PROJECT_COLUMNS = (
    "id",
    "source",
    "name",
    "task_type",
    "language",
    "client_id",
    "created_at",
    "labels",
)
TASK_COLUMNS = (
    "id",
    "project_id",
    "task_key",
    "data",
    "call_uuid",
    "conversation_uuid",
    "language",
    "reftime",
    "is_gold",
    "created_at",
)
ANNOTATION_COLUMNS = ("id", "task_id", "annotator", "tag", "tagged_at")

LABEL_STUDIO = "label_studio"
TOG = "tog"

GOLD_SHARE = 0.05
"""Tasks marked gold: labelled by two annotators, then by a reviewer whose label is right."""
OVERLAP_SHARE = 0.12
"""Other tasks labelled by two annotators, for agreement checks."""
LEGACY_LABEL_SHARE = 0.3
"""How often Tog annotators use an intent's old name (`vocabulary.INTENT_ALIASES`)."""
REVIEWER = "qa-lead@labels.skit.example"

_TIMEZONE = "Asia/Kolkata"
"""The demo callers' zone (calls.IST); tasks record it as the platform does."""
_ENTITY_TYPES = ("date", "time")
_PLACEHOLDERS = {"date": "{date}", "time": "{time}", "number": "{number}"}
_MARKUP = ("<noise>", "<babble>", "<music>")
_UNINTELLIGIBLE = "<unintelligible>"


@dataclass(frozen=True)
class Project:
    """A Label Studio project or a Tog job, and which demo turns become its tasks."""

    id: int
    source: str
    name: str
    task_type: str
    """intent, entity or transcription."""
    flow_ids: tuple[int, ...]
    share: float
    """Share of the flows' eligible caller turns that become tasks."""
    language: str = ""
    client_id: int | None = None


def _flows(*, client_id: int | None = None, language: str | None = None) -> tuple[int, ...]:
    return tuple(
        f.id
        for f in v.FLOWS
        if (client_id is None or f.client_id == client_id)
        and (language is None or f.language == language)
    )


PROJECTS = (
    Project(
        11, LABEL_STUDIO, "Kaveri Collections: intents", "intent", _flows(client_id=101), 0.35,
        client_id=101,
    ),
    Project(
        12, LABEL_STUDIO, "Nirmal Renewals: intents", "intent", _flows(client_id=103), 0.35,
        client_id=103,
    ),
    Project(
        13, LABEL_STUDIO, "Metro Care: intents", "intent", _flows(client_id=104), 0.35,
        client_id=104,
    ),
    Project(21, LABEL_STUDIO, "Dates and times", "entity", _flows(), 0.85),
    *(
        Project(
            30 + i, LABEL_STUDIO, f"Transcription: {name}", "transcription",
            _flows(language=lang), 0.2, language=lang,
        )
        for i, (lang, name) in enumerate(v.LANGUAGES.items(), start=1)
    ),
    Project(
        4101, TOG, "Sahyadri EMI Recovery intents (legacy labels)", "intent",
        _flows(client_id=102), 0.35, client_id=102,
    ),
)  # fmt: skip
"""The demo projects: ids 11-13 intent, 21 entity, 31-34 transcription (en, hi, ta, te);
Tog job 4101 is an older intent job whose annotators still use some legacy intent names."""

ANNOTATORS: dict[str, tuple[tuple[str, float], ...]] = {
    "en": (
        ("ananya@labels.skit.example", 0.02),
        ("rohit@labels.skit.example", 0.04),
        ("sneha@labels.skit.example", 0.03),
        ("vikram@labels.skit.example", 0.09),
    ),
    "hi": (
        ("pooja@labels.skit.example", 0.03),
        ("amit@labels.skit.example", 0.05),
        ("neha@labels.skit.example", 0.08),
    ),
    "ta": (
        ("karthik@labels.skit.example", 0.03),
        ("divya@labels.skit.example", 0.06),
    ),
    "te": (
        ("srinivas@labels.skit.example", 0.04),
        ("lakshmi@labels.skit.example", 0.06),
    ),
}
"""Annotators per language with their personal error rate (one of them is careless)."""


@dataclass(frozen=True)
class CallTurn:
    """A caller-facing turn of the calls database with its call's context."""

    id: int
    uuid: str
    turn_index: int
    reftime: datetime
    state: str
    utterances: list[Any]
    bot_response: str
    intent: str | None
    intent_score: float | None
    slots: dict[str, Any]
    entities: list[Any]
    audio_url: str
    call_id: int
    call_uuid: str
    call_url: str
    client_id: int
    flow_id: int
    template_id: int
    language: str

    @property
    def primary_utterance(self) -> str:
        return self.utterances[0][0]["transcript"] if self.utterances else ""


_TURNS_PAGE = 5000


def read_turns(db: Database) -> Iterator[CallTurn]:
    """Every turn of the calls database in id order, a page at a time: each page's query is
    finished before the caller writes anything, so reading and writing may share a database."""
    d = db.dialect
    query = f"""
        SELECT t.id, t.uuid, t.turn_index, t.reftime, t.state, {d.json_text("t.utterances")},
               t.bot_response, t.intent, t.intent_score, {d.json_text("t.slots")},
               {d.json_text("t.entities")}, t.audio_url, c.id, c.uuid, c.call_url,
               c.client_id, c.flow_id, c.template_id, c.language
        FROM turns t JOIN calls c ON c.id = t.call_id
        WHERE t.id > ? ORDER BY t.id LIMIT {_TURNS_PAGE}
    """
    after = 0
    while rows := db.fetchall(query, (after,)):
        for row in rows:
            yield CallTurn(
                id=row[0],
                uuid=row[1],
                turn_index=row[2],
                reftime=d.to_datetime(row[3]),
                state=row[4],
                utterances=json.loads(row[5]),
                bot_response=row[6],
                intent=row[7],
                intent_score=row[8],
                slots=json.loads(row[9]),
                entities=json.loads(row[10]),
                audio_url=row[11],
                call_id=row[12],
                call_uuid=row[13],
                call_url=row[14],
                client_id=row[15],
                flow_id=row[16],
                template_id=row[17],
                language=row[18],
            )
        after = rows[-1][0]


@dataclass(frozen=True)
class Spoken:
    """What the caller really said in a turn."""

    intent: str
    """Canonical intent of the phrase."""
    text: str
    """The phrase with its entity, and a trailing filler when the caller said one."""


_CANONICAL = {alias: intent for intent, aliases in v.INTENT_ALIASES.items() for alias in aliases}


@cache
def _phrases(language: str) -> tuple[tuple[str, tuple[str, ...], str | None], ...]:
    """(intent, words, placeholder word or None) for every caller phrase of a language."""
    out = []
    for intent, templates in v.CALLER_SAYS[language].items():
        for template in templates:
            words = tuple(template.split())
            slots = [w for w in words if w.startswith("{") and w.endswith("}")]
            out.append((intent, words, slots[0] if slots else None))
    return tuple(out)


def recover_spoken(turn: CallTurn) -> Spoken:
    """The caller phrase, among those of the intents callers answer in the turn's state, that
    ASR most plausibly turned into the turn's alternatives.

    A best alternative that is a phrase is taken as it is (most are heard right). Otherwise
    each alternative is what was said with a mistake or two, so the phrase with the fewest
    edits to all of them wins; ties go to the phrase nearest to the best alternative, then
    to the predicted intent.
    """
    segments = turn.utterances
    heard = [tuple(alt["transcript"].split()) for alt in segments[0]]
    entity = next((e for e in turn.entities if e.get("type") in _PLACEHOLDERS), None)
    placeholder = _PLACEHOLDERS[entity["type"]] if entity else None
    entity_words = tuple(entity["text"].split()) if entity else ()
    predicted = _CANONICAL.get(turn.intent or "", turn.intent)
    state = v.TEMPLATES.get(turn.template_id, {}).get(turn.state)
    expected = set(state.caller) if state and state.caller else None
    confusions = _confusions(turn.language)
    candidates = [
        (intent, _fill(words, slot, entity_words))
        for intent, words, slot in _phrases(turn.language)
        if slot == placeholder and (expected is None or intent in expected)
    ]
    exact = [c for c in candidates if c[1] == heard[0]]
    if exact:
        candidates = exact
    best: tuple[tuple[int, int, bool, int], str, tuple[str, ...]] | None = None
    for index, (intent, rendered) in enumerate(candidates):
        limit = best[0][0] if best else None
        # The length difference bounds the distance from below: skip hopeless phrases.
        if limit is not None and sum(abs(len(rendered) - len(h)) for h in heard) > limit:
            continue
        distances = []
        for other in heard:
            distances.append(_distance(rendered, other, confusions))
            if limit is not None and sum(distances) > limit:
                break
        else:
            key = (sum(distances), distances[0], intent != predicted, index)
            if best is None or key < best[0]:
                best = (key, intent, rendered)
    if best is None:
        # Not a demo phrase (another generator's data): trust the best alternative.
        intent, words = predicted or "_oos_", heard[0]
    else:
        _, intent, words = best
    fillers = [segment[0]["transcript"] for segment in segments[1:] if segment]
    return Spoken(intent, " ".join([*words, *fillers]))


@cache
def _confusions(language: str) -> frozenset[tuple[str, str]]:
    """(said, heard) word pairs ASR confuses."""
    return frozenset(
        (said, heard)
        for said, options in v.ASR_CONFUSIONS.get(language, {}).items()
        for heard in options
    )


def _fill(words: tuple[str, ...], slot: str | None, entity_words: tuple[str, ...]) -> Row:
    if slot is None:
        return words
    out: list[str] = []
    for word in words:
        out.extend(entity_words if word == slot else (word,))
    return tuple(out)


def _distance(
    said: Sequence[str], heard: Sequence[str], confusions: frozenset[tuple[str, str]]
) -> int:
    """Word edits from what was said to what was heard: an insertion, a deletion or a known
    ASR confusion costs 1, any other substitution 2 (ASR does not swap unrelated words)."""
    if said == heard:
        return 0
    previous = list(range(len(heard) + 1))
    for i, x in enumerate(said, start=1):
        current = [i]
        for j, y in enumerate(heard, start=1):
            swap = 0 if x == y else 1 if (x, y) in confusions else 2
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + swap))
        previous = current
    return previous[-1]


def project_rows(created_at: Any) -> list[Row]:
    """The PROJECTS as rows of PROJECT_COLUMNS, all created at `created_at`."""
    return [
        (
            p.id,
            p.source,
            p.name,
            p.task_type,
            p.language,
            p.client_id,
            created_at,
            _json(list(project_labels(p))),
        )
        for p in PROJECTS
    ]


def project_labels(project: Project) -> tuple[str, ...]:
    """What the project's annotators choose from: the canonical intents callers answer
    with in its flows' templates (and _oos_), the entity types, nothing for transcription."""
    if project.task_type == "entity":
        return _ENTITY_TYPES
    if project.task_type != "intent":
        return ()
    templates = {f.template_id for f in v.FLOWS if f.id in project.flow_ids}
    intents = {
        intent
        for template in templates
        for state in v.TEMPLATES.get(template, {}).values()
        for intent in (state.caller or {})
    }
    return (*sorted(intents - {"_oos_"}), "_oos_")


class AnnotationSimulator:
    """Turns demo call turns into annotation tasks and annotations, ids from 1.

    Args:
        timestamp: turns an aware datetime into the value stored for the target database.
    """

    def __init__(self, rng: random.Random, *, timestamp: Callable[[datetime], Any]) -> None:
        self._rng = rng
        self._timestamp = timestamp
        self._projects_of_flow: dict[int, list[Project]] = {}
        for project in PROJECTS:
            for flow_id in project.flow_ids:
                self._projects_of_flow.setdefault(flow_id, []).append(project)
        self._task_id = 0
        self._annotation_id = 0

    def simulate(self, turn: CallTurn) -> tuple[list[Row], list[Row]]:
        """The task rows (TASK_COLUMNS) and annotation rows (ANNOTATION_COLUMNS) of a turn."""
        tasks: list[Row] = []
        annotations: list[Row] = []
        if not turn.utterances:
            # The caller said nothing: nothing to label.
            return tasks, annotations
        spoken: Spoken | None = None
        for project in self._projects_of_flow.get(turn.flow_id, ()):
            if project.task_type == "entity" and not any(
                e["type"] in _ENTITY_TYPES for e in turn.entities
            ):
                continue
            if self._rng.random() >= project.share:
                continue
            spoken = spoken or recover_spoken(turn)
            task, labels = self._task(project, turn, spoken)
            tasks.append(task)
            annotations.extend(labels)
        return tasks, annotations

    def _task(self, project: Project, turn: CallTurn, spoken: Spoken) -> tuple[Row, list[Row]]:
        rng = self._rng
        self._task_id += 1
        gold = rng.random() < GOLD_SHARE
        created = turn.reftime + timedelta(hours=rng.uniform(2, 48))
        labellers = 2 if gold or rng.random() < OVERLAP_SHARE else 1
        pool = ANNOTATORS[turn.language]
        chosen = rng.sample(pool, min(labellers, len(pool)))
        when = created + timedelta(hours=rng.uniform(0.5, 72))
        labels = []
        for annotator, error_rate in chosen:
            tag = self._tag(project, turn, spoken, error_rate)
            labels.append(self._annotation(annotator, tag, when))
            when += timedelta(hours=rng.uniform(1, 48))
        if gold:
            labels.append(self._annotation(REVIEWER, self._tag(project, turn, spoken, None), when))
        task = (
            self._task_id,
            project.id,
            # The key the pipelines push this turn with, so a push of a demo turn into its
            # demo project adds nothing twice.
            f"turn:{turn.uuid}",
            _json(task_data(turn)),
            turn.call_uuid,
            turn.uuid,
            turn.language,
            self._timestamp(turn.reftime),
            gold,
            self._timestamp(created),
        )
        return task, labels

    def _annotation(self, annotator: str, tag: dict[str, Any], when: datetime) -> Row:
        self._annotation_id += 1
        when = when.replace(microsecond=when.microsecond // 1000 * 1000)
        return (self._annotation_id, self._task_id, annotator, _json(tag), self._timestamp(when))

    def _tag(
        self, project: Project, turn: CallTurn, spoken: Spoken, error_rate: float | None
    ) -> dict[str, Any]:
        """An annotator's tag; error_rate None is the reviewer, who is always right."""
        if project.task_type == "intent":
            return self._intent_tag(project, turn, spoken, error_rate)
        if project.task_type == "entity":
            return self._entity_tag(turn, error_rate)
        return self._transcription_tag(spoken, error_rate)

    def _intent_tag(
        self, project: Project, turn: CallTurn, spoken: Spoken, error_rate: float | None
    ) -> dict[str, Any]:
        rng = self._rng
        intent = spoken.intent
        if error_rate is not None:
            if rng.random() < error_rate:
                state = v.TEMPLATES[turn.template_id][turn.state]
                confusable = [i for i in (*state.caller, "_oos_") if i != intent]
                intent = rng.choice(confusable or ["_oos_"])
            if (
                project.source == TOG
                and intent in v.INTENT_ALIASES
                and rng.random() < LEGACY_LABEL_SHARE
            ):
                intent = v.INTENT_ALIASES[intent][0]
        return {"choices": [intent]}

    def _entity_tag(self, turn: CallTurn, error_rate: float | None) -> dict[str, Any]:
        """Spans into the task's text (the best ASR alternative), as annotators mark them."""
        rng = self._rng
        text = turn.primary_utterance
        tagged = []
        for entity in turn.entities:
            if entity["type"] not in _ENTITY_TYPES:
                continue
            kind, start, end = entity["type"], entity["start"], entity["end"]
            if error_rate is not None:
                # Mistakes in proportion to the annotator's error rate, 2.3 times it in all.
                roll = rng.random() / error_rate
                if roll < 0.5:
                    continue  # missed
                if roll < 1.5 and start > 0:
                    # Overreach: the word before ("by", "on", "maybe") joins the span.
                    start = text.rfind(" ", 0, start - 1) + 1
                elif 1.5 <= roll < 1.8:
                    kind = "time" if kind == "date" else "date"
                elif 1.8 <= roll < 2.3 and " " in text[start:end]:
                    # Underreach: the first word of a multi-word span is left out.
                    start = text.index(" ", start) + 1
            tagged.append({"type": kind, "text": text[start:end], "start": start, "end": end})
        return {"entities": tagged}

    def _transcription_tag(self, spoken: Spoken, error_rate: float | None) -> dict[str, Any]:
        rng = self._rng
        text = spoken.text
        if error_rate is None:
            return {"text": text}
        roll = rng.random()
        if roll < 0.01:
            return {"text": _UNINTELLIGIBLE}
        words = text.split()
        if roll < 0.09:
            markup = rng.choice(_MARKUP)
            words = [markup, *words] if rng.random() < 0.5 else [*words, markup]
        if rng.random() < error_rate:
            # A typo: one letter of a longer word dropped.
            long_words = [i for i, w in enumerate(words) if len(w) >= 4 and not w.startswith("<")]
            if long_words:
                i = rng.choice(long_words)
                cut = rng.randrange(1, len(words[i]) - 1)
                words[i] = words[i][:cut] + words[i][cut + 1 :]
        return {"text": " ".join(words)}


def task_data(turn: CallTurn) -> dict[str, Any]:
    """The task as the labelling tool shows it: the turn, its audio and the bot's prediction."""
    return {
        "call_id": turn.call_id,
        "call_uuid": turn.call_uuid,
        "conversation_uuid": turn.uuid,
        "turn_index": turn.turn_index,
        "reftime": turn.reftime.astimezone(IST).isoformat(timespec="milliseconds"),
        "timezone": _TIMEZONE,
        "language": turn.language,
        "state": turn.state,
        "bot_response": turn.bot_response,
        "utterances": turn.utterances,
        "text": turn.primary_utterance,
        "intent": turn.intent,
        "intent_score": turn.intent_score,
        "entities": turn.entities,
        "slots": turn.slots,
        "audio_url": turn.audio_url,
        "call_url": turn.call_url,
        "flow_id": turn.flow_id,
        "client_id": turn.client_id,
        "template_id": turn.template_id,
    }


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)
