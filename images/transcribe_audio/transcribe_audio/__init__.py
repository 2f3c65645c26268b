"""transcribe_audio: transcripts, confidence and duration per audio file of a dataset.

The image's entrypoint (`python3 -m transcribe_audio`), one module per job:

- `sources`: the input (a CSV with an audio URL column, a directory or S3 prefix) and
  fetching each file (retries, presigned S3 URLs re-signed).
- `audio`: decoding (WAV, FLAC, MP3, Ogg) and resampling to 16 kHz mono.
- `recognizers`: pocketsphinx (offline, optional domain grammar) and an OpenAI-compatible
  `/audio/transcriptions` endpoint.
- `cli`: arguments, the run over the files, the outputs, `main(argv) -> int`.
"""

from __future__ import annotations

from .audio import Audio, Undecodable, decode
from .cli import OUTPUT_COLUMNS, RECOGNIZERS, Options, Outcome, main, transcribe
from .recognizers import (
    EndpointConfig,
    OpenAITranscriptions,
    Pocketsphinx,
    Transcript,
    digits_to_numbers,
)
from .sources import fetch, presigned_expired, re_presign, read_items, s3_location

__all__ = [
    "OUTPUT_COLUMNS",
    "RECOGNIZERS",
    "Audio",
    "EndpointConfig",
    "OpenAITranscriptions",
    "Options",
    "Outcome",
    "Pocketsphinx",
    "Transcript",
    "Undecodable",
    "decode",
    "digits_to_numbers",
    "fetch",
    "main",
    "presigned_expired",
    "re_presign",
    "read_items",
    "s3_location",
    "transcribe",
]
