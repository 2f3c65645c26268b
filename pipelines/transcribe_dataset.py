"""Official pipeline #5: transcribe dataset.

No `from __future__ import annotations` in pipeline modules: kfp reads the parameter types
from the real annotation objects, and string annotations make it fail.
"""

from typing import NamedTuple

from kfp import dsl

from skit_pipelines.images import load_component
from skit_pipelines.rules import Date, OneOf, Pattern, Range, TimeZone

fetch_calls = load_component(__file__, "fetch_calls")
build_asr_model = load_component(__file__, "build_asr_model")
transcribe_audio = load_component(__file__, "transcribe_audio")


# Named, so the run's outputs read as below rather than kfp's "Output".
class Outputs(NamedTuple):
    transcripts: dsl.Dataset
    report: dsl.Artifact
    transcribed_count: int
    failed_count: int
    recognizer_used: str


@dsl.pipeline(
    name="transcribe-dataset",
    description=(
        "Transcribes audio (sampled calls' turns, a CSV of audio URLs, or a directory or S3 "
        "prefix) with pocketsphinx and a domain grammar, or an OpenAI-compatible endpoint."
    ),
)
def pipeline(
    source: str = "",
    audio_column: str = "audio_url",
    lang: str = "en",
    start_date: str = "",
    end_date: str = "",
    timezone: str = "UTC",
    call_quantity: int = 20,
    seed: int = 0,
    recognizer: str = "pocketsphinx",
    language_model: str = "grammar",
    min_count: int = 2,
    concurrency: int = 4,
    max_attempts: int = 3,
) -> Outputs:
    """Transcribes a dataset of audio files; one CSV row per file with its transcript,
    confidence, duration and status.

    It samples `call_quantity` calls in `lang` from the calls database (random-sample-calls'
    filters) and transcribes every turn's audio, or, when `source` is set, the files of
    `source` instead (the sample is then not transcribed, but it still runs: like the
    domain grammar, it needs calls in `lang` in the calls database). Files are fetched
    `concurrency` at once with retries (expired presigned S3 URLs are re-signed), decoded
    (WAV, FLAC, MP3, Ogg; 8 kHz telephony is resampled to 16 kHz) and transcribed. A file
    that fails is a row with status error and its reason; the run fails only when every
    file fails, the input is empty, or the recogniser is unusable.

    Args:
        source: A CSV with an audio URL column (a path, or a file://, s3:// or http(s) URL
            ending in .csv), a directory, or an s3:// prefix of audio files; empty to
            transcribe the sampled calls.
        audio_column: The CSV's column of audio URLs or paths (relative ones resolve against
            the CSV's location).
        lang: Language of the sampled calls, and of the domain model (pocketsphinx: en).
        start_date: First call date sampled, YYYY-MM-DD in `timezone`; empty for no lower bound.
        end_date: Last call date sampled, YYYY-MM-DD in `timezone`; empty for no upper bound.
        timezone: IANA timezone of the dates, e.g. Asia/Kolkata.
        call_quantity: How many calls to sample when `source` is empty.
        seed: Random seed of the sample.
        recognizer: pocketsphinx (offline) or openai (the OpenAI-compatible
            /audio/transcriptions endpoint the service configures in ASR_BASE_URL,
            ASR_MODEL and ASR_API_KEY: whisper.cpp's server, faster-whisper-server, vLLM).
        language_model: grammar (pocketsphinx constrained to a grammar built from the calls
            database's transcripts in `lang`) or default (pocketsphinx's general en-us
            language model). The openai recogniser ignores the model; use default with it
            for languages other than en, which have no grammar.
        min_count: The domain grammar leaves out sentences heard fewer times than this.
        concurrency: Files fetched, decoded and transcribed at once (1 to 32).
        max_attempts: Attempts per download and per transcription request.
    """
    model = build_asr_model(language=lang, kind=language_model, min_count=min_count)
    # The calls database changes under the same parameters.
    model.set_caching_options(False)
    # Always sampled, even with a source (which the transcribe step then reads instead): a
    # kfp condition around the sample would give the pipeline two transcribe steps and
    # optional inputs; the sample is one query.
    calls = fetch_calls(
        start_date=start_date,
        end_date=end_date,
        timezone=timezone,
        lang=lang,
        call_quantity=call_quantity,
        seed=seed,
    )
    calls.set_caching_options(False)
    task = transcribe_audio(
        dataset=calls.outputs["calls"],
        source=source,
        audio_column=audio_column,
        model=model.outputs["model"],
        recognizer=recognizer,
        language=lang,
        concurrency=concurrency,
        max_attempts=max_attempts,
    )
    # The audio behind URLs and an endpoint's answers are not inputs: never reuse a result.
    task.set_caching_options(False)
    return Outputs(
        transcripts=task.outputs["transcripts"],
        report=task.outputs["report"],
        transcribed_count=task.outputs["transcribed_count"],
        failed_count=task.outputs["failed_count"],
        recognizer_used=task.outputs["recognizer_used"],
    )


# What the steps would refuse, refused at CreateRun instead (skit_pipelines.rules).
rules = {
    "lang": Pattern("[a-z]{2,3}", meaning="a language code such as en"),
    "start_date": Date(allow_empty=True),
    "end_date": Date(allow_empty=True, not_before="start_date"),
    "timezone": TimeZone(),
    "call_quantity": Range(minimum=1),
    "recognizer": OneOf("pocketsphinx", "openai"),
    "language_model": OneOf("grammar", "default"),
    "min_count": Range(minimum=1),
    "concurrency": Range(minimum=1, maximum=32),
    "max_attempts": Range(minimum=1),
}
