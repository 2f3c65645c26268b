"""transcribe-dataset end to end on the demo data: the run controller, the local backend and
the local executor in process, running the real components (build_asr_model, fetch_calls,
transcribe_audio) on the demo calls' committed audio, with pocketsphinx and with an
OpenAI-compatible stand-in; artifacts and audio in S3 (moto's server) too. The transcripts
are scored by asr_metrics, the scorer of evaluate-asr."""

# No `from __future__ import annotations`: kfp reads the pipeline signatures' real types.

import csv
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

from skit_components.db import connect
from skit_components.loader import import_component
from skit_demo.audio import CLIPS_DIR, read_manifest
from skit_pipelines.artifacts.s3 import S3ArtifactStore, S3Settings
from skit_pipelines.backends.local import LocalBackend, StoreStepCache
from skit_pipelines.domain import Run, RunState, StepState
from skit_pipelines.executor import ExecutorConfig, LocalExecutor
from skit_pipelines.runs import CreateRunInput, RunController
from skit_pipelines.store.sqlite import SqliteRunStore
from skit_testing.fake_openai import FakeChatServer, Reply, Request, transcription_reply

PIPELINE = "transcribe_dataset"
ROOT = Path(__file__).resolve().parents[2]
SCORED_CLIPS = 48
"""Clips of the committed demo audio scored here (every 6th, so the run stays short)."""


def output_rows(run: Run, name: str = "transcripts") -> list[dict]:
    (artifact,) = [a for a in run.outputs if a.name == name]
    path = Path(unquote(urlparse(artifact.uri).path))
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def manifest_subset(tmp_path: Path) -> Path:
    """A CSV of demo clips with their true text, audio_url relative to the CSV's folder."""
    rows = read_manifest()[::6][:SCORED_CLIPS]
    folder = tmp_path / "clips"
    folder.mkdir()
    for row in rows:
        (folder / row.clip).symlink_to(CLIPS_DIR / row.clip)
    path = folder / "dataset.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["audio_url", "text", "language"])
        writer.writerows([r.clip, r.text, r.language] for r in rows)
    return path


def score(rows_path: Path, tmp_path: Path) -> float:
    """WER of the transcripts against the true texts, by asr_metrics' entrypoint."""
    metrics = import_component(ROOT / "images" / "asr_metrics")
    out = tmp_path / "scores"
    code = metrics.main(
        [
            f"--dataset={rows_path}",
            "--true-column=text",
            "--pred-column=transcript",
            "--language-column=language",
            f"--report={out / 'report.md'}",
            f"--metrics={out / 'metrics.csv'}",
            f"--utterances={out / 'utterances.csv'}",
            f"--wer={out / 'wer'}",
            f"--cer={out / 'cer'}",
        ]
    )
    assert code == 0
    return float((out / "wer").read_text())


def artifact_path(run: Run, name: str) -> Path:
    (artifact,) = [a for a in run.outputs if a.name == name]
    return Path(unquote(urlparse(artifact.uri).path))


async def test_defaults_transcribe_sampled_english_calls_with_the_domain_grammar(
    run_pipeline, demo_env
):
    run = await run_pipeline()
    assert run.state is RunState.SUCCEEDED, run.error
    assert {s.name: s.state for s in run.steps} == {
        "build-asr-model": StepState.SUCCEEDED,
        "fetch-calls": StepState.SUCCEEDED,
        "transcribe-audio": StepState.SUCCEEDED,
    }
    rows = output_rows(run)
    calls = {r["call_id"] for r in rows}
    assert len(calls) == 20
    # Every English turn has audio on the demo home: speech, or the silent line.
    assert all(r["status"] == "ok" and r["audio_url"].startswith("file://") for r in rows)
    assert run.output_parameters["transcribed_count"] == len(rows)
    assert run.output_parameters["failed_count"] == 0
    assert run.output_parameters["recognizer_used"].startswith("pocketsphinx:en-us+grammar(")
    spoken = [r for r in rows if r["utterances"] != "[]"]
    silent = [r for r in rows if r["utterances"] == "[]"]
    assert spoken and all(r["transcript"] for r in spoken[:5] + spoken[-5:])
    assert all(r["transcript"] == "" for r in silent)
    assert all(0.5 < float(r["duration_seconds"]) < 6 for r in rows)
    with connect(demo_env["CALLS_DB_URL"]) as db:
        (english,) = db.fetchall(
            "SELECT count(*) FROM turns t JOIN calls c ON c.id = t.call_id "
            "WHERE c.language = 'en' AND t.audio_url LIKE 'file://%'"
        )[0]
    assert english > 2000


async def test_a_csv_of_demo_clips_scored_by_asr_metrics(run_pipeline, tmp_path):
    dataset = manifest_subset(tmp_path)
    run = await run_pipeline(source=str(dataset), concurrency=2)
    assert run.state is RunState.SUCCEEDED, run.error
    rows = output_rows(run)
    assert len(rows) == SCORED_CLIPS and all(r["status"] == "ok" for r in rows)
    assert {r["sample_rate"] for r in rows} == {"8000"}
    wer = score(artifact_path(run, "transcripts"), tmp_path)
    # The domain grammar: 13.7 % over all 289 clips; the bundled language model: 93 %
    # (tools/measure_demo_asr.py).
    assert wer <= 0.25


