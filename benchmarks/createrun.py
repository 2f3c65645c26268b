"""CreateRun: runs accepted per second through the full server (validation, idempotency
key, insert, submit to a backend that executes nothing), on SQLite and on PostgreSQL (a
scratch database), against the bare grpc.aio service answering CreateRun with a run, from
the same client at the same concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import math
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from benchmarks.harness import ChildServer, Load, closed_loop, median_load
from benchmarks.report import Figure
from skit.pipelines.v1 import pipeline_service_pb2, run_pb2

CONCURRENCY = 16
SECONDS = 2.0
REPETITIONS = 3
TARGET = 300
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
"""A role that may CREATE DATABASE; SKIT_BENCH_POSTGRES_DSN overrides it."""


async def _create(stub, n: int) -> None:
    run = run_pb2.Run(pipeline="pipelines/bench", labels={"team": "slu"})
    run.parameters.update({"call_quantity": 20, "lang": "en", "flow_ids": [3, 7]})
    request = pipeline_service_pb2.CreateRunRequest(run=run, request_id=str(uuid.uuid4()))
    await stub.CreateRun(request, timeout=10)


def _measure(kind: str, home: Path, store_url: str = "") -> Load:
    with ChildServer(kind, home, store_url) as server:
        return asyncio.run(
            closed_loop(
                server.address,
                _create,
                concurrency=CONCURRENCY,
                seconds=SECONDS,
                server_pid=server.pid,
            )
        )


@contextlib.contextmanager
def _scratch_database() -> Iterator[str]:
    """A postgresql:// URL of a new database, dropped afterwards; raises LookupError
    saying why there is none."""
    if importlib.util.find_spec("skit_pipelines.store.postgres") is None:
        raise LookupError("no PostgreSQL store")
    import psycopg
    from psycopg import sql

    admin_url = os.environ.get("SKIT_BENCH_POSTGRES_DSN", POSTGRES_DSN)
    name = f"skit_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise LookupError(f"no PostgreSQL server ({type(exc).__name__})") from None
    try:
        yield urlparse(admin_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _describe(load: Load) -> str:
    return (
        f"{load.throughput:,.0f}/s, p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms,"
        f" server CPU {load.server_cpu_per_call * 1e6:.0f} us/call"
    )


def run() -> list[Figure]:
    loads: dict[str, list[Load]] = {"bare": [], "sqlite": [], "postgres": []}
    skipped = ""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        try:
            postgres_url = stack.enter_context(_scratch_database())
        except LookupError as reason:
            postgres_url, skipped = "", str(reason)
        for rep in range(REPETITIONS):
            loads["bare"].append(_measure("bare", Path(tmp) / f"bare-{rep}"))
            loads["sqlite"].append(_measure("full", Path(tmp) / f"sqlite-{rep}"))
            if postgres_url:
                loads["postgres"].append(_measure("full", Path(tmp) / "pg", postgres_url))
    bare, sqlite = median_load(loads["bare"]), median_load(loads["sqlite"])
    figures = [
        Figure(
            name=f"CreateRun on SQLite, {CONCURRENCY} concurrent calls",
            value=sqlite.throughput,
            unit="runs/s",
            baseline=bare.throughput,
            detail=f"{_describe(sqlite)}; bare grpc.aio {_describe(bare)}"
            f" (median of {REPETITIONS} x {SECONDS:g} s,"
            f" {sum(load.errors for load in loads['sqlite'])} errors)",
            target=f">= {TARGET} runs/s",
            met=sqlite.throughput >= TARGET and not any(load.errors for load in loads["sqlite"]),
        )
    ]
    if skipped:
        figures.append(
            Figure(
                name="CreateRun on PostgreSQL",
                value=math.nan,
                unit="runs/s",
                baseline=bare.throughput,
                detail=f"skipped: {skipped}",
                target="informational",
                met=True,
            )
        )
    else:
        postgres = median_load(loads["postgres"])
        errors = sum(load.errors for load in loads["postgres"])
        figures.append(
            Figure(
                name=f"CreateRun on PostgreSQL, {CONCURRENCY} concurrent calls",
                value=postgres.throughput,
                unit="runs/s",
                baseline=bare.throughput,
                detail=f"{_describe(postgres)} (one scratch database, local server;"
                f" {errors} errors)",
                target="informational",
                met=errors == 0,
            )
        )
    return figures
