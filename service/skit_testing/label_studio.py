"""A real Label Studio server for tests: `label_studio` starts one per test module.

Label Studio (PyPI `label-studio`, pinned to LABEL_STUDIO_VERSION) lives in a venv of its
own, never in ours: it hard-pins Django, DRF and requests. Two things are cached between
runs, each built once (under a file lock, so two xdist workers never build it twice):

1. the venv (`pip install label-studio==1.23.2`, ~3 minutes and ~1 GB cold; 73 s with a
   local wheel cache), at env SKIT_TEST_LABEL_STUDIO_VENV or
   ~/.cache/skit-pipelines/label-studio-1.23.2 (the account's home, also under Bazel);
2. a template data directory next to it (`label-studio init`: ~30 s of Django migrations
   into a SQLite database), copied for every server so each module starts from an empty
   Label Studio in ~3 s.

Both are built before the first test runs (`pytest_collection_modifyitems`, when a collected
test uses the fixture), so the per-test timeout never covers a pip install; CI builds them
ahead with `python -m skit_testing.label_studio` (see the README).

When Label Studio cannot be had (no network for pip, no Python venv module) the tests skip,
except in CI: env CI=true or SKIT_TEST_REQUIRE_LABEL_STUDIO=1 makes that a failure (as
SKIT_TEST_REQUIRE_POSTGRES does for PostgreSQL), so the tests cannot pass unnoticed as skips.

Use it by loading this module as a plugin in a test module:
`pytest_plugins = ["skit_testing.label_studio"]`, then take `label_studio` (a LabelStudio:
`.url`, `.token`, `.env` for a component's LABEL_STUDIO_URL/LABEL_STUDIO_TOKEN).
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

logger = logging.getLogger(__name__)

LABEL_STUDIO_VERSION = "1.23.2"
ENV_VENV = "SKIT_TEST_LABEL_STUDIO_VENV"
ENV_REQUIRE = "SKIT_TEST_REQUIRE_LABEL_STUDIO"


def _user_home() -> Path:
    # The account's home, not $HOME: Bazel points HOME at each test's temporary directory,
    # which would rebuild the venv (minutes) for every test target.
    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        return Path.home()


DEFAULT_VENV = _user_home() / ".cache" / "skit-pipelines" / f"label-studio-{LABEL_STUDIO_VERSION}"

USERNAME = "skit-tests@labels.skit.example"
PASSWORD = "skit-tests-password"
TOKEN = "5b1c0ffee5b1c0ffee5b1c0ffee5b1c0ffee5b1c"
"""The admin's legacy API token (40 hex digits, as Label Studio's own tokens are)."""
SECRET_KEY = "skit-pipelines-tests-label-studio-secret-key"
"""Fixed so the template's sessions and tokens stay valid in every copy."""

PIP_INSTALL_TIMEOUT_SECONDS = 1200
INIT_TIMEOUT_SECONDS = 300
START_TIMEOUT_SECONDS = 90
"""`/health` usually answers ~3 s after start; a loaded 2-core CI machine is slower."""
STOP_TIMEOUT_SECONDS = 15
_READY_MARKER = ".skit-ready"
_FIXTURE = "label_studio"
_build_failure: list[str] = []
"""Why the build before the tests failed, so each module skips at once instead of retrying."""


class LabelStudioUnavailable(Exception):
    """Label Studio cannot be installed or started on this machine."""