async def test_the_openai_recognizer_and_a_bad_file_among_good_ones(run_pipeline, tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    for row in read_manifest()[:3]:
        (folder / row.clip).write_bytes((CLIPS_DIR / row.clip).read_bytes())
    (folder / "broken.wav").write_bytes(b"RIFF....WAVE but not really")
    seen: list[Request] = []

    def transcribe(request: Request) -> Reply:
        seen.append(request)
        return transcription_reply("hello there", segments=[(0.0, 1.0, "hello there", -0.05)])

    with FakeChatServer(transcribe=transcribe) as server:
        env = {"ASR_BASE_URL": server.url, "ASR_MODEL": "whisper-tiny", "ASR_API_KEY": "k"}
        run = await run_pipeline(
            extra_env=env, source=str(folder), recognizer="openai", language_model="default"
        )
    assert run.state is RunState.SUCCEEDED, run.error
    rows = {Path(urlparse(r["audio_url"]).path).name: r for r in output_rows(run)}
    assert rows["broken.wav"]["status"] == "error"
    assert rows["broken.wav"]["error"].startswith("undecodable:")
    assert [r["transcript"] for n, r in sorted(rows.items()) if n != "broken.wav"] == [
        "hello there"
    ] * 3
    assert run.output_parameters["recognizer_used"] == "openai:whisper-tiny"
    assert run.output_parameters["failed_count"] == 1
    assert len(seen) == 3 and {r.form["model"] for r in seen} == {"whisper-tiny"}


async def test_only_bad_files_fail_the_run_with_the_reason(run_pipeline, tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    (folder / "a.wav").write_bytes(b"not audio")
    run = await run_pipeline(source=str(folder), language_model="default")
    assert run.state is RunState.FAILED
    assert "transcribe_audio: none of the 1 files was transcribed" in run.error.message
    assert "undecodable" in run.error.message


async def test_with_s3_artifacts_and_audio_in_s3(
    catalog, tmp_path, demo_env, bucket, s3_endpoint, s3_client
):
    """Artifacts in S3, and the audio too: an s3:// prefix, and a CSV whose presigned URLs
    expired (they are re-signed with the step's credentials, as the original did)."""
    clips = read_manifest()[:4]
    for row in clips:
        s3_client.upload_file(str(CLIPS_DIR / row.clip), bucket, f"audio/{row.clip}")
    aws = {
        name: value
        for name, value in os.environ.items()
        if name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    aws["AWS_ENDPOINT_URL"] = s3_endpoint
    # A presigned URL signed eight days ago for seven: expired.
    expired = []
    for row in clips[:2]:
        url = s3_client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": f"audio/{row.clip}"}, ExpiresIn=604800
        )
        stamp = (datetime.now(UTC) - timedelta(days=8)).strftime("%Y%m%dT%H%M%SZ")
        expired.append(_with_date(url, stamp))
    body = "audio_url,text\n" + "".join(
        f"{u},{r.text}\n" for u, r in zip(expired, clips, strict=False)
    )
    s3_client.put_object(Bucket=bucket, Key="lists/expired.csv", Body=body.encode())

    store = S3ArtifactStore.from_url(f"s3://{bucket}/runs", S3Settings(endpoint_url=s3_endpoint))
    for source, count in ((f"s3://{bucket}/audio/", 4), (f"s3://{bucket}/lists/expired.csv", 2)):
        run = await _run_with_store(
            catalog, tmp_path / source[-8:].strip("/"), {**demo_env, **aws}, store, source=source
        )
        assert run.state is RunState.SUCCEEDED, run.error
        (artifact,) = [a for a in run.outputs if a.name == "transcripts"]
        assert artifact.uri.startswith(f"s3://{bucket}/runs/")
        key = artifact.uri.removeprefix(f"s3://{bucket}/")
        text = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        rows = list(csv.DictReader(text.splitlines()))
        assert len(rows) == count and all(r["status"] == "ok" for r in rows), rows
        assert run.output_parameters["transcribed_count"] == count


def _with_date(url: str, stamp: str) -> str:
    """The presigned URL with its X-Amz-Date replaced (the signature no longer matches,
    as for any URL whose date passed: moto then answers 403)."""
    from urllib.parse import parse_qsl, urlencode

    parsed = urlparse(url)
    query = [(k, stamp if k == "X-Amz-Date" else v) for k, v in parse_qsl(parsed.query)]
    return parsed._replace(query=urlencode(query)).geturl()


async def _run_with_store(catalog, tmp_path: Path, step_env: dict, store, **parameters) -> Run:
    tmp_path.mkdir(parents=True, exist_ok=True)
    runs = SqliteRunStore(tmp_path / "runs.db")
    executor = LocalExecutor(
        ExecutorConfig(images_root=ROOT / "images", work_root=tmp_path / "work", step_env=step_env),
        store,
        cache=StoreStepCache(runs),
    )
    backend = LocalBackend(executor)
    controller = RunController(runs, catalog, backend)
    backend.start(controller)
    try:
        (pipeline,) = catalog.list()
        run = await controller.create_run(
            CreateRunInput(pipeline=pipeline.name, parameters=parameters)
        )
        async for snapshot in controller.watch_run(run.name):
            if snapshot.state.terminal:
                return snapshot
        raise AssertionError("the watch ended before the run did")
    finally:
        await backend.shutdown()
        await runs.close()
