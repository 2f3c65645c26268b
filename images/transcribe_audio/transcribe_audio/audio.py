"""Decoding audio bytes (WAV, FLAC, MP3, Ogg Vorbis/Opus: libsndfile, in the soundfile
wheel) to 16 kHz mono 16-bit PCM, the rate the recognisers take; 8 kHz telephony audio is
resampled with soxr."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr

TARGET_RATE = 16000
FRAME_SECONDS = 0.03
SPEECH_LEVEL = 0.01
"""RMS (of full scale, about -40 dBFS) above which a frame may hold speech: a telephone
line's noise floor is around -50 dBFS, speech -30 to -10."""
MIN_SPEECH_SECONDS = 0.15


class Undecodable(Exception):
    """The bytes are not audio libsndfile can read (or hold no samples)."""


@dataclass(frozen=True)
class Audio:
    pcm: bytes
    """16 kHz mono little-endian int16."""
    duration_seconds: float
    sample_rate: int
    """The file's own rate."""

    def has_speech(self) -> bool:
        """Whether at least MIN_SPEECH_SECONDS of frames are louder than the line's noise
        (an energy check: a silent turn is not worth decoding, and a grammar search spends
        several times real time looking for words in noise)."""
        samples = np.frombuffer(self.pcm, dtype="<i2").astype(np.float32) / 32768.0
        frame = int(FRAME_SECONDS * TARGET_RATE)
        count = len(samples) // frame
        if count == 0:
            return False
        frames = samples[: count * frame].reshape(count, frame)
        loud = np.sqrt((frames**2).mean(axis=1)) > SPEECH_LEVEL
        return bool(loud.sum() * FRAME_SECONDS >= MIN_SPEECH_SECONDS)

    def wav(self) -> bytes:
        """The audio as a 16 kHz WAV file (what is sent to a transcription endpoint)."""
        out = io.BytesIO()
        samples = np.frombuffer(self.pcm, dtype="<i2")
        soundfile.write(out, samples, TARGET_RATE, format="WAV", subtype="PCM_16")
        return out.getvalue()


def decode(data: bytes) -> Audio:
    """Decodes, mixes down to mono and resamples to TARGET_RATE."""
    if not data:
        raise Undecodable("the file is empty")
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise Undecodable(f"not a readable audio file: {' '.join(str(exc).split())}") from None
    if samples.shape[0] == 0:
        raise Undecodable("the audio holds no samples")
    mono = samples.mean(axis=1)
    if rate != TARGET_RATE:
        mono = soxr.resample(mono, rate, TARGET_RATE)
    pcm = (np.clip(mono, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    return Audio(pcm, round(samples.shape[0] / rate, 3), int(rate))
