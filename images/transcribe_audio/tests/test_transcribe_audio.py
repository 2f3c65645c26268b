from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile

from skit_components.db import sqlite_url
from skit_components.loader import import_component
from skit_demo.audio import CLIPS_DIR, read_manifest
from skit_testing.fake_openai import (
    FakeChatServer,
    Reply,
    Request,
    transcription_reply,
    unreachable_url,
)

FOLDER = Path(__file__).resolve().parents[1]
ta = import_component(FOLDER)
build = import_component(FOLDER.parent / "build_asr_model")

# Clips of the committed demo audio whose texts the domain grammar covers.
TEXTS = ("i will pay tomorrow", "call me later", "what is my balance", "i have already paid")


@pytest.fixture(scope="module")
def clips() -> dict[str, Path]:
    rows = {r.text: r for r in read_manifest()}
    return {text: CLIPS_DIR / rows[text].clip for text in TEXTS}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The domain grammar built from the default demo calls database."""
    from skit_demo import generate

    root = tmp_path_factory.mktemp("asr")
    calls = sqlite_url(root / "calls.db")
    generate(calls, sqlite_url(root / "metrics.db"))
    out = root / "model"
    build.build(calls, build.Options(), out)
    return out


def run(tmp_path: Path, *args: str) -> tuple[int, dict[str, Path]]:
    out = {name: tmp_path / "out" / name for name in ("t.csv", "tc", "fc", "ru", "report.json")}
    code = ta.main(
        [
            *args,
            f"--transcripts={out['t.csv']}",
            f"--transcribed-count={out['tc']}",
            f"--failed-count={out['fc']}",
            f"--recognizer-used={out['ru']}",
            f"--report={out['report.json']}",
        ]
    )
    return code, out


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, header: list[str], data: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(data)
    return path


def reencode(clip: Path, target: Path, rate: int, fmt: str, subtype: str | None = None) -> Path:
    samples, source_rate = soundfile.read(clip, dtype="float32")
    import soxr

    soundfile.write(
        target, soxr.resample(samples, source_rate, rate), rate, format=fmt, subtype=subtype
    )
    return target


def test_pocketsphinx_with_the_domain_grammar_on_the_committed_audio(tmp_path, clips, model):
    dataset = write_csv(
        tmp_path / "calls.csv",
        ["call_id", "audio_url", "truth"],
        [[str(i), p.as_uri(), text] for i, (text, p) in enumerate(clips.items())],
    )
    code, out = run(tmp_path, f"--dataset={dataset}", f"--model={model}", "--concurrency=2")
    assert code == 0
    written = rows(out["t.csv"])
    assert [r["call_id"] for r in written] == ["0", "1", "2", "3"]
    assert all(r["status"] == "ok" and r["sample_rate"] == "8000" for r in written)
    assert all(1.0 < float(r["duration_seconds"]) < 4.0 for r in written)
    right = sum(r["transcript"] == r["truth"] for r in written)
    assert right >= 3, [(r["truth"], r["transcript"]) for r in written]
    assert out["tc"].read_text() == "4" and out["fc"].read_text() == "0"
    assert out["ru"].read_text().startswith("pocketsphinx:en-us+grammar(")


@pytest.mark.parametrize(
    ("name", "rate", "fmt", "subtype"),
    [
        ("a.wav", 16000, "WAV", "PCM_16"),
        ("b.flac", 8000, "FLAC", None),
        ("c.mp3", 16000, "MP3", None),
        ("d.wav", 8000, "WAV", "PCM_16"),
    ],
)
def test_formats_and_rates_from_a_directory(tmp_path, clips, model, name, rate, fmt, subtype):
    folder = tmp_path / "audio"
    folder.mkdir()
    reencode(clips["i have already paid"], folder / name, rate, fmt, subtype)
    code, out = run(tmp_path, f"--source={folder}", f"--model={model}")
    assert code == 0
    (row,) = rows(out["t.csv"])
    assert row["transcript"] == "i have already paid"
    assert row["sample_rate"] == str(rate)


def test_the_default_language_model_transcribes_without_a_grammar(tmp_path, clips):
    one = write_csv(tmp_path / "one.csv", ["audio_url"], [[clips["call me later"].as_uri()]])
    code, out = run(tmp_path / "second", f"--dataset={one}")
    assert code == 0
    (row,) = rows(out["t.csv"])
    assert row["status"] == "ok" and row["transcript"]
    assert out["ru"].read_text() == "pocketsphinx:en-us"


def test_a_bad_file_is_a_row_and_relative_urls_resolve_against_the_csv(tmp_path, clips, model):
    (tmp_path / "broken.wav").write_bytes(b"RIFF this is not audio")
    (tmp_path / "good.ogg").write_bytes(clips["call me later"].read_bytes())
    dataset = write_csv(
        tmp_path / "calls.csv",
        ["audio_url"],
        [["good.ogg"], ["broken.wav"], ["missing.wav"], [""]],
    )
    code, out = run(tmp_path, f"--source={dataset}", f"--model={model}")
    assert code == 0
    good, broken, missing, empty = rows(out["t.csv"])
    assert good["status"] == "ok" and good["transcript"] == "call me later"
    assert broken["status"] == "error" and broken["error"].startswith("undecodable:")
    assert missing["status"] == "error" and missing["error"].startswith("download failed:")
    assert empty["status"] == "skipped"
    assert out["fc"].read_text() == "2"
    report = json.loads(out["report.json"].read_text())
    assert report["errors_by_cause"] == {"undecodable": 1, "download failed": 1}


def test_every_file_failing_fails_the_step_with_one_line(tmp_path, capsys):
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    code, out = run(tmp_path, f"--source={tmp_path}")
    assert code == 13
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("transcribe_audio: none of the 1 files was transcribed")
    assert "undecodable" in err[0]
    assert not out["t.csv"].exists()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("empty_dir", "no audio files"),
        ("empty_csv", "the input CSV has no rows"),
        ("no_column", "has no 'audio_url' column"),
        ("bad_recognizer", "recognizer must be one of"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, setup, message):
    args = []
    if setup == "empty_dir":
        (tmp_path / "in").mkdir()
        args = [f"--source={tmp_path / 'in'}"]
    elif setup == "empty_csv":
        args = [f"--dataset={write_csv(tmp_path / 'e.csv', ['audio_url'], [])}"]
    elif setup == "no_column":
        args = [f"--dataset={write_csv(tmp_path / 'e.csv', ['url'], [['x.wav']])}"]
    else:
        args = [f"--source={tmp_path}", "--recognizer=vosk"]
    code, out = run(tmp_path, *args)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out["t.csv"].exists()


def wav_of(request: Request) -> tuple[str, int]:
    name, data = request.files["file"]
    _, rate = soundfile.read(io.BytesIO(data))
    return name, rate


def test_an_openai_compatible_endpoint(tmp_path, clips, monkeypatch):
    seen = []

    def transcribe(request: Request) -> Reply:
        seen.append(request)
        if len(seen) == 1:
            return Reply(429, {"error": {"message": "slow down", "type": "rate_limit"}})
        return transcription_reply(
            "call me later", segments=[(0.0, 1.0, "call me", -0.1), (1.0, 1.8, " later", -0.3)]
        )

    monkeypatch.setenv("ASR_MODEL", "whisper-small")
    monkeypatch.setenv("ASR_API_KEY", "secret")
    one = write_csv(tmp_path / "one.csv", ["audio_url"], [[clips["call me later"].as_uri()]])
    with FakeChatServer(transcribe=transcribe) as server:
        monkeypatch.setenv("ASR_BASE_URL", server.url)
        code, out = run(tmp_path / "b", f"--dataset={one}", "--recognizer=openai")
    assert code == 0
    (row,) = rows(out["t.csv"])
    assert row["transcript"] == "call me later"
    assert float(row["confidence"]) == pytest.approx(np.exp(-0.2), abs=1e-3)
    assert out["ru"].read_text() == "openai:whisper-small"
    request = seen[-1]
    assert request.path == "/v1/audio/transcriptions"
    assert request.headers["Authorization"] == "Bearer secret"
    assert request.form == {
        "model": "whisper-small",
        "response_format": "verbose_json",
        "language": "en",
    }
    assert wav_of(request)[1] == 16000
    assert len(seen) == 2  # the 429, retried


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (401, 2, "rejected the credentials (HTTP 401: Incorrect API key provided)"),
        (404, 2, "answered HTTP 404"),
    ],
)
def test_rejected_configuration_fails_the_step(
    tmp_path, clips, monkeypatch, capsys, status, code, message
):
    def transcribe(request: Request) -> Reply:
        return Reply(
            status,
            {
                "error": {
                    "message": "Incorrect API key provided",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )

    one = write_csv(tmp_path / "one.csv", ["audio_url"], [[p.as_uri()] for p in clips.values()])
    with FakeChatServer(transcribe=transcribe) as server:
        monkeypatch.setenv("ASR_BASE_URL", server.url)
        got, out = run(tmp_path, f"--dataset={one}", "--recognizer=openai", "--concurrency=1")
    assert got == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out["t.csv"].exists()


def test_an_unreachable_endpoint_fails_the_step(tmp_path, clips, monkeypatch, capsys):
    monkeypatch.setenv("ASR_BASE_URL", unreachable_url())
    one = write_csv(tmp_path / "one.csv", ["audio_url"], [[clips["call me later"].as_uri()]])
    monkeypatch.setattr(ta.recognizers, "BACKOFF_INITIAL_SECONDS", 0.01)
    code, _ = run(tmp_path, f"--dataset={one}", "--recognizer=openai", "--max-attempts=2")
    assert code == 13
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is unreachable after 2 attempts" in err[0], err


def test_openai_without_an_endpoint_is_bad_input(tmp_path, clips, monkeypatch, capsys):
    monkeypatch.delenv("ASR_BASE_URL", raising=False)
    code, _ = run(tmp_path, f"--source={tmp_path}", "--recognizer=openai")
    assert code == 2
    assert "ASR_BASE_URL is not set" in capsys.readouterr().err


def test_expired_presigned_urls_are_recognised_and_located():
    url = (
        "https://calls.s3.ap-south-1.amazonaws.com/us/2026/a%20b.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Date=20261001T000000Z&X-Amz-Expires=604800&X-Amz-Signature=abc"
    )
    assert ta.presigned_expired(url, now=datetime(2026, 10, 8, 0, 0, 1, tzinfo=UTC))
    assert not ta.presigned_expired(url, now=datetime(2026, 10, 7, 23, 59, tzinfo=UTC))
    assert ta.s3_location(url) == ("calls", "us/2026/a b.wav")
    assert ta.s3_location("http://127.0.0.1:9000/calls/x/y.wav?X-Amz-Signature=1") == (
        "calls",
        "x/y.wav",
    )


def test_digit_runs_become_numbers():
    assert ta.digits_to_numbers("my number ends with four eight two one") == (
        "my number ends with 4821"
    )
    assert ta.digits_to_numbers("no one by that name") == "no one by that name"
    assert ta.digits_to_numbers("two four") == "two four"


class FakeS3:
    """generate_presigned_url only: what re-signing asks of boto3's S3 client."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.signed: list[dict] = []

    def generate_presigned_url(self, operation: str, Params: dict, ExpiresIn: int) -> str:
        self.signed.append({"operation": operation, **Params, "expires": ExpiresIn})
        return self.url


