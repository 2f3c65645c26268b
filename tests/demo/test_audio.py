from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile

from skit_components.db import connect, sqlite_url
from skit_demo import generate
from skit_demo.audio import (
    CLIP_SAMPLE_RATE,
    CLIPS_DIR,
    MANIFEST,
    clip_name,
    english_caller_texts,
    place_demo_audio,
    read_manifest,
)

MAX_FIXTURE_BYTES = 3_000_000
"""The committed clips stay small: a few MB at most."""


def test_the_committed_clips_cover_every_english_caller_utterance_of_the_demo(tmp_path):
    manifest = read_manifest()
    assert sorted(r.text for r in manifest) == english_caller_texts(tmp_path)
    assert all(r.clip == clip_name("en", r.text) for r in manifest)
    files = {p.name for p in CLIPS_DIR.iterdir()} - {MANIFEST}
    assert files == {r.clip for r in manifest}
    assert sum(p.stat().st_size for p in CLIPS_DIR.iterdir()) < MAX_FIXTURE_BYTES


def test_a_clip_is_8khz_speech_of_its_listed_duration():
    row = read_manifest()[0]
    samples, rate = soundfile.read(CLIPS_DIR / row.clip)
    assert rate == CLIP_SAMPLE_RATE
    assert len(samples) / rate == pytest.approx(row.duration_seconds, abs=0.05)
    assert abs(samples).max() > 0.1  # speech, not only the line noise


def test_place_demo_audio_points_english_turns_at_wav_files_once(tmp_path):
    calls = tmp_path / "calls.db"
    generate(sqlite_url(calls), sqlite_url(tmp_path / "metrics.db"), calls=120)
    pointed = place_demo_audio(tmp_path, calls)
    with connect(sqlite_url(calls)) as db:
        rows = db.fetchall(
            "SELECT c.language, t.utterances, t.audio_url FROM turns t "
            "JOIN calls c ON c.id = t.call_id"
        )
    english = [r for r in rows if r[0] == "en"]
    local = [r for r in english if r[2].startswith("file://")]
    assert pointed == len(local) > 0.9 * len(english)
    assert all(r[2].startswith("https://") for r in rows if r[0] != "en")
    for _, utterances, url in local[:20]:
        path = Path(url.removeprefix("file://"))
        assert path.suffix == ".wav" and path.is_file()
        assert (path.name == "silence.wav") == (json.loads(utterances) == [])
    # Once: a second call finds the directory and changes nothing.
    assert place_demo_audio(tmp_path, calls) == 0
