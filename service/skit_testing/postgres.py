"""pytest helpers for component and project tests.

`postgres_dsn` gives each test its own empty PostgreSQL database, as a postgresql:// URL.
The server is, in order of preference:

1. the one in env SKIT_TEST_POSTGRES_DSN (a URL or key=value DSN of a role allowed to
   CREATE DATABASE);
2. one already listening on 127.0.0.1:5432 (database "test", user "postgres", trust auth),
   as on the developers' and CI machines;
3. a throwaway server this module starts with initdb/pg_ctl (as the "postgres" user when
   running as root) in a temporary directory, on a free port, stopped at session end.

When none is possible the test is skipped, or fails if env SKIT_TEST_REQUIRE_POSTGRES=1
(CI sets it, so a broken server cannot pass unnoticed as a skip).

`throwaway_postgres` starts a server of the test's own, for tests that restart or stop it.

Use it by loading this module as a plugin in a test module:
`pytest_plugins = ["skit_testing.postgres"]`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

ENV_DSN = "SKIT_TEST_POSTGRES_DSN"
ENV_REQUIRE = "SKIT_TEST_REQUIRE_POSTGRES"
LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A DSN of a PostgreSQL server role that may create databases."""
    import psycopg

    explicit = os.environ.get(ENV_DSN, "").strip()
    if explicit:
        try:
            psycopg.connect(explicit, connect_timeout=5).close()
        except psycopg.Error as exc:
            pytest.fail(f"{ENV_DSN} is set but unusable: {exc}")
        yield explicit
        return
    if _reachable(LOCAL_DSN):
        yield LOCAL_DSN
        return
    server, reason = _start_throwaway_server()
    if server is None:
        message = f"no PostgreSQL server for tests: {reason}"
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture
def throwaway_postgres() -> Iterator[_ThrowawayServer]:
    """A PostgreSQL server of this test's own (never the shared one), for tests that stop
    or restart it: `.dsn`, `.shut_down()`, `.start_again()`."""
    server, reason = _start_throwaway_server()
    if server is None:
        message = f"cannot start a throwaway PostgreSQL server: {reason}"
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_dsn(postgres_server: str) -> Iterator[str]:
    """A postgresql:// URL of a fresh database, dropped after the test."""
    import psycopg
    from psycopg import sql

    name = f"skit_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(postgres_server, name)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def database_url(dsn: str, dbname: str) -> str:
    """A postgresql:// URL for database `dbname` on the server and role of `dsn`."""
    from psycopg.conninfo import conninfo_to_dict

    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    params.pop("dbname", None)
    user = params.pop("user", "")
    password = params.pop("password", "")
    host = params.pop("host", "")
    port = params.pop("port", "")
    userinfo = quote(user, safe="")
    if password:
        userinfo += ":" + quote(password, safe="")
    netloc = ""
    if host and not host.startswith("/"):
        netloc = host + (f":{port}" if port else "")
    else:
        # A Unix-socket directory cannot go in the authority part.
        if host:
            params["host"] = host
        if port:
            params["port"] = port
    if userinfo:
        netloc = f"{userinfo}@{netloc}"
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{netloc}/{quote(dbname, safe='')}{query}"


@dataclass(frozen=True)
class _ThrowawayServer:
    dsn: str
    root: Path
    pg_ctl: str
    as_postgres: tuple[str, ...]
    options: str = ""
    """The postgres options it was started with (port, socket directory, ...)."""

    def shut_down(self) -> None:
        """Stops the server (fast: sessions are disconnected) and keeps its data."""
        self._control("-m", "fast", "stop")

    def start_again(self) -> None:
        """Starts the stopped server on the same port with the same data."""
        self._control("-o", self.options, "-l", str(self.root / "server.log"), "start")

    def _control(self, *args: str) -> None:
        subprocess.run(
            [
                *self.as_postgres,
                self.pg_ctl,
                "-D",
                str(self.root / "data"),
                "-w",
                "-t",
                "30",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=True,
        )

    def stop(self) -> None:
        subprocess.run(
            [
                *self.as_postgres,
                self.pg_ctl,
                "-D",
                str(self.root / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def _reachable(dsn: str) -> bool:
    import psycopg

    try:
        psycopg.connect(dsn, connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


def _postgres_bin(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), reverse=True)
    return candidates[0] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_throwaway_server() -> tuple[_ThrowawayServer | None, str]:
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        return None, "initdb/pg_ctl not found (install PostgreSQL or set SKIT_TEST_POSTGRES_DSN)"
    as_postgres: tuple[str, ...] = ()
    # initdb refuses to run as root; the server then runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="skit-pg-"))
    if os.geteuid() == 0:
        import pwd

        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            return None, "running as root and there is no postgres user for initdb"
        os.chown(root, account.pw_uid, account.pw_gid)
        as_postgres = ("runuser", "-u", "postgres", "--")
    data = root / "data"
    init = subprocess.run(
        [
            *as_postgres,
            initdb,
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        return None, f"initdb failed: {init.stderr.strip()[-300:]}"
    last_error = ""
    for _ in range(3):
        port = _free_port()
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = subprocess.run(
            [
                *as_postgres,
                pg_ctl,
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "server.log"),
                "-w",
                "-t",
                "30",
                "start",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if start.returncode == 0:
            dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            return _ThrowawayServer(dsn, root, pg_ctl, as_postgres, options), ""
        last_error = start.stderr.strip() or start.stdout.strip()
    shutil.rmtree(root, ignore_errors=True)
    return None, f"pg_ctl start failed: {last_error[-300:]}"
