"""What the server imports to start: nothing that only a later event needs (a cron
schedule evaluated, a notification sent, retention configured), so that `serve` answers
sooner (the cold start benchmark)."""

from __future__ import annotations

import json
import subprocess
import sys

_LATER = ("croniter", "slack_sdk", "urllib.request", "http.client", "skit_pipelines.retention")


def _imported(code: str) -> list[str]:
    script = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {_LATER!r} if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return list(json.loads(result.stdout))


def test_the_server_and_its_notification_senders_import_none_of_them():
    assert (
        _imported(
            "import skit_pipelines.server\n"
            "import skit_pipelines.notifications.sinks.slack\n"
            "import skit_pipelines.notifications.sinks.webhook"
        )
        == []
    )


_AFTER_SERVING = (
    "skit_pipelines.schedules",
    "skit_pipelines.triggers",
    "skit_pipelines.notifications.model",
    "skit_pipelines.notifications.worker",
    "skit_pipelines.backends.local_checks",
    "skit_demo",
    "grpc_reflection.v1alpha",
    "google.protobuf.descriptor_pb2",
    "google.protobuf.json_format",
    "uuid",
    "difflib",
    "ctypes",
)
"""Imported after SERVING (schedules, notifications, the executor's demo data), at the
first call that needs them (reflection, a refused request, a run's parameters, the first
memory reclaim after a burst of closed streams), or not by `serve` at all (uuid: a run
id takes os.urandom; difflib: an error's hint)."""


def test_the_server_leaves_what_serving_does_not_need_for_later():
    script = (
        "import skit_pipelines_cli.local, skit_pipelines.server\nimport json, sys\n"
        f"print(json.dumps([m for m in {_AFTER_SERVING!r} if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []


def test_a_cron_trigger_imports_croniter_when_checked():
    assert _imported(
        "from skit_pipelines.triggers import Trigger\n"
        "Trigger(cron='30 2 * * *', time_zone='Asia/Kolkata').check()"
    ) == ["croniter"]
