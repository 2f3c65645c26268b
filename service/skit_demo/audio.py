"""Real audio for the demo calls' English caller turns, so speech recognition has something
to hear on the embedded default.

The clips are synthesised once (`tools/synthesize_demo_audio.py`, Debian's espeak-ng) and
committed under `audio_clips/`: one 8 kHz Ogg Opus clip per distinct English caller
utterance of the default demo data, named by a hash of its text, with `manifest.csv`
(clip, language, text, voice, rate, duration). What a turn's caller said is recovered as
the annotation store recovers it (`annotations.recover_spoken`), so a clip says the same
truth the demo transcription tasks are annotated with.

`place_demo_audio` (the bootstrap calls it once per demo home) decodes the clips into
`<home>/audio/en/<clip>.wav` (8 kHz 16-bit PCM, as telephony recordings are stored) and
points the matching turns' `audio_url` at them with `file://` URLs; English turns where
the caller said nothing point at `audio/silence.wav` (two seconds of line noise); other
turns keep their placeholder https URLs. soundfile decodes the clips: no system package is needed.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from skit_components.db import connect, sqlite_url

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Format:
    format: str
    extension: str


CLIPS_DIR = Path(__file__).resolve().parent / "audio_clips"
"""The committed clips and their manifest."""
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("clip", "language", "text", "voice", "rate", "duration_seconds")
CLIP_FORMAT = _Format("OGG", "opus")
CLIP_SUBTYPE = "OPUS"
CLIP_SAMPLE_RATE = 8000
"""Telephony: the recogniser must resample to its own rate."""
LANGUAGES = ("en",)
"""Languages with clips (espeak-ng's Hindi, Tamil and Telugu voices are not good enough for
a recogniser we could test them with)."""
AUDIO_DIR = "audio"
"""Under the demo home."""
SILENCE = "silence.wav"
SILENCE_FRAMES = 2 * CLIP_SAMPLE_RATE
SILENCE_NOISE = 0.003
"""The line noise of the clips (tools/synthesize_demo_audio.py's NOISE_FLOOR)."""
_PLACEHOLDER_PREFIX = "https://audio.skit.example/"
"""skit_demo.calls.AUDIO_HOST: the URLs that name no real file."""


def clip_name(language: str, text: str) -> str:
    """The clip file of an utterance: language and a hash of the text."""
    digest = hashlib.sha256(f"{language}\n{text}".encode()).hexdigest()[:16]
    return f"{language}-{digest}.{CLIP_FORMAT.extension}"


@dataclass(frozen=True)
class ManifestRow:
    clip: str
    language: str
    text: str
    voice: str
    rate: int
    duration_seconds: float


def read_manifest(clips_dir: Path = CLIPS_DIR) -> list[ManifestRow]:
    """The clips the fixture set holds."""
    with (clips_dir / MANIFEST).open(encoding="utf-8", newline="") as f:
        return [
            ManifestRow(
                r["clip"],
                r["language"],
                r["text"],
                r["voice"],
                int(r["rate"]),
                float(r["duration_seconds"]),
            )
            for r in csv.DictReader(f)
        ]


def caller_texts(calls_db_url: str, language: str) -> Iterator[tuple[int, str]]:
    """(turn id, what the caller said) of every caller turn in `language`."""
    # Imported here: the annotations module imports the vocabulary, which a warm home
    # never needs.
    import skit_demo.annotations as a

    with connect(calls_db_url) as db:
        turns = [t for t in a.read_turns(db) if t.language == language and t.utterances]
    for turn in turns:
        yield turn.id, a.recover_spoken(turn).text


def english_caller_texts(scratch: Path) -> list[str]:
    """The distinct English caller utterances of the default demo data (generated into
    `scratch`), sorted: what the fixture set must cover."""
    from skit_demo.generator import generate

    calls = sqlite_url(scratch / "calls.db")
    generate(calls, sqlite_url(scratch / "metrics.db"))
    return sorted({text for _, text in caller_texts(calls, "en")})


def place_demo_audio(demo_root: Path, calls_db: Path, clips_dir: Path = CLIPS_DIR) -> int:
    """Decodes the clips into `demo_root/audio/<language>/` and points the caller turns of
    `calls_db` whose utterance has a clip at them; returns how many turns it pointed.

    Does nothing when `demo_root/audio` exists. The directory is built under a temporary
    name and renamed into place last, after the turns were updated (in one transaction),
    so a start that crashes half-way is redone by the next one.
    """
    final = demo_root / AUDIO_DIR
    if final.is_dir():
        return 0
    # Imported only on a home that needs them: soundfile loads libsndfile.
    import numpy as np
    import soundfile  # type: ignore[import-untyped]

    manifest = {(r.language, r.text): r for r in read_manifest(clips_dir)}
    temporary = demo_root / f".{AUDIO_DIR}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        updates: list[tuple[str, int]] = []
        written: set[str] = set()
        for language in LANGUAGES:
            (temporary / language).mkdir(parents=True)
            for turn_id, text in caller_texts(sqlite_url(calls_db), language):
                row = manifest.get((language, text))
                if row is None:
                    continue
                wav = Path(row.clip).with_suffix(".wav").name
                if row.clip not in written:
                    samples, rate = soundfile.read(clips_dir / row.clip, dtype="int16")
                    soundfile.write(temporary / language / wav, samples, rate, subtype="PCM_16")
                    written.add(row.clip)
                updates.append(((final / language / wav).as_uri(), turn_id))
        # Turns where the caller said nothing get a recording of the silent line.
        with connect(sqlite_url(calls_db)) as db:
            marks = ", ".join("?" for _ in LANGUAGES)
            silent = db.fetchall(
                "SELECT t.id FROM turns t JOIN calls c ON c.id = t.call_id "
                f"WHERE c.language IN ({marks}) AND t.utterances = '[]'",
                LANGUAGES,
            )
        if silent:
            samples = np.random.default_rng(0).normal(0.0, SILENCE_NOISE, SILENCE_FRAMES)
            soundfile.write(temporary / SILENCE, samples, CLIP_SAMPLE_RATE, subtype="PCM_16")
            updates += [((final / SILENCE).as_uri(), row[0]) for row in silent]
        with connect(sqlite_url(calls_db)) as db, db.transaction():
            db.executemany(
                "UPDATE turns SET audio_url = ? WHERE id = ? AND audio_url LIKE ?",
                [(url, turn_id, _PLACEHOLDER_PREFIX + "%") for url, turn_id in updates],
            )
        with contextlib.suppress(FileExistsError, OSError):
            # A concurrent first start may have renamed its own directory first.
            temporary.rename(final)
        logger.info(
            "demo audio: %d clips in %s for %d caller turns", len(written), final, len(updates)
        )
        return len(updates)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
