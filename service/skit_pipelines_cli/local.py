"""The commands that need no service: serve it, add a token, write the demo data.

Kept apart from the client commands so that `serve` starts without importing the client,
its renderers and their dependencies (the server's cold start is a benchmark target).
Each takes (args, out).
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from skit_pipelines.config import ServerConfig
from skit_pipelines_cli.exits import EXIT_OK
from skit_pipelines_cli.values import UsageError

LocalCommand = Callable[[argparse.Namespace, TextIO], int]

YOUNG_COLLECTION_THRESHOLD = 50_000
"""Net new container objects between two collections of the youngest generation (CPython's
default is 700). While a revision fans out, every watcher holds a few objects until the
next one (its wait, the generators' pending sends): 1,000 watchers are ~7,000, so at the
default the collector ran every ~100 deliveries, walked objects that were all alive, and
promoted them to be walked again: 86 young and 7 middle collections, 41-45 ms of a
1,000-watcher run's fan-out (gc.callbacks in the server). Above what the streams hold,
a fan-out's objects are freed by their reference counts before any collection runs."""


def serve(args: argparse.Namespace, out: TextIO) -> int:
    """`serve`: the service, configured by SKIT_* variables and the flags over them."""
    # Imported here: the client commands need neither the server nor its dependencies.
    # With the collector off: what importing allocates (modules, classes, descriptors)
    # lives as long as the process, so it is frozen out of the collector's sight at once
    # instead of being walked by ~45 collections (~10 ms of the start) on its way there.
    gc.disable()
    try:
        from skit_pipelines.server import serve as run_server
    finally:
        gc.freeze()
        gc.enable()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])

    config = _config_from_env().with_overrides(
        host=args.host,
        port=args.port,
        home=args.home,
        pipelines_dir=args.pipelines_dir,
        images_dir=args.images_dir,
        health_port=args.health_port,
        console_port=args.console_port,
        tokens_file=args.tokens_file,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        tls_client_ca_file=args.tls_client_ca,
        insecure=args.insecure,
        store_url=args.store,
        artifacts_url=args.artifacts,
        import_roots=tuple(args.import_roots) if args.import_roots else None,
        s3_endpoint_url=args.s3_endpoint_url,
        backend=args.backend,
        kfp_host=args.kfp_host,
        kfp_ui_url=args.kfp_ui_url,
        kfp_images_lock=args.kfp_images_lock,
        kfp_step_secrets=args.kfp_step_secrets,
        kfp_logs_url=args.kfp_logs_url,
        traces_exporter=args.traces_exporter,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        metrics_otlp=args.metrics_otlp,
        otlp_endpoint=args.otlp_endpoint,
        max_message_bytes=args.max_message_bytes,
        max_request_bytes=args.max_request_bytes,
        max_parameter_bytes=args.max_parameter_bytes,
        max_parameters=args.max_parameters,
        max_parameters_bytes=args.max_parameters_bytes,
        max_labels=args.max_labels,
        max_label_key_length=args.max_label_key_length,
        max_label_value_length=args.max_label_value_length,
        retention_days=args.retention_days,
        secrets_dir=args.secrets_dir,
    )
    return run_server(config)


def tokens_add(args: argparse.Namespace, out: TextIO) -> int:
    """`tokens add`: prints the new token once; the file keeps its hash."""
    from skit_pipelines.auth import add_token

    token = add_token(args.tokens_file, args.name, args.role)
    print(token, file=out)
    print(
        f"created a {args.role} token for {args.name}; it is shown only now"
        f" (the file keeps its hash): {args.tokens_file}",
        file=sys.stderr,
    )
    return EXIT_OK


def _config_from_env() -> ServerConfig:
    try:
        return ServerConfig.from_env()
    except ValueError as error:
        raise UsageError(f"bad SKIT_* environment variable: {error}") from error


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def demo_data(args: argparse.Namespace, out: TextIO) -> int:
    """`demo-data`: the demo databases, SQLite files under the home unless named."""
    from skit_demo import generate

    config = _config_from_env().with_overrides(home=args.home)
    if not (args.calls_db_url and args.metrics_db_url and args.annotations_db_url):
        config.demo_root.mkdir(parents=True, exist_ok=True)
    calls_db_url = args.calls_db_url or _sqlite_url(config.demo_root / "calls.db")
    metrics_db_url = args.metrics_db_url or _sqlite_url(config.demo_root / "metrics.db")
    # With databases named elsewhere, an annotation store appears only where it is named too.
    annotations_db_url = args.annotations_db_url or (
        None
        if args.calls_db_url or args.metrics_db_url
        else _sqlite_url(config.demo_root / "annotations.db")
    )
    # Only what was given: generate's own defaults apply otherwise.
    given = {"seed": args.seed, "calls": args.calls}
    options = {key: value for key, value in given.items() if value is not None}
    summary = generate(
        calls_db_url, metrics_db_url, annotations_db_url=annotations_db_url, **options
    )
    if isinstance(summary, Mapping):
        for key, value in summary.items():
            print(f"{key}: {value}", file=out)
    else:
        print(summary, file=out)
    return EXIT_OK
