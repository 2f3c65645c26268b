"""The recognisers: pocketsphinx offline (its bundled en-us model, optionally constrained to
a domain grammar from build_asr_model), or any OpenAI-compatible `/audio/transcriptions`
endpoint (whisper.cpp's server, faster-whisper-server, vLLM, OpenAI)."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

from skit_components import cli

from .audio import TARGET_RATE, Audio

logger = logging.getLogger(__name__)

ASR_ENV = ("ASR_BASE_URL", "ASR_MODEL", "ASR_API_KEY")
"""The environment the openai recogniser reads (component.yaml declares it)."""
TRANSCRIPTIONS_PATH = "/audio/transcriptions"
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MIN_DIGIT_RUN = 3
"""Runs of at least this many spoken digits become a digit string ("four eight two one" ->
"4821"), as telephony ASR writes account numbers; "no one" stays words."""


@dataclass(frozen=True)
class Transcript:
    text: str
    confidence: float | None
    """0 to 1 where the recogniser gives one."""


class TranscriptionFailed(Exception):
    """This file's transcription failed (its row records why); others may succeed."""


class RecognizerUnusable(cli.ComponentError):
    """The recogniser cannot work for any file (exit 13; 2 when its configuration is
    wrong, see `Rejected`)."""


class Rejected(RecognizerUnusable):
    exit_code = cli.EXIT_BAD_INPUT


class Recognizer(Protocol):
    name: str

    def transcribe(self, audio: Audio, filename: str) -> Transcript: ...


def digits_to_numbers(text: str) -> str:
    """Inverse text normalisation of digit runs (see MIN_DIGIT_RUN)."""
    out: list[str] = []
    run: list[str] = []
    for word in [*text.split(), ""]:
        if word in DIGITS:
            run.append(str(DIGITS.index(word)))
            continue
        if len(run) >= MIN_DIGIT_RUN:
            out.append("".join(run))
        else:
            out.extend(DIGITS[int(d)] for d in run)
        run = []
        if word:
            out.append(word)
    return " ".join(out)


class Pocketsphinx:
    """pocketsphinx 5 with its en-us model; one decoder, used by one thread at a time."""

    def __init__(self, model_dir: Path | None) -> None:
        # Imported here: the openai recogniser needs no pocketsphinx in the step.
        from pocketsphinx import Decoder

        # Batch CMN: each file normalised on its own (see transcribe for the rest).
        self._decoder = Decoder(samprate=TARGET_RATE, loglevel="FATAL", cmn="batch")
        self._lock = threading.Lock()
        self.name = "pocketsphinx:en-us"
        model = _read_model(model_dir)
        if model.get("kind") == "grammar" and model_dir is not None:
            for line in (model_dir / str(model["words"])).read_text(encoding="utf-8").splitlines():
                word, _, phones = line.partition(" ")
                if word and phones:
                    self._decoder.add_word(word, phones.strip(), update=False)
            grammar = (model_dir / str(model["grammar"])).read_text(encoding="utf-8")
            try:
                self._decoder.add_jsgf_string("domain", grammar)
            except (ValueError, RuntimeError) as exc:
                raise cli.BadInput(f"the domain grammar does not load: {exc}") from None
            self._decoder.activate_search("domain")
            self.name = f"pocketsphinx:en-us+grammar({model.get('sentences', '?')} sentences)"
        elif model.get("kind") not in (None, "default"):
            raise cli.BadInput(f"unknown ASR model kind {model.get('kind')!r} in {model_dir}")

    def transcribe(self, audio: Audio, filename: str) -> Transcript:
        if not audio.has_speech():
            return Transcript("", None)
        with self._lock:
            decoder = self._decoder
            # Fresh feature extraction per file (noise and normalisation estimates carry
            # over between utterances otherwise): a file's transcript then does not depend
            # on which files the decoder heard before it, whatever the concurrency.
            decoder.reinit_feat()
            decoder.start_utt()
            decoder.process_raw(audio.pcm, full_utt=True)
            decoder.end_utt()
            hypothesis = decoder.hyp()
        if hypothesis is None:
            return Transcript("", None)
        # No confidence: pocketsphinx 5 reports a posterior of 1 for every hypothesis of
        # these searches (it computes none without a lattice pass), which says nothing.
        return Transcript(digits_to_numbers(hypothesis.hypstr), None)


def _read_model(model_dir: Path | None) -> dict[str, Any]:
    if model_dir is None:
        return {}
    path = model_dir / "model.json"
    if not path.is_file():
        raise cli.BadInput(f"{model_dir} is not an ASR model directory (no model.json)")
    value = json.loads(path.read_text(encoding="utf-8"))
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class EndpointConfig:
    base_url: str
    model: str
    api_key: str = field(repr=False)
    timeout_seconds: float = 120.0
    max_attempts: int = 4
    language: str = ""

    @property
    def endpoint(self) -> str:
        return self.base_url.rstrip("/") + TRANSCRIPTIONS_PATH


