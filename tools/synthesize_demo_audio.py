"""Synthesises the demo calls' English caller audio once, into the committed fixture set.

    .venv/bin/python tools/synthesize_demo_audio.py            # rewrites the fixtures
    .venv/bin/python tools/synthesize_demo_audio.py --check    # only lists what would change

Needs Debian's `espeak-ng` (apt-get install espeak-ng) on PATH; nothing else outside the
project's venv (soundfile and soxr resample and encode). Neither `make run` nor the tests
need it: they read the clips this writes, committed under `service/skit_demo/audio_clips/`.

What is said: every distinct English caller utterance of the default demo data (seed 0,
2000 calls; `skit_demo.generate`'s defaults), as the annotation store recovers it
(`skit_demo.annotations.recover_spoken`: the caller phrase with its entity and trailing
filler), so a clip's text is the same truth the demo transcription tasks are annotated
with. Digit strings (account numbers) are spoken digit by digit, as callers read them out.

How: espeak-ng at its own rate (22.05 kHz), a voice and speaking rate picked per text from
a few English voices (a stable hash of the text, so a rerun gives the same choice), then
resampled to 8 kHz mono (telephony) and encoded as Ogg Opus: about 2 KB a second, so the
whole set stays near 1 MB. `manifest.csv` lists clip, language, text, voice, rate and
duration. espeak-ng output is deterministic for one version; the Opus encoder is not
bit-exact across libsndfile builds, which is why the clips are committed, not rebuilt.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

logger = logging.getLogger("synthesize_demo_audio")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "service"))

from skit_demo.audio import (  # noqa: E402 - after the path set-up for a by-path run
    CLIP_FORMAT,
    CLIP_SAMPLE_RATE,
    CLIP_SUBTYPE,
    CLIPS_DIR,
    MANIFEST,
    MANIFEST_COLUMNS,
    clip_name,
    english_caller_texts,
)

LANGUAGE = "en"
VOICES = ("en-us", "en-us", "en-gb")
"""espeak-ng voices (repeated ones are picked more often): two accents. Its Caribbean and
RP voices were tried too; pocketsphinx's en-us model missed over a third of their words
even with the domain grammar, which says more about espeak-ng than about the pipeline."""
RATES = (135, 150, 165)
"""Words per minute."""
PAUSE_SECONDS = 0.25
"""Silence before and after the speech, as a telephony recording has around an answer."""
NOISE_FLOOR = 0.003
"""Standard deviation of the line noise added everywhere (about -50 dBFS). A telephone line
is never digitally silent, and pocketsphinx misreads digital silence: without it, the
domain grammar's WER on these clips was 26 %, with it 14 % (the last word of an answer
was often lost, and fillers were heard in the silence)."""


@dataclass(frozen=True)
class Clip:
    name: str
    text: str
    voice: str
    rate: int
    duration: float


def spoken_form(text: str) -> str:
    """What espeak-ng is given: digit strings read out digit by digit ("4821" -> "4 8 2 1")."""
    words = []
    for word in text.split():
        words.append(" ".join(word) if word.isdigit() else word)
    return " ".join(words)


def synthesize(espeak: str, text: str) -> tuple[np.ndarray, str, int]:
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    voice = VOICES[digest % len(VOICES)]
    rate = RATES[(digest // len(VOICES)) % len(RATES)]
    wav = subprocess.run(
        [espeak, "-v", voice, "-s", str(rate), "--stdout", spoken_form(text)],
        check=True,
        capture_output=True,
    ).stdout
    samples, rate_hz = soundfile.read(io.BytesIO(wav), dtype="float32")
    telephony = soxr.resample(samples, rate_hz, CLIP_SAMPLE_RATE)
    pad = np.zeros(int(PAUSE_SECONDS * CLIP_SAMPLE_RATE), dtype=np.float32)
    speech = np.concatenate([pad, telephony.astype(np.float32), pad])
    noise = np.random.default_rng(digest).normal(0.0, NOISE_FLOOR, len(speech))
    return np.clip(speech + noise, -1.0, 1.0).astype(np.float32), voice, rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=CLIPS_DIR, help="the fixture directory")
    parser.add_argument("--check", action="store_true", help="list missing or extra clips only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    espeak = shutil.which("espeak-ng")
    if espeak is None and not args.check:
        print("espeak-ng is not installed: apt-get install espeak-ng", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        texts = english_caller_texts(Path(scratch))
    wanted = {clip_name(LANGUAGE, text): text for text in texts}
    out: Path = args.out
    present = {p.name for p in out.glob(f"*.{CLIP_FORMAT.extension}")} if out.is_dir() else set()
    missing, extra = sorted(set(wanted) - present), sorted(present - set(wanted))
    logger.info("%d texts; %d clips missing, %d extra", len(wanted), len(missing), len(extra))
    if args.check:
        return 1 if missing or extra else 0
    assert espeak is not None
    out.mkdir(parents=True, exist_ok=True)
    for name in extra:
        (out / name).unlink()
    clips = []
    for name, text in sorted(wanted.items(), key=lambda item: item[1]):
        samples, voice, rate = synthesize(espeak, text)
        soundfile.write(
            out / name, samples, CLIP_SAMPLE_RATE, format=CLIP_FORMAT.format, subtype=CLIP_SUBTYPE
        )
        clips.append(Clip(name, text, voice, rate, round(len(samples) / CLIP_SAMPLE_RATE, 3)))
    with (out / MANIFEST).open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for c in clips:
            writer.writerow([c.name, LANGUAGE, c.text, c.voice, c.rate, f"{c.duration:.3f}"])
    total = sum(p.stat().st_size for p in out.iterdir())
    logger.info("wrote %d clips and %s to %s: %.2f MB", len(clips), MANIFEST, out, total / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
