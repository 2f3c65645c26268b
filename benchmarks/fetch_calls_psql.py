"""fetch_calls against PostgreSQL: export throughput of every turn of ~1M turns against
psql's `\\copy` in the same run, of the very query the component runs (its COPY, with the
same session settings: the files must be byte for byte equal) and of the bare SELECT (the
same join and columns, JSON as text, nothing formatted); and the component's peak RSS at a
quarter of the calls against all of them.

Needs a PostgreSQL server (env SKIT_BENCH_POSTGRES_DSN, default
postgresql://postgres@127.0.0.1:5432/test) where it may CREATE DATABASE and `psql`; a
scratch database skit_bench_<random> is created, filled by the demo generator and dropped.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg

from benchmarks.report import Figure
from skit_components.db import sqlite_url
from skit_components.loader import import_component

DSN_ENV = "SKIT_BENCH_POSTGRES_DSN"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
COMPONENT_DIR = Path(__file__).resolve().parents[1] / "images" / "fetch_calls"
MIB = 1024 * 1024
TARGET_RATIO = 0.95
"""Of psql's \\copy of the same query."""

RAW_SELECT = """
SELECT c.id, c.uuid, t.uuid, t.turn_index, t.reftime, t.state,
       t.utterances::text, t.bot_response, t.intent, t.intent_score,
       t.slots::text, t.entities::text, t.audio_url, c.call_url,
       c.language, c.asr_provider, c.flow_id, c.flow_uuid, c.flow_name, c.flow_version,
       c.client_id, c.client_uuid, c.template_id, c.call_type, c.call_end_status,
       c.disposition, c.previous_disposition, c.blocking_disposition,
       c.duration_seconds, t.asr_latency_ms, t.slu_latency_ms
FROM turns t JOIN calls c ON c.id = t.call_id
WHERE t.call_id IN (SELECT id FROM calls)
ORDER BY t.call_id, t.turn_index
"""
"""The component's turns SELECT over every call with nothing formatted in SQL."""


def _log(message: str) -> None:
    print(f"  fetch_calls: {message}", file=sys.stderr, flush=True)


def _with_db(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def _measure(cmd: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes, polled every 50 ms) of a child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    child = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, child.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} exited {proc.returncode}: {stderr.strip()}")
    return elapsed, peak


def _fetch_calls(db_url: str, quantity: int, tmp: Path) -> tuple[float, int]:
    env = {**os.environ, "CALLS_DB_URL": db_url}
    cmd = [
        sys.executable,
        "-m",
        "fetch_calls",
        f"--call-quantity={quantity}",
        "--seed=0",
        f"--calls={tmp / 'calls.csv'}",
        f"--call-count={tmp / 'call_count'}",
    ]
    return _measure(cmd, cwd=COMPONENT_DIR, env=env)


def _psql(db_url: str, script: Path, tmp: Path) -> float:
    elapsed, _ = _measure(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", db_url, "-f", str(script)],
        cwd=tmp,
        env=dict(os.environ),
    )
    return elapsed


def _scripts(db_url: str, tmp: Path) -> tuple[Path, Path]:
    """psql scripts: the component's own COPY of every call's turns (its session settings
    too), and the raw SELECT; both `\\copy` to a file, as a user of psql would."""
    component = import_component(COMPONENT_DIR)
    with psycopg.connect(db_url) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM calls ORDER BY id")]
    copy = component.copy_turns_query(ids)
    same = tmp / "same.sql"
    same.write_text(
        "SET TimeZone = 'UTC';\nSET extra_float_digits = 1;\nSET client_encoding = 'UTF8';\n"
        + "\\copy "
        + copy.removeprefix("COPY ").replace(" TO STDOUT ", f" TO '{tmp / 'same.csv'}' ")
        + "\n"
    )
    raw = tmp / "raw.sql"
    query = " ".join(RAW_SELECT.split())
    raw.write_text(f"\\copy ({query}) TO '{tmp / 'raw.csv'}' WITH CSV HEADER\n")
    return same, raw


def _same_bytes(ours: Path, header_less: Path) -> bool:
    with ours.open("rb") as a, header_less.open("rb") as b:
        a.readline()
        while True:
            left, right = a.read(1 << 20), b.read(1 << 20)
            if left != right:
                return False
            if not left:
                return True