def endpoint_config(
    environ: dict[str, str], *, timeout_seconds: float, max_attempts: int, language: str
) -> EndpointConfig:
    """The openai recogniser's configuration from its declared environment (ASR_ENV)."""
    base_url = environ.get("ASR_BASE_URL", "").strip()
    if not base_url:
        raise cli.BadInput(
            "ASR_BASE_URL is not set: recognizer=openai needs an OpenAI-compatible "
            "transcription endpoint (e.g. http://whisper:8080/v1)"
        )
    if not base_url.startswith(("http://", "https://")):
        raise cli.BadInput(f"ASR_BASE_URL must be an http(s) URL, got {base_url!r}")
    return EndpointConfig(
        base_url=base_url,
        model=environ.get("ASR_MODEL", "").strip() or "whisper-1",
        api_key=environ.get("ASR_API_KEY", "").strip(),
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
        language=language,
    )


class OpenAITranscriptions:
    """POST <ASR_BASE_URL>/audio/transcriptions, as OpenAI's audio API defines it
    (https://platform.openai.com/docs/api-reference/audio/createTranscription): a
    multipart form with `file`, `model`, `response_format=verbose_json` (and `language`);
    the answer's `text`, and a confidence from its segments' `avg_logprob`."""

    def __init__(self, config: EndpointConfig, *, urlopen: Any = urllib.request.urlopen) -> None:
        self.config = config
        self.name = f"openai:{config.model}"
        self._urlopen = urlopen
        self._unusable: RecognizerUnusable | None = None

    def transcribe(self, audio: Audio, filename: str) -> Transcript:
        if self._unusable is not None:
            raise self._unusable
        fields = {"model": self.config.model, "response_format": "verbose_json"}
        if self.config.language:
            fields["language"] = self.config.language
        name = filename.rsplit(".", 1)[0] + ".wav"
        body, content_type = _multipart(fields, name, audio.wav())
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        last = ""
        for attempt in range(1, self.config.max_attempts + 1):
            request = urllib.request.Request(
                self.config.endpoint, data=body, headers=headers, method="POST"
            )
            try:
                with self._urlopen(request, timeout=self.config.timeout_seconds) as response:
                    return _parse(response.read())
            except urllib.error.HTTPError as exc:
                message = _error_message(exc)
                if exc.code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
                    self._unusable = Rejected(
                        f"ASR endpoint rejected the credentials (HTTP {exc.code}{message}): "
                        "check ASR_API_KEY"
                    )
                    raise self._unusable from None
                if exc.code == HTTPStatus.NOT_FOUND:
                    self._unusable = Rejected(
                        f"ASR endpoint answered HTTP 404 for {self.config.endpoint}{message}: "
                        "check ASR_BASE_URL and ASR_MODEL"
                    )
                    raise self._unusable from None
                retryable = exc.code in (408, 409, 425, 429) or exc.code >= 500
                if not retryable:
                    raise TranscriptionFailed(
                        f"the endpoint refused it: HTTP {exc.code}{message}"
                    ) from None
                last = f"HTTP {exc.code}{message}"
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, TimeoutError):
                    last = f"timed out after {self.config.timeout_seconds:g}s"
                else:
                    last = f"unreachable: {exc.reason}"
                    if attempt == self.config.max_attempts:
                        self._unusable = RecognizerUnusable(
                            f"ASR endpoint {self.config.endpoint} is unreachable after "
                            f"{attempt} attempts: {exc.reason}"
                        )
                        raise self._unusable from None
            except TimeoutError:
                last = f"timed out after {self.config.timeout_seconds:g}s"
            except (ConnectionError, OSError) as exc:
                last = f"connection lost: {exc}"
            except _Malformed as exc:
                last = str(exc)
            if attempt < self.config.max_attempts:
                time.sleep(min(BACKOFF_MAX_SECONDS, BACKOFF_INITIAL_SECONDS * 2 ** (attempt - 1)))
        raise TranscriptionFailed(f"{last} (after {self.config.max_attempts} attempts)")


class _Malformed(Exception):
    pass


def _parse(raw: bytes) -> Transcript:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _Malformed("the endpoint did not answer with JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise _Malformed("the endpoint's answer has no text")
    segments = body.get("segments")
    confidence = None
    if isinstance(segments, list):
        logprobs = [
            s["avg_logprob"]
            for s in segments
            if isinstance(s, dict) and isinstance(s.get("avg_logprob"), int | float)
        ]
        if logprobs:
            confidence = round(math.exp(sum(logprobs) / len(logprobs)), 4)
    return Transcript(" ".join(body["text"].split()), confidence)


def _error_message(exc: urllib.error.HTTPError) -> str:
    """`: <message>` from OpenAI's error body {"error": {"message": ...}}, if there is one."""
    try:
        body = json.loads(exc.read() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return f": {' '.join(str(message).split())}" if message else ""


def _multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = f"skit-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: audio/wav\r\n\r\n'.encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
