"""The WER of the transcribe-dataset components on the committed demo audio.

    .venv/bin/python tools/measure_demo_asr.py            # the domain grammar and the default LM
    .venv/bin/python tools/measure_demo_asr.py --concurrency 1

Runs the shipped entrypoints as the local executor would (`python -m <name>` in each image
folder): build_asr_model on the default demo calls database (generated into a temporary
directory), transcribe_audio over every committed clip (`service/skit_demo/audio_clips/
manifest.csv`, 289 distinct English caller utterances at 8 kHz) with the domain grammar and
with pocketsphinx's general en-us language model, and asr_metrics (evaluate-asr's scorer)
against each clip's text. Prints the WER per clip (asr_metrics) and per demo turn (each
clip counted once for every English caller turn of the demo that plays it).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "service"))
sys.path.insert(0, str(ROOT / "lib"))

import jiwer  # noqa: E402 - after the path set-up for a by-path run

from skit_components.db import sqlite_url  # noqa: E402
from skit_demo.audio import CLIPS_DIR, MANIFEST, caller_texts  # noqa: E402
from skit_demo.generator import generate  # noqa: E402

IMAGES = ROOT / "images"
_NORMALIZE = jiwer.Compose(
    [jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()]
)


def step(name: str, *args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [sys.executable, "-m", name, *args],
        cwd=IMAGES / name,
        env={**os.environ, **(env or {})},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        calls = sqlite_url(tmp / "calls.db")
        generate(calls, sqlite_url(tmp / "metrics.db"))
        turns = Counter(text for _, text in caller_texts(calls, "en"))
        for kind in ("grammar", "default"):
            out = tmp / kind
            model = out / "model"
            step(
                "build_asr_model",
                f"--kind={kind}",
                f"--model={model}",
                f"--sentence-count={out / 'n'}",
                env={"CALLS_DB_URL": calls},
            )
            step(
                "transcribe_audio",
                f"--source={CLIPS_DIR / MANIFEST}",
                "--audio-column=clip",
                f"--model={model}",
                f"--concurrency={args.concurrency}",
                f"--transcripts={out / 't.csv'}",
                f"--transcribed-count={out / 'tc'}",
                f"--failed-count={out / 'fc'}",
                f"--recognizer-used={out / 'ru'}",
                f"--report={out / 'report.json'}",
            )
            step(
                "asr_metrics",
                f"--dataset={out / 't.csv'}",
                "--true-column=text",
                "--pred-column=transcript",
                "--language-column=language",
                f"--report={out / 'r.md'}",
                f"--metrics={out / 'm.csv'}",
                f"--utterances={out / 'u.csv'}",
                f"--wer={out / 'wer'}",
                f"--cer={out / 'cer'}",
            )
            with (out / "t.csv").open(encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
            refs = [_NORMALIZE(r["text"]) for r in rows for _ in range(turns[r["text"]])]
            hyps = [_NORMALIZE(r["transcript"]) for r in rows for _ in range(turns[r["text"]])]
            print(
                f"{(out / 'ru').read_text()}: WER {float((out / 'wer').read_text()):.1%} over "
                f"{len(rows)} clips (asr_metrics), {jiwer.wer(refs, hyps):.1%} over "
                f"{len(refs)} demo turns"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