def _lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def run(
    calls: int | None = None, repetitions: int = 5, generation_budget_s: float = 300.0
) -> list[Figure]:
    from skit_demo import generate

    calls = calls or int(os.environ.get("SKIT_BENCH_FETCH_CALLS", "300000"))
    dsn = os.environ.get(DSN_ENV, DEFAULT_DSN)
    name = f"skit_bench_{secrets.token_hex(4)}"
    if shutil.which("psql") is None:
        raise RuntimeError("psql is not on PATH")
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    db_url = _with_db(dsn, name)
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            _log(f"generating {calls:,} calls into {name} ...")
            started = time.perf_counter()
            summary = generate(db_url, sqlite_url(tmp / "metrics.db"), calls=calls, seed=0)
            generation = time.perf_counter() - started
            turns = summary.turns
            _log(f"generated {summary.calls:,} calls, {turns:,} turns in {generation:.0f} s")
            with psycopg.connect(db_url, autocommit=True) as db:
                db.execute("VACUUM ANALYZE")

            same_sql, raw_sql = _scripts(db_url, tmp)
            ours_t, same_t, raw_t, full_rss = [], [], [], []

            def ours() -> None:
                elapsed, rss = _fetch_calls(db_url, summary.calls, tmp)
                ours_t.append(elapsed)
                full_rss.append(rss)

            def psql() -> None:
                same_t.append(_psql(db_url, same_sql, tmp))
                raw_t.append(_psql(db_url, raw_sql, tmp))

            for rep in range(repetitions):
                # psql first in every other repetition: neither side always follows the
                # other's run (its page cache, the server's autovacuum, a busy neighbour).
                for measure in (psql, ours) if rep % 2 else (ours, psql):
                    measure()
                _log(
                    f"rep {rep + 1}: fetch_calls {ours_t[-1]:.1f} s ({full_rss[-1] / MIB:.0f} MiB),"
                    f" psql same query {same_t[-1]:.1f} s, psql raw SELECT {raw_t[-1]:.1f} s"
                )
            if not _same_bytes(tmp / "calls.csv", tmp / "same.csv"):
                raise RuntimeError(
                    "fetch_calls and psql's \\copy of its query wrote different CSVs"
                )
            exported = _lines(tmp / "calls.csv") - 1
            copied = _lines(tmp / "raw.csv") - 1
            if exported != turns or copied != turns:
                raise RuntimeError(
                    f"expected {turns} turns, fetch_calls wrote {exported}, psql {copied}"
                )
            quarter_rss = []
            for _ in range(repetitions):
                _, rss = _fetch_calls(db_url, summary.calls // 4, tmp)
                quarter_rss.append(rss)
            _log(f"quarter: {[round(r / MIB) for r in quarter_rss]} MiB")
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    ours = turns / statistics.median(ours_t)
    same = turns / statistics.median(same_t)
    raw = turns / statistics.median(raw_t)
    ratio = ours / same
    rss_full = statistics.median(full_rss) / MIB
    rss_quarter = statistics.median(quarter_rss) / MIB
    growth = rss_full - rss_quarter
    size = f"{summary.calls:,} calls / {turns:,} turns (generated in {generation:.0f} s)"
    if generation > generation_budget_s:
        size += f"; generation took over {generation_budget_s:.0f} s"
    return [
        Figure(
            name="fetch_calls export, PostgreSQL, all turns",
            value=ratio,
            unit="x psql",
            baseline=1.0,
            detail=f"{ours:,.0f} turns/s vs psql \\copy of the same query {same:,.0f} turns/s"
            f" (identical bytes); {ours / raw:.2f}x psql \\copy of the raw SELECT"
            f" ({raw:,.0f} turns/s, no formatting); {size}; wall time of the whole process"
            f" (sampling included), median of {repetitions}",
            target=f">= {TARGET_RATIO:g}x psql",
            met=ratio >= TARGET_RATIO,
        ),
        Figure(
            name="fetch_calls peak RSS, all calls vs 1/4",
            value=growth,
            unit="MiB",
            baseline=None,
            detail=f"peak RSS {rss_quarter:.0f} MiB at {summary.calls // 4:,} calls,"
            f" {rss_full:.0f} MiB at {summary.calls:,} (child polled every 50 ms,"
            f" median of {repetitions}); the sample holds call ids, turns stream through"
            " COPY",
            target="< 50 MiB growth",
            met=growth < 50,
        ),
    ]
