from __future__ import annotations

import json
from pathlib import Path

import pytest

from skit_components.db import connect, sqlite_url
from skit_components.loader import import_component
from skit_components.migrations import CALLS, migrate

build = import_component(Path(__file__).resolve().parents[1])


def calls_db(tmp_path: Path, turns: list[tuple[str, list[dict]]], language: str = "en") -> str:
    """A calls database with one call whose caller turns heard `turns` (text, entities)."""
    url = sqlite_url(tmp_path / "calls.db")
    with connect(url, create=True) as db:
        migrate(db, CALLS)
        with db.transaction():
            db.execute(
                "INSERT INTO calls (id, uuid, client_id, client_uuid, flow_id, flow_uuid, "
                "flow_name, flow_version, template_id, language, asr_provider, call_type, "
                "call_end_status, disposition, previous_disposition, blocking_disposition, "
                "started_at, duration_seconds, audio_url, call_url) VALUES "
                "(1, 'c1', 1, 'cu', 1, 'fu', 'f', '1', 1, ?, 'google', 'INBOUND', 'COMPLETED', "
                "'', '', '', '2026-10-01T10:00:00+00:00', 10, '', '')",
                (language,),
            )
            for i, (text, entities) in enumerate(turns, start=1):
                db.execute(
                    "INSERT INTO turns (id, uuid, call_id, turn_index, reftime, state, "
                    "utterances, bot_response, intent, intent_score, slots, entities, audio_url, "
                    "asr_latency_ms, slu_latency_ms) VALUES (?, ?, 1, ?, "
                    "'2026-10-01T10:00:00+00:00', 'S', ?, '', NULL, NULL, '{}', ?, '', NULL, NULL)",
                    (
                        i,
                        f"t{i}",
                        i,
                        json.dumps([[{"transcript": text, "confidence": 0.9}]]),
                        json.dumps(entities),
                    ),
                )
    return url


def date(text: str, start: int) -> list[dict]:
    return [{"type": "date", "text": text, "start": start, "end": start + len(text)}]


def test_a_grammar_with_entity_rules_frequent_sentences_and_spelled_acronyms(tmp_path):
    url = calls_db(
        tmp_path,
        [
            ("i will pay tomorrow", date("tomorrow", 11)),
            ("i will pay friday", date("friday", 11)),
            ("i paid through upi", []),
            ("i paid through upi", []),
            ("i will pay to morrow", []),  # the ASR's one-off mistake
            ("it is 4821", [{"type": "number", "text": "4821", "start": 6, "end": 10}]),
            ("it is 1234", [{"type": "number", "text": "1234", "start": 6, "end": 10}]),
            ("tomorrow", date("tomorrow", 0)),
            ("friday", date("friday", 0)),
        ],
    )
    model = build.build(url, build.Options(), tmp_path / "model")
    grammar = (tmp_path / "model" / "grammar.jsgf").read_text()
    assert "( i will pay <date> )" in grammar
    assert "<date> = ( friday ) | ( tomorrow );" in grammar
    assert (
        "( it is <number> )" in grammar
        and "<number> = ( <digit> <digit> <digit> <digit> );" in grammar
    )
    assert "( i paid through upi )" in grammar
    assert "to morrow" not in grammar
    assert model["added_words"] == ["upi"]
    assert (tmp_path / "model" / "words.dict").read_text() == "upi Y UW P IY AY\n"
    assert model["left_out"]["sentences heard fewer than 2 times"] == 1
    # The grammar loads into pocketsphinx as it is.
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16000, loglevel="FATAL")
    decoder.add_word("upi", "Y UW P IY AY")
    decoder.add_jsgf_string("domain", grammar)


def test_default_kind_needs_no_database(tmp_path):
    model = build.build(None, build.Options(kind="default"), tmp_path / "m")
    assert model == {"kind": "default", "language": "en"}
    assert json.loads((tmp_path / "m" / "model.json").read_text())["kind"] == "default"


@pytest.mark.parametrize(
    ("turns", "options", "message"),
    [
        ([("yes", [])], build.Options(language="hi"), "has no pocketsphinx model"),
        ([("yes", [])], build.Options(kind="lm"), "kind must be one of"),
        ([("yes", [])], build.Options(min_count=5), "no sentence was heard at least 5 times"),
        ([], build.Options(), "no caller transcript in 'en'"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, monkeypatch, capsys, turns, options, message):
    monkeypatch.setenv("CALLS_DB_URL", calls_db(tmp_path, turns))
    code = build.main(
        [
            f"--language={options.language}",
            f"--kind={options.kind}",
            f"--min-count={options.min_count}",
            f"--model={tmp_path / 'out' / 'model'}",
            f"--sentence-count={tmp_path / 'out' / 'n'}",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out" / "n").exists()


def test_the_step_on_the_demo_calls(tmp_path, monkeypatch):
    from skit_demo import generate

    calls = sqlite_url(tmp_path / "calls.db")
    generate(calls, sqlite_url(tmp_path / "metrics.db"), calls=300)
    monkeypatch.setenv("CALLS_DB_URL", calls)
    code = build.main([f"--model={tmp_path / 'model'}", f"--sentence-count={tmp_path / 'n'}"])
    assert code == 0
    model = json.loads((tmp_path / "model" / "model.json").read_text())
    assert int((tmp_path / "n").read_text()) == model["sentences"] > 20
    assert "upi" in model["added_words"]