def test_a_403_on_a_presigned_url_is_re_signed_once(clips):
    """S3 answers 403 to an expired (or skewed) signature; the original re-signed such
    URLs with fresh credentials. Here a local server plays S3: 403 for the old signature,
    the audio for the new one."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    audio = clips["call me later"].read_bytes()
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            paths.append(self.path)
            ok = "X-Amz-Signature=new" in self.path
            body = audio if ok else b"<Error><Code>AccessDenied</Code></Error>"
            self.send_response(200 if ok else 403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/calls/us/a.opus"
        s3 = FakeS3(f"{base}?X-Amz-Signature=new")
        data = ta.fetch(f"{base}?X-Amz-Signature=old", lambda: s3, max_attempts=2)
    finally:
        server.shutdown()
        server.server_close()
    assert data == audio
    assert s3.signed == [
        {"operation": "get_object", "Bucket": "calls", "Key": "us/a.opus", "expires": 3600}
    ]
    assert [p.split("=")[-1] for p in paths] == ["old", "new"]


def test_plain_json_answers_have_no_confidence():
    """response_format json, which some servers answer whatever was asked: {"text"} only."""
    parsed = ta.recognizers._parse(b'{"text": "  call me\\n later "}')
    assert parsed == ta.Transcript("call me later", None)


def test_a_transcript_does_not_depend_on_the_files_heard_before(tmp_path, model):
    """pocketsphinx carries noise and normalisation estimates between utterances unless
    reset; with the reset, "correct" (a clip that came out differently after other clips
    before it) is transcribed the same alone and last."""
    manifest = read_manifest()
    by_text = {r.text: r for r in manifest}
    before = [CLIPS_DIR / r.clip for r in manifest[:12]]
    target = CLIPS_DIR / by_text["correct"].clip
    alone = write_csv(tmp_path / "alone.csv", ["audio_url"], [[target.as_uri()]])
    last = write_csv(
        tmp_path / "last.csv", ["audio_url"], [[p.as_uri()] for p in [*before, target]]
    )
    _, out = run(tmp_path / "a", f"--dataset={alone}", f"--model={model}", "--concurrency=1")
    (single,) = rows(out["t.csv"])
    _, out = run(tmp_path / "b", f"--dataset={last}", f"--model={model}", "--concurrency=1")
    assert rows(out["t.csv"])[-1]["transcript"] == single["transcript"]