@dataclass(frozen=True)
class LabelStudio:
    """A running Label Studio server with an admin whose legacy token is `token`."""

    url: str
    token: str
    port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)
    username: str = USERNAME
    """The admin's email: the annotator of the annotations the tests make."""

    @property
    def env(self) -> dict[str, str]:
        """The step env that points a component at this server."""
        return {"LABEL_STUDIO_URL": self.url, "LABEL_STUDIO_TOKEN": self.token}

    def session(self) -> requests.Session:
        """An HTTP session authenticated as the admin, for tests that act as annotators."""
        session = requests.Session()
        session.headers["Authorization"] = f"Token {self.token}"
        return session

    def add_annotator(self, email: str) -> int:
        """A user of the admin's organisation (`POST /api/users/`, then `PATCH` its
        active_organization, without which it sees no project); returns its id."""
        with self.session() as session:
            me = _ok(session.get(f"{self.url}/api/current-user/whoami", timeout=30))
            user = _ok(
                session.post(
                    f"{self.url}/api/users/",
                    json={"email": email, "username": email.split("@")[0]},
                    timeout=30,
                )
            )
            _ok(
                session.patch(
                    f"{self.url}/api/users/{user['id']}/",
                    json={"active_organization": me["active_organization"]},
                    timeout=30,
                )
            )
        return int(user["id"])

    def annotate(
        self,
        task_id: int,
        result: list[dict[str, Any]],
        *,
        annotator: int | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Submits a label as the labeling page does (`POST /api/tasks/N/annotations/`);
        `annotator` (a user id) is recorded as its `completed_by`. Label Studio 1.23 has no
        API for another user's token, so the admin's submits on the annotator's behalf."""
        body: dict[str, Any] = {"result": result, "lead_time": 3.5, **fields}
        if annotator is not None:
            body["completed_by"] = annotator
        with self.session() as session:
            reply = session.post(
                f"{self.url}/api/tasks/{task_id}/annotations/", json=body, timeout=30
            )
        annotation: dict[str, Any] = _ok(reply)
        return annotation

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """The project's tasks with their predictions and annotations, in id order."""
        found: list[dict[str, Any]] = []
        with self.session() as session:
            page = 1
            while True:
                params: dict[str, str | int] = {
                    "project": project_id,
                    "page": page,
                    "page_size": 100,
                    "fields": "all",
                }
                reply = session.get(
                    f"{self.url}/api/tasks/",
                    params=params,
                    timeout=30,
                )
                if reply.status_code == 404 and found:
                    break  # "Invalid page.": past the last one
                listing = _ok(reply)
                found.extend(listing["tasks"])
                if len(found) >= listing["total"] or not listing["tasks"]:
                    break
                page += 1
        return sorted(found, key=lambda task: int(task["id"]))


def _ok(reply: requests.Response) -> Any:
    if reply.status_code >= 400:
        raise AssertionError(
            f"Label Studio: {reply.request.method} {reply.url} gave HTTP {reply.status_code}: "
            f"{reply.text[:300]}"
        )
    return reply.json()


def venv_dir() -> Path:
    return Path(os.environ.get(ENV_VENV, "").strip() or DEFAULT_VENV)


def template_dir(venv: Path) -> Path:
    return venv.with_name(venv.name + "-template")


def _required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get(ENV_REQUIRE) == "1"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (another process or xdist worker building the same thing
    waits here, then finds it built)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_venv(venv: Path | None = None) -> Path:
    """The Label Studio venv, installed if missing; returns its `label-studio` executable."""
    venv = venv or venv_dir()
    executable = venv / "bin" / "label-studio"
    marker = venv / _READY_MARKER
    if marker.is_file():
        return executable
    with _locked(venv.with_name(venv.name + ".lock")):
        if marker.is_file():
            return executable
        if not executable.is_file() or not _importable(venv):
            started = time.monotonic()
            logger.warning("installing label-studio==%s into %s", LABEL_STUDIO_VERSION, venv)
            _run([sys.executable, "-m", "venv", "--clear", str(venv)], timeout=120)
            _run(
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    f"label-studio=={LABEL_STUDIO_VERSION}",
                ],
                timeout=PIP_INSTALL_TIMEOUT_SECONDS,
            )
            logger.warning("installed Label Studio in %.0f s", time.monotonic() - started)
        if not _importable(venv):
            raise LabelStudioUnavailable(f"label-studio in {venv} does not import")
        marker.write_text(LABEL_STUDIO_VERSION + "\n")
    return executable


def _importable(venv: Path) -> bool:
    """The venv holds label-studio at our version, fully installed (a venv left by a killed
    pip install has the executable but not every package)."""
    python = venv / "bin" / "python"
    if not python.is_file():
        return False
    check = (
        "import importlib.metadata as m, label_studio, django, rest_framework;"
        f"assert m.version('label-studio') == {LABEL_STUDIO_VERSION!r}"
    )
    return subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0


def ensure_template(venv: Path | None = None) -> Path:
    """A data directory where `label-studio init` has run its migrations; copied per server."""
    venv = venv or venv_dir()
    executable = ensure_venv(venv)
    template = template_dir(venv)
    if (template / _READY_MARKER).is_file():
        return template
    with _locked(template.with_name(template.name + ".lock")):
        if (template / _READY_MARKER).is_file():
            return template
        shutil.rmtree(template, ignore_errors=True)
        building = Path(tempfile.mkdtemp(prefix=template.name + ".", dir=template.parent))
        started = time.monotonic()
        try:
            with tempfile.TemporaryDirectory() as scratch:
                _run(
                    [str(executable), "init", "--no-browser", "--quiet"],
                    env=server_env(building, Path(scratch)),
                    timeout=INIT_TIMEOUT_SECONDS,
                )
            (building / _READY_MARKER).write_text(LABEL_STUDIO_VERSION + "\n")
            # Complete or absent: a template is only ever seen with its migrations done.
            building.rename(template)
        finally:
            shutil.rmtree(building, ignore_errors=True)
        logger.warning("initialised a Label Studio template in %.0f s", time.monotonic() - started)
    return template


