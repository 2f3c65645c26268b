"""transcribe_audio: transcripts of a dataset of audio files.

Input: a calls CSV with an audio URL column (`dataset`, e.g. fetch_calls' turns, or a CSV
at `source`), or a directory / S3 prefix of audio files (`source`). Each file is fetched
(file://, s3://, http(s); `concurrency` at once, retried with backoff, expired presigned S3
URLs re-signed), decoded (WAV, FLAC, MP3, Ogg) and resampled to 16 kHz, and transcribed by
the recogniser chosen: `pocketsphinx` offline (with the domain model from build_asr_model
when one is given) or `openai`, an OpenAI-compatible transcription endpoint (ASR_BASE_URL,
ASR_MODEL, ASR_API_KEY).

Output: a CSV with the input's columns and audio_url, transcript, confidence,
duration_seconds, sample_rate, status (ok, error, skipped) and error, one row per input
row. A file that fails is a row with its error; every file failing fails the step, and so
do an unusable recogniser (unreachable endpoint, rejected credentials) and empty input.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skit_components import cli
from skit_components.outputs import output_path, write_json, write_parameter

from .audio import Undecodable, decode
from .recognizers import (
    OpenAITranscriptions,
    Pocketsphinx,
    Recognizer,
    RecognizerUnusable,
    TranscriptionFailed,
    endpoint_config,
)
from .sources import FetchFailed, Item, fetch, read_items

logger = logging.getLogger(__name__)

RECOGNIZERS = ("pocketsphinx", "openai")
OUTPUT_COLUMNS = (
    "audio_url",
    "transcript",
    "confidence",
    "duration_seconds",
    "sample_rate",
    "status",
    "error",
)
MAX_CONCURRENCY = 32


@dataclass(frozen=True)
class Options:
    source: str = ""
    audio_column: str = "audio_url"
    recognizer: str = "pocketsphinx"
    language: str = "en"
    concurrency: int = 4
    max_attempts: int = 3
    timeout_seconds: float = 120.0


@dataclass(frozen=True)
class Result:
    url: str
    transcript: str = ""
    confidence: float | None = None
    duration_seconds: float | None = None
    sample_rate: int | None = None
    status: str = "ok"
    error: str = ""


@dataclass(frozen=True)
class Outcome:
    transcribed: int
    failed: int
    recognizer: str
    report: dict[str, Any]


def _s3_factory() -> Callable[[], Any]:
    lock = threading.Lock()
    client: list[Any] = []

    def get() -> Any:
        with lock:
            if not client:
                import boto3

                # boto3 reads AWS_ENDPOINT_URL (S3-compatible servers) and the credentials
                # from the declared environment itself.
                client.append(boto3.client("s3"))
            return client[0]

    return get


def make_recognizer(options: Options, model_dir: Path | None) -> Recognizer:
    if options.recognizer == "pocketsphinx":
        return Pocketsphinx(model_dir)
    config = endpoint_config(
        dict(os.environ),
        timeout_seconds=options.timeout_seconds,
        max_attempts=options.max_attempts,
        language=options.language,
    )
    return OpenAITranscriptions(config)


def transcribe(
    options: Options, dataset: Path | None, model_dir: Path | None, out: Path
) -> Outcome:
    """Writes the transcripts CSV to `out`.

    Raises:
        cli.BadInput: bad options, no input, a CSV without the audio column.
        cli.ComponentError: the recogniser is unusable, or every file failed.
    """
    o = options
    if o.recognizer not in RECOGNIZERS:
        raise cli.BadInput(
            f"recognizer must be one of {', '.join(RECOGNIZERS)}, got {o.recognizer!r}"
        )
    if not 1 <= o.concurrency <= MAX_CONCURRENCY or o.max_attempts < 1 or o.timeout_seconds <= 0:
        raise cli.BadInput(
            f"concurrency must be 1 to {MAX_CONCURRENCY}, max_attempts >= 1, timeout_seconds > 0"
        )
    s3 = _s3_factory()
    # The configuration first: a missing endpoint is reported whatever the input.
    recognizer = make_recognizer(o, model_dir)
    items, columns = read_items(o.source, dataset, o.audio_column, s3)
    began = time.perf_counter()
    logger.info(
        "transcribing %d files with %s, %d at once", len(items), recognizer.name, o.concurrency
    )

    def one(item: Item) -> Result:
        if not item.url:
            return Result("", status="skipped", error="no audio URL")
        try:
            audio = decode(fetch(item.url, s3, max_attempts=o.max_attempts))
        except FetchFailed as exc:
            return Result(item.url, status="error", error=f"download failed: {exc}")
        except Undecodable as exc:
            return Result(item.url, status="error", error=f"undecodable: {exc}")
        name = item.url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or "audio"
        try:
            transcript = recognizer.transcribe(audio, name)
        except TranscriptionFailed as exc:
            return Result(
                item.url, duration_seconds=audio.duration_seconds,
                sample_rate=audio.sample_rate, status="error", error=f"transcription failed: {exc}",
            )  # fmt: skip
        return Result(
            item.url, transcript.text, transcript.confidence, audio.duration_seconds,
            audio.sample_rate,
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=o.concurrency) as pool:
        futures = [pool.submit(one, item) for item in items]
        try:
            results = [f.result() for f in futures]
        except RecognizerUnusable:
            for f in futures:
                f.cancel()
            raise
    ok = [r for r in results if r.status == "ok"]
    failed = [r for r in results if r.status == "error"]
    if not ok:
        first = failed[0].error if failed else "no row has an audio URL"
        raise cli.ComponentError(
            f"none of the {len(results)} files was transcribed; the first error: {first}"
        )
    extra = [c for c in columns if c not in OUTPUT_COLUMNS]
    with output_path(out).open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*extra, *OUTPUT_COLUMNS])
        for item, r in zip(items, results, strict=True):
            writer.writerow(
                [
                    *(item.row.get(c, "") for c in extra),
                    r.url,
                    r.transcript,
                    "" if r.confidence is None else f"{r.confidence:.4f}",
                    "" if r.duration_seconds is None else f"{r.duration_seconds:.3f}",
                    "" if r.sample_rate is None else r.sample_rate,
                    r.status,
                    r.error,
                ]
            )
    seconds = time.perf_counter() - began
    audio_seconds = sum(r.duration_seconds or 0.0 for r in ok)
    report = {
        "recognizer": recognizer.name,
        "files": len(results),
        "transcribed": len(ok),
        "failed": len(failed),
        "skipped": sum(r.status == "skipped" for r in results),
        "errors_by_cause": dict(Counter(r.error.split(":", 1)[0] for r in failed)),
        "first_errors": [{"audio_url": r.url, "error": r.error} for r in failed[:20]],
        "audio_seconds": round(audio_seconds, 3),
        "wall_seconds": round(seconds, 3),
        "real_time_factor": round(seconds / audio_seconds, 3) if audio_seconds else None,
        "sample_rates": dict(Counter(str(r.sample_rate) for r in ok)),
    }
    logger.info(
        "%s transcribed %d of %d files (%.1f s of audio in %.1f s); %d failed",
        recognizer.name, len(ok), len(results), audio_seconds, seconds, len(failed),
    )  # fmt: skip
    return Outcome(len(ok), len(failed), recognizer.name, report)


def _optional_path(text: str) -> Path | None:
    return Path(text) if text.strip() else None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="transcribe_audio", description=__doc__)
    parser.add_argument("--dataset", type=_optional_path, default=None, help="input CSV")
    parser.add_argument("--source", default="")
    parser.add_argument("--audio-column", default=Options.audio_column)
    parser.add_argument("--model", type=_optional_path, default=None, help="input: model dir")
    parser.add_argument("--recognizer", default=Options.recognizer)
    parser.add_argument("--language", default=Options.language)
    parser.add_argument("--concurrency", type=cli.integer, default=Options.concurrency)
    parser.add_argument("--max-attempts", type=cli.integer, default=Options.max_attempts)
    parser.add_argument("--timeout-seconds", type=cli.number, default=Options.timeout_seconds)
    parser.add_argument("--transcripts", type=Path, required=True, help="output: CSV")
    parser.add_argument("--transcribed-count", type=Path, required=True, help="output")
    parser.add_argument("--failed-count", type=Path, required=True, help="output")
    parser.add_argument("--recognizer-used", type=Path, required=True, help="output")
    parser.add_argument("--report", type=Path, required=True, help="output: JSON report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The step: parses `argv`, transcribes, writes the outputs; returns the exit code."""

    def body() -> None:
        args = _parse_args(argv)
        options = Options(
            source=args.source,
            audio_column=args.audio_column.strip() or Options.audio_column,
            recognizer=args.recognizer.strip(),
            language=args.language.strip(),
            concurrency=args.concurrency,
            max_attempts=args.max_attempts,
            timeout_seconds=args.timeout_seconds,
        )
        if args.dataset is not None and not args.dataset.is_file():
            raise cli.BadInput(f"input dataset {args.dataset} does not exist")
        outcome = transcribe(options, args.dataset, args.model, args.transcripts)
        write_parameter(args.transcribed_count, outcome.transcribed)
        write_parameter(args.failed_count, outcome.failed)
        write_parameter(args.recognizer_used, outcome.recognizer)
        write_json(args.report, outcome.report)

    return cli.run("transcribe_audio", body)
