"""The command line: one small function per command group, building the argparse parser.

Each command's parser names its handler: `local`, a function of the `local` module, for
those that need no service (serve, tokens, demo-data); `remote`, the name of a function in
`commands`, for those that call it (so that `serve` never imports the client).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

from skit_pipelines_cli import local
from skit_pipelines_cli.values import (
    parse_count,
    parse_label,
    parse_param,
    parse_run_state,
    parse_time,
)

DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_TIMEOUT_SECONDS = 30.0

_HOME_HELP = "state directory (SKIT_HOME; default .skit-pipelines)"


# What add_subparsers returns, as typeshed names it; a string: it is not generic at run time.
_Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser(
    environ: Mapping[str, str], *, command: str | None = None
) -> argparse.ArgumentParser:
    """The argument parser; `environ` supplies the default of --server (SKIT_SERVER).

    With `command` naming a command that needs no service (serve, tokens, demo-data),
    only that command is built below the top level: arguments starting with its name
    parse alike, since argparse hands everything after the name to its parser alone.
    Building every command takes ~10 ms, which `serve`'s start would pay for nothing.
    """
    parser = argparse.ArgumentParser(
        prog="skit-pipelines",
        description="Run reusable ML pipelines through the skit-pipelines service.",
    )
    # The connection options are accepted before the command and after it; the copies
    # on subcommands default to SUPPRESS so they never overwrite an earlier value.
    _add_connection_options(parser, environ)
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    local_commands = {"serve": _add_serve, "tokens": _add_tokens, "demo-data": _add_demo_data}
    if command in local_commands:
        local_commands[command](subcommands)
        return parser
    for add_local in local_commands.values():
        add_local(subcommands)
    common = argparse.ArgumentParser(add_help=False)
    _add_connection_options(common, None)
    _add_pipelines(subcommands, common)
    _add_runs(subcommands, common)
    _add_schedules(subcommands, common)
    _add_subscriptions(subcommands, common)
    return parser


def _add_serve(subcommands: _Subcommands) -> None:
    """`serve`: where to listen, state, auth and TLS; then scale-out and observability."""
    serve = subcommands.add_parser(
        "serve",
        help="run the service",
        description="Serve PipelineService. Flags override SKIT_HOST, SKIT_PORT and SKIT_HOME.",
    )
    serve.add_argument("--host", help="address to listen on (SKIT_HOST; default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, help="port to listen on, 0 for any (SKIT_PORT; default 50051)"
    )
    serve.add_argument("--home", type=Path, help=_HOME_HELP)
    serve.add_argument(
        "--pipelines-dir",
        type=Path,
        metavar="DIR",
        help="the pipeline modules (SKIT_PIPELINES_DIR; default pipelines/ of the checkout)",
    )
    serve.add_argument(
        "--images-dir",
        type=Path,
        metavar="DIR",
        help="the image folders (SKIT_IMAGES_DIR; default images/ of the checkout)",
    )
    serve.add_argument(
        "--health-port",
        type=int,
        metavar="PORT",
        help="also serve grpc.health.v1 alone, in plaintext, on this port, e.g. for a"
        " Kubernetes grpc probe when TLS is on (SKIT_HEALTH_PORT; default off)",
    )
    serve.add_argument(
        "--console-port",
        type=int,
        metavar="PORT",
        help="also serve the web console over HTTP on this port, with the same tokens"
        " (SKIT_CONSOLE_PORT; default off; 0 picks a free port)",
    )
    serve.add_argument(
        "--tokens-file",
        type=Path,
        help="turn authentication on with this tokens file (SKIT_TOKENS_FILE)",
    )
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain (SKIT_TLS_CERT)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key (SKIT_TLS_KEY)")
    serve.add_argument(
        "--tls-client-ca",
        type=Path,
        help="require client certificates signed by this CA: mutual TLS (SKIT_TLS_CLIENT_CA)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback address without authentication (SKIT_INSECURE)",
    )
    serve.add_argument(
        "--retention-days",
        type=float,
        metavar="DAYS",
        help="delete finished runs (events, logs, artifacts) that ended more than DAYS ago,"
        " in the background (SKIT_RETENTION_DAYS; default: keep them)",
    )
    serve.add_argument(
        "--secrets-dir",
        type=Path,
        metavar="DIR",
        help="secrets notification sinks name (Slack tokens, webhook signing keys), one file"
        " each, e.g. a mounted Kubernetes secret (SKIT_SECRETS_DIR; also SKIT_SECRET_<NAME>)",
    )
    _add_scale_out_options(serve)
    _add_limit_options(serve)
    _add_observability_options(serve)
    serve.set_defaults(local=local.serve)


_LIMIT_OPTIONS = (
    (
        "--max-message-bytes",
        "SKIT_MAX_MESSAGE_BYTES",
        "largest message sent; larger requests"
        " are refused by gRPC (RESOURCE_EXHAUSTED); default 16 MiB",
    ),
    (
        "--max-request-bytes",
        "SKIT_MAX_REQUEST_BYTES",
        "larger requests are refused with"
        " INVALID_ARGUMENT naming their largest field; default 1 MiB",
    ),
    (
        "--max-parameter-bytes",
        "SKIT_MAX_PARAMETER_BYTES",
        "one run parameter's value; default 64 KiB",
    ),
    ("--max-parameters", "SKIT_MAX_PARAMETERS", "parameters in one CreateRun; default 100"),
    (
        "--max-parameters-bytes",
        "SKIT_MAX_PARAMETERS_BYTES",
        "all parameters of one CreateRun together; default 256 KiB",
    ),
    ("--max-labels", "SKIT_MAX_LABELS", "labels on one run; default 64"),
    (
        "--max-label-key-length",
        "SKIT_MAX_LABEL_KEY_LENGTH",
        "characters of a label key; default 63",
    ),
    (
        "--max-label-value-length",
        "SKIT_MAX_LABEL_VALUE_LENGTH",
        "characters of a label value; default 63",
    ),
)


def _add_limit_options(serve: argparse.ArgumentParser) -> None:
    limits = serve.add_argument_group(
        "limits",
        "what one request may carry; beyond it: INVALID_ARGUMENT (README.md: Limits and"
        " reliability)",
    )
    for flag, variable, help_text in _LIMIT_OPTIONS:
        limits.add_argument(flag, type=int, metavar="N", help=f"{help_text} ({variable})")


def _add_scale_out_options(serve: argparse.ArgumentParser) -> None:
    scale_out = serve.add_argument_group(
        "scale-out",
        "several replicas share a PostgreSQL run store and S3 artifacts, and may run"
        " pipelines on Kubeflow; the KFP credentials come from SKIT_KFP_TOKEN or"
        " SKIT_KFP_COOKIE, never from flags",
    )
    scale_out.add_argument(
        "--store",
        metavar="URL",
        help="run store: sqlite:///path or postgresql://user@host/db (SKIT_STORE;"
        " default sqlite under --home)",
    )
    scale_out.add_argument(
        "--artifacts",
        metavar="URL",
        help="artifact store: file:///path or s3://bucket/prefix (SKIT_ARTIFACTS;"
        " default a directory under --home)",
    )
    scale_out.add_argument(
        "--import-root",
        metavar="DIR",
        type=Path,
        action="append",
        dest="import_roots",
        help="a directory whose files dsl.importer may import on the local executor;"
        " repeat for several (SKIT_IMPORT_ROOTS, separated by ':'; default none)",
    )
    scale_out.add_argument(
        "--s3-endpoint-url",
        metavar="URL",
        help="S3 endpoint override, e.g. MinIO (SKIT_S3_ENDPOINT_URL; default: the AWS"
        " configuration's)",
    )
    scale_out.add_argument(
        "--backend",
        choices=("local", "kubeflow"),
        help="where runs execute (SKIT_BACKEND; default local)",
    )
    scale_out.add_argument(
        "--kfp-host", metavar="URL", help="Kubeflow Pipelines API endpoint (SKIT_KFP_HOST)"
    )
    scale_out.add_argument(
        "--kfp-ui-url",
        metavar="URL",
        help="Kubeflow Pipelines UI base URL for run links (SKIT_KFP_UI_URL; default --kfp-host)",
    )
    scale_out.add_argument(
        "--kfp-images-lock",
        type=Path,
        metavar="PATH",
        help="the images lock whose digests pin the images of pipelines run on Kubeflow"
        " (SKIT_KFP_IMAGES_LOCK; default images/images.lock.json)",
    )
    scale_out.add_argument(
        "--kfp-step-secrets",
        metavar="ENV=SECRET/KEY,...",
        help="the Kubernetes secret and key each variable components declare comes from on"
        " Kubeflow (SKIT_KFP_STEP_SECRETS), e.g. CALLS_DB_URL=skit-step-env/CALLS_DB_URL",
    )
    scale_out.add_argument(
        "--kfp-logs-url",
        metavar="URL",
        help="the bucket Argo archives pod logs in, for reading step logs of runs on"
        " Kubeflow (SKIT_KFP_LOGS_URL), e.g. s3://mlpipeline; its key format comes from"
        " SKIT_KFP_LOGS_KEY_FORMAT (default Argo's {{workflow.name}}/{{pod.name}})",
    )


def _add_observability_options(serve: argparse.ArgumentParser) -> None:
    observability = serve.add_argument_group(
        "observability", "OpenTelemetry traces and metrics (README.md: Observability)"
    )
    observability.add_argument(
        "--traces-exporter",
        choices=("none", "console", "otlp"),
        help="where spans go (SKIT_TRACES_EXPORTER; default none)",
    )
    observability.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on http://--metrics-host:PORT/metrics, 0 for any port"
        " (SKIT_METRICS_PORT; default off)",
    )
    observability.add_argument(
        "--metrics-host", help="address of /metrics (SKIT_METRICS_HOST; default 127.0.0.1)"
    )
    observability.add_argument(
        "--metrics-otlp",
        action="store_true",
        default=None,
        help="also push metrics over OTLP (SKIT_METRICS_OTLP)",
    )
    observability.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="OTLP/gRPC collector, e.g. http://collector:4317 (SKIT_OTLP_ENDPOINT; default"
        " OTEL_EXPORTER_OTLP_ENDPOINT or localhost:4317)",
    )


def _add_tokens(subcommands: _Subcommands) -> None:
    """`tokens add`."""
    tokens = subcommands.add_parser("tokens", help="manage API tokens").add_subparsers(
        dest="tokens_command", required=True, metavar="COMMAND"
    )
    tokens_add = tokens.add_parser(
        "add",
        help="create a token, print it once, store only its hash",
        description="Create a token for a principal. The token is printed once; the tokens "
        "file keeps only its SHA-256 hash, the principal name and the role.",
    )
    tokens_add.add_argument("name", help="the principal, e.g. reports-service")
    tokens_add.add_argument(
        "--role",
        required=True,
        choices=("viewer", "runner", "admin"),
        help="viewer: read and watch; runner: also create, cancel and retry its own runs;"
        " admin: everything",
    )
    tokens_add.add_argument("--tokens-file", type=Path, required=True)
    tokens_add.set_defaults(local=local.tokens_add)


def _add_demo_data(subcommands: _Subcommands) -> None:
    demo = subcommands.add_parser(
        "demo-data",
        help="generate the demo calls and metrics databases",
        description="Generate demo databases; by default SQLite files under <home>/demo/.",
    )
    demo.add_argument("--home", type=Path, help=_HOME_HELP)
    demo.add_argument("--calls", type=int, help="how many calls to generate")
    demo.add_argument("--seed", type=int, help="random seed, for reproducible data")
    demo.add_argument(
        "--calls-db-url", help="calls database (default sqlite:///<home>/demo/calls.db)"
    )
    demo.add_argument(
        "--metrics-db-url", help="metrics database (default sqlite:///<home>/demo/metrics.db)"
    )
    demo.add_argument(
        "--annotations-db-url",
        help="annotation store (default sqlite:///<home>/demo/annotations.db)",
    )
    demo.set_defaults(local=local.demo_data)


def _add_pipelines(subcommands: _Subcommands, common: argparse.ArgumentParser) -> None:
    """`pipelines list` and `pipelines get`."""
    pipelines = subcommands.add_parser(
        "pipelines", help="list and inspect pipelines"
    ).add_subparsers(dest="pipelines_command", required=True, metavar="COMMAND")
    pipelines_list = pipelines.add_parser("list", parents=[common], help="list the pipelines")
    pipelines_list.set_defaults(remote="pipelines_list")
    pipelines_get = pipelines.add_parser(
        "get", parents=[common], help="show a pipeline and its parameters"
    )
    pipelines_get.add_argument("name", help='"x" or "pipelines/x"')
    pipelines_get.set_defaults(remote="pipelines_get")


def _add_runs(subcommands: _Subcommands, common: argparse.ArgumentParser) -> None:
    """`runs` create, get, list, cancel, delete, retry, logs and watch (help lists them in
    this order)."""
    runs = subcommands.add_parser("runs", help="start, inspect and watch runs").add_subparsers(
        dest="runs_command", required=True, metavar="COMMAND"
    )
    _add_runs_create(runs, common)
    get = runs.add_parser("get", parents=[common], help="show a run")
    get.add_argument("name", help='"abc" or "runs/abc"')
    get.set_defaults(remote="runs_get")
    _add_runs_list(runs, common)
    cancel = runs.add_parser("cancel", parents=[common], help="cancel a run")
    cancel.add_argument("name", help='"abc" or "runs/abc"')
    cancel.set_defaults(remote="runs_cancel")
    delete = runs.add_parser(
        "delete",
        parents=[common],
        help="delete a finished run with its events, step logs and artifacts",
    )
    delete.add_argument("name", help='"abc" or "runs/abc"')
    delete.set_defaults(remote="runs_delete")
    _add_runs_retry(runs, common)
    _add_runs_logs(runs, common)
    _add_runs_watch(runs, common)


def _add_schedules(subcommands: _Subcommands, common: argparse.ArgumentParser) -> None:
    """`schedules` create, get, list, pause, resume, delete and backfill."""
    schedules = subcommands.add_parser(
        "schedules", help="run pipelines on a cron or an interval"
    ).add_subparsers(dest="schedules_command", required=True, metavar="COMMAND")
    create = schedules.add_parser(
        "create",
        parents=[common],
        help="create a schedule and print its next 5 ticks",
        description="Create a schedule: --cron (with --time-zone) or --every SECONDS.",
    )
    create.add_argument("pipeline", help='"x" or "pipelines/x"')
    trigger = create.add_mutually_exclusive_group(required=True)
    trigger.add_argument("--cron", help="five fields, e.g. '30 2 * * *'")
    trigger.add_argument("--every", type=int, metavar="SECONDS", help="a fixed interval")
    create.add_argument("--time-zone", help="IANA, e.g. Europe/Berlin (default UTC)")
    create.add_argument(
        "--param",
        dest="params",
        action="append",
        type=parse_param,
        default=[],
        metavar="KEY=VALUE",
        help="a parameter of every run (repeatable)",
    )
    create.add_argument(
        "--label",
        dest="labels",
        action="append",
        type=parse_label,
        default=[],
        metavar="KEY=VALUE",
        help="a label of every run (repeatable)",
    )
    create.add_argument("--start-time", type=parse_time, help="no tick before")
    create.add_argument("--end-time", type=parse_time, help="no tick at or after")
    create.add_argument("--max-concurrency", type=int, default=0, help="active runs (default 1)")
    create.add_argument(
        "--overlap",
        choices=("skip", "cancel_oldest"),
        default="",
        help="at max concurrency: skip the tick (default) or cancel the oldest run",
    )
    create.add_argument(
        "--catchup",
        choices=("skip", "run_latest", "run_all"),
        default="",
        help="ticks missed while the server was down (default skip)",
    )
    create.add_argument("--schedule-id", help="the id (default: chosen by the service)")
    create.add_argument("--request-id", help="idempotency key")
    create.set_defaults(remote="schedules_create")
    for command, what in (
        ("get", "show a schedule, its last and next tick"),
        ("resume", "resume a paused schedule from now"),
        ("delete", "delete a schedule (its runs stay)"),
    ):
        sub = schedules.add_parser(command, parents=[common], help=what)
        sub.add_argument("name", help='"x" or "schedules/x"')
        sub.set_defaults(remote=f"schedules_{command}")
    schedules.add_parser("list", parents=[common], help="list the schedules").set_defaults(
        remote="schedules_list"
    )
    update = schedules.add_parser(
        "update", parents=[common], help="change a schedule's trigger or policies"
    )
    update.add_argument("name", help='"x" or "schedules/x"')
    new_trigger = update.add_mutually_exclusive_group()
    new_trigger.add_argument("--cron", help="a new cron expression (ticks from now)")
    new_trigger.add_argument("--every", type=int, metavar="SECONDS", help="a new interval")
    update.add_argument("--time-zone", help="with --cron: IANA, e.g. Europe/Berlin")
    update.add_argument("--max-concurrency", type=int, help="active runs at most")
    update.add_argument(
        "--overlap", dest="overlap_policy", choices=("skip", "cancel_oldest"), help="at the limit"
    )
    update.add_argument(
        "--catchup",
        dest="catchup_policy",
        choices=("skip", "run_latest", "run_all"),
        help="missed ticks",
    )
    update.set_defaults(remote="schedules_update")
    pause = schedules.add_parser("pause", parents=[common], help="pause a schedule")
    pause.add_argument("name", help='"x" or "schedules/x"')
    pause.add_argument("--reason", default="", help="why (shown on the schedule)")
    pause.set_defaults(remote="schedules_pause")
    backfill = schedules.add_parser(
        "backfill", parents=[common], help="run every tick of a time range now"
    )
    backfill.add_argument("name", help='"x" or "schedules/x"')
    backfill.add_argument("--start", type=parse_time, required=True, help="first tick included")
    backfill.add_argument("--end", type=parse_time, required=True, help="ticks before this")
    backfill.set_defaults(remote="schedules_backfill")


_RUN_STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLING", "CANCELLED")


def _add_subscriptions(subcommands: _Subcommands, common: argparse.ArgumentParser) -> None:
    """`subscriptions` create, get, list, delete and deliveries (notifications)."""
    subscriptions = subcommands.add_parser(
        "subscriptions", help="notify Slack or a signed webhook when runs end"
    ).add_subparsers(dest="subscriptions_command", required=True, metavar="COMMAND")
    create = subscriptions.add_parser(
        "create",
        parents=[common],
        help="create a subscription",
        description="Notify a Slack channel (--slack-channel, --slack-token-secret) or a"
        " webhook (--webhook-url, --signing-secret) when runs matching the filter reach a"
        " --notify state. Secrets are the NAMES the server knows them by (a file in its"
        " --secrets-dir, or SKIT_SECRET_<NAME>), never values.",
    )
    create.add_argument(
        "--notify",
        action="append",
        type=str.upper,
        choices=_RUN_STATES,
        metavar="STATE",
        help="a run state to notify on (repeatable; default SUCCEEDED and FAILED)",
    )
    create.add_argument("--slack-channel", help="a channel id or #name")
    create.add_argument("--slack-thread-ts", help="post into this thread")
    create.add_argument("--slack-token-secret", metavar="NAME", help="the bot token's secret")
    create.add_argument("--webhook-url", help="an http(s) URL to POST the run to")
    create.add_argument("--signing-secret", metavar="NAME", help="the signing key's secret")
    create.add_argument("--pipeline", help='only runs of "x" or "pipelines/x"')
    create.add_argument(
        "--state",
        dest="states",
        action="append",
        type=str.upper,
        choices=_RUN_STATES,
        default=[],
        metavar="STATE",
        help="only runs in this state (repeatable)",
    )
    create.add_argument(
        "--label",
        dest="labels",
        action="append",
        type=parse_label,
        default=[],
        metavar="KEY=VALUE",
        help="only runs with this label (repeatable)",
    )
    create.add_argument("--subscription-id", help="the id (default: chosen by the service)")
    create.add_argument("--request-id", help="idempotency key")
    create.set_defaults(remote="subscriptions_create")
    for command, what in (
        ("get", "show a subscription and how its deliveries go"),
        ("delete", "delete a subscription and its deliveries"),
    ):
        sub = subscriptions.add_parser(command, parents=[common], help=what)
        sub.add_argument("name", help='"x" or "subscriptions/x"')
        sub.set_defaults(remote=f"subscriptions_{command}")
    subscriptions.add_parser("list", parents=[common], help="list the subscriptions").set_defaults(
        remote="subscriptions_list"
    )
    deliveries = subscriptions.add_parser(
        "deliveries", parents=[common], help="list a subscription's deliveries, newest first"
    )
    deliveries.add_argument("name", help='"x" or "subscriptions/x"')
    deliveries.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    deliveries.add_argument(
        "--attempts", action="store_true", help="also print every attempt's time and outcome"
    )
    deliveries.set_defaults(remote="subscriptions_deliveries")


def _add_runs_create(runs: _Subcommands, common: argparse.ArgumentParser) -> None:
    create = runs.add_parser(
        "create",
        parents=[common],
        help="start a run",
        description="Start a run and print its name. --param values are JSON when they parse "
        '(5, true, [1,2], {"a":1}), else text; quote to force text: --param \'id="007"\'.',
    )
    create.add_argument("pipeline", help='"x" or "pipelines/x"')
    create.add_argument(
        "--param",
        dest="params",
        action="append",
        type=parse_param,
        default=[],
        metavar="KEY=VALUE",
        help="a parameter (repeatable)",
    )
    create.add_argument(
        "--param-json",
        metavar="FILE",
        help="a JSON object of parameters (- for stdin); --param overrides it",
    )
    create.add_argument(
        "--label",
        dest="labels",
        action="append",
        type=parse_label,
        default=[],
        metavar="KEY=VALUE",
        help="a label (repeatable)",
    )
    create.add_argument("--run-id", help="the new run's id (default: chosen by the service)")
    create.add_argument(
        "--request-id", help="idempotency key: repeating the command returns the same run"
    )
    create.add_argument(
        "--no-cache",
        dest="disable_cache",
        action="store_true",
        help="turn the step cache off for this run: every step runs, none reuses an earlier"
        " run's result",
    )
    create.add_argument(
        "--watch", action="store_true", help="watch the run; exit 0 only if it succeeds"
    )
    create.set_defaults(remote="runs_create")


def _add_runs_list(runs: _Subcommands, common: argparse.ArgumentParser) -> None:
    list_runs = runs.add_parser("list", parents=[common], help="list runs, newest first")
    list_runs.add_argument("--pipeline", help="only runs of this pipeline")
    list_runs.add_argument(
        "--state",
        dest="states",
        action="extend",
        nargs="+",
        type=parse_run_state,
        default=[],
        metavar="STATE",
        help="only runs in one of these states (queued, running, succeeded, ...)",
    )
    list_runs.add_argument(
        "--label",
        dest="labels",
        action="append",
        type=parse_label,
        default=[],
        metavar="KEY=VALUE",
        help="only runs with this label (repeatable)",
    )
    list_runs.add_argument(
        "--created-after", type=parse_time, metavar="TIME", help="only runs created at or after"
    )
    list_runs.add_argument(
        "--created-before", type=parse_time, metavar="TIME", help="only runs created before"
    )
    list_runs.add_argument(
        "--limit",
        type=parse_count,
        default=50,
        metavar="N",
        help="at most N runs (default 50; 0 for all)",
    )
    list_runs.set_defaults(remote="runs_list")


def _add_runs_retry(runs: _Subcommands, common: argparse.ArgumentParser) -> None:
    retry = runs.add_parser(
        "retry",
        parents=[common],
        help="start a new run of a failed or cancelled run, reusing its succeeded steps",
    )
    retry.add_argument("name", help='"abc" or "runs/abc"')
    retry.add_argument("--run-id", help="id of the new run (default: chosen by the server)")
    retry.add_argument("--request-id", help="idempotency key: a retry with the same id is a no-op")
    retry.add_argument("--watch", action="store_true", help="follow the new run until it ends")
    retry.set_defaults(remote="runs_retry")


def _add_runs_logs(runs: _Subcommands, common: argparse.ArgumentParser) -> None:
    logs = runs.add_parser("logs", parents=[common], help="print a step's output")
    logs.add_argument("name", help='"abc" or "runs/abc"')
    logs.add_argument("step", help='the step name as `runs get` shows it, e.g. "fetch-calls"')
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the step finishes"
    )
    logs.add_argument(
        "--attempt", type=parse_count, default=0, metavar="N", help="only attempt N (default: all)"
    )
    logs.set_defaults(remote="runs_logs")


def _add_runs_watch(runs: _Subcommands, common: argparse.ArgumentParser) -> None:
    watch = runs.add_parser(
        "watch",
        parents=[common],
        help="follow a run until it finishes, or (--all) every matching run's changes",
        description="Follow a run: a live view on a terminal, one line per change otherwise. "
        "Exits 0 if the run succeeds, 1 if it fails or is cancelled. With --all instead of a "
        "run, print one line (--output json: one JSON object) per change of every run "
        "matching the filters, until interrupted, resuming after a lost connection.",
    )
    watch.add_argument("name", nargs="?", help='"abc" or "runs/abc"')
    watch.add_argument(
        "--after-revision",
        type=parse_count,
        default=0,
        metavar="N",
        help="resume after revision N instead of starting from the current state",
    )
    every = watch.add_argument_group("every run (--all)")
    every.add_argument(
        "--all", dest="all_runs", action="store_true", help="watch every run matching the filters"
    )
    every.add_argument("--pipeline", help="only runs of this pipeline")
    every.add_argument(
        "--state",
        dest="states",
        action="extend",
        nargs="+",
        type=parse_run_state,
        default=[],
        metavar="STATE",
        help="only changes that leave a run in one of these states",
    )
    every.add_argument(
        "--label",
        dest="labels",
        action="append",
        type=parse_label,
        default=[],
        metavar="KEY=VALUE",
        help="only runs with this label (repeatable)",
    )
    every.add_argument(
        "--created-after", type=parse_time, metavar="TIME", help="only runs created at or after"
    )
    every.add_argument(
        "--created-before", type=parse_time, metavar="TIME", help="only runs created before"
    )
    every.add_argument(
        "--after-cursor",
        default="",
        metavar="CURSOR",
        help="resume after this cursor (printed with each change in --output json)",
    )
    every.add_argument(
        "--initial",
        action="store_true",
        help="first print the runs matching now, then their changes",
    )
    watch.set_defaults(remote="runs_watch")


def _add_connection_options(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None
) -> None:
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if environ is None else value

    server = environ.get("SKIT_SERVER", DEFAULT_SERVER) if environ is not None else None
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=default(server),
        help=f"the service (SKIT_SERVER; default {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--output",
        choices=("text", "json"),
        default=default("text"),
        help="text for people, json for scripts (default text)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=default(DEFAULT_TIMEOUT_SECONDS),
        help=f"deadline of each call, watches excepted (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument(
        "--token",
        default=default(environ.get("SKIT_TOKEN") if environ is not None else None),
        help="bearer token (SKIT_TOKEN)",
    )
    for flag, env, what in (
        ("--tls-ca", "SKIT_TLS_CA", "PEM roots to trust; turns TLS on"),
        ("--tls-cert", "SKIT_TLS_CLIENT_CERT", "client certificate for mutual TLS"),
        ("--tls-key", "SKIT_TLS_CLIENT_KEY", "client key for mutual TLS"),
    ):
        parser.add_argument(
            flag,
            type=Path,
            default=default(Path(environ[env]) if environ and environ.get(env) else None),
            help=f"{what} ({env})",
        )