def server_env(data_dir: Path, config_home: Path) -> dict[str, str]:
    """The environment of `label-studio init`/`start`: headless, offline, SQLite in
    `data_dir`, an admin with a legacy token (TOOLCHAIN.md, "Label Studio")."""
    env = {
        key: value
        for key, value in os.environ.items()
        # Label Studio reads these bare names as its own settings (label_studio/core/settings
        # via get_env, which also tries them without the LABEL_STUDIO_ prefix).
        if key not in ("HOST", "PORT", "USERNAME", "PASSWORD") and not key.startswith("DJANGO_")
    }
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_USERNAME": USERNAME,
            "LABEL_STUDIO_PASSWORD": PASSWORD,
            "LABEL_STUDIO_USER_TOKEN": TOKEN,
            # Without it the `Authorization: Token ...` header gets 401 (1.20+ default to
            # personal access tokens).
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LATEST_VERSION_CHECK": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "COLLECT_ANALYTICS": "false",
            "SECRET_KEY": SECRET_KEY,
            "XDG_CONFIG_HOME": str(config_home),
        }
    )
    return env


def _run(command: list[str], *, timeout: float, env: dict[str, str] | None = None) -> None:
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabelStudioUnavailable(f"{command[0]} {command[1]}: {exc}") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise LabelStudioUnavailable(
            f"{' '.join(command[:4])} exited {result.returncode}: {' | '.join(tail)}"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(root: Path) -> LabelStudio:
    """Starts a Label Studio of its own on a free port, with a copy of the template in
    `root`; returns once `/health` answers on that port."""
    venv = venv_dir()
    template = ensure_template(venv)
    data_dir = root / "data"
    shutil.copytree(template, data_dir)
    config_home = root / "config"
    config_home.mkdir()
    log = root / "label-studio.log"
    port = _free_port()
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(venv / "bin" / "label-studio"),
                "start",
                "--no-browser",
                "--internal-host",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            env=server_env(data_dir, config_home),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
        )
    server = LabelStudio(
        url=f"http://127.0.0.1:{port}",
        token=TOKEN,
        port=port,
        data_dir=data_dir,
        log=log,
        process=process,
    )
    try:
        _wait_healthy(server)
    except BaseException:
        stop(server)
        raise
    logger.warning("Label Studio on port %d ready in %.1f s", port, time.monotonic() - started)
    return server


def _wait_healthy(server: LabelStudio) -> None:
    # Our port, not any: a busy port makes Label Studio silently take the next one.
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise LabelStudioUnavailable(
                f"label-studio start exited {server.process.returncode}: {_tail(server.log)}"
            )
        try:
            if requests.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise LabelStudioUnavailable(
        f"Label Studio gave no /health on port {server.port} within {START_TIMEOUT_SECONDS} s: "
        f"{_tail(server.log)}"
    )


def stop(server: LabelStudio) -> None:
    """SIGTERM (SIGINT is ignored when it runs in the background), SIGKILL if it lingers."""
    if server.process.poll() is not None:
        return
    os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()


def _tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])


def _unavailable(message: str) -> None:
    if _required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Builds the venv and template before any test runs, so that no test's timeout covers
    a pip install; failures are reported by the fixture, test by test."""
    if not any(_FIXTURE in getattr(item, "fixturenames", ()) for item in items):
        return
    try:
        ensure_template()
    except (LabelStudioUnavailable, OSError) as exc:
        logger.warning("Label Studio unavailable: %s", exc)
        _build_failure.append(str(exc))


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    """A Label Studio server of this test module's own, empty but for its admin."""
    if _build_failure:
        _unavailable(f"no Label Studio for tests: {_build_failure[0]}")
    try:
        server = start(tmp_path_factory.mktemp("label-studio"))
    except (LabelStudioUnavailable, OSError) as exc:
        _unavailable(f"no Label Studio for tests: {exc}")
        raise AssertionError("unreachable") from exc
    try:
        yield server
    finally:
        stop(server)


def main(argv: list[str] | None = None) -> int:
    """`python -m skit_testing.label_studio`: builds the venv and template ahead (CI)."""
    parser = argparse.ArgumentParser(
        prog="python -m skit_testing.label_studio", description=main.__doc__
    )
    parser.add_argument("--start", action="store_true", help="also start and stop a server once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        template = ensure_template()
        print(f"Label Studio {LABEL_STUDIO_VERSION}: venv {venv_dir()}, template {template}")
        if args.start:
            with tempfile.TemporaryDirectory() as root:
                stop(start(Path(root)))
    except (LabelStudioUnavailable, OSError) as exc:
        print(f"label-studio: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
