"""Opening the calls and metrics databases from a URL, and the few SQL differences between
SQLite (the embedded demo) and PostgreSQL (production).

URLs: `sqlite:///relative/path`, `sqlite:////absolute/path` (SQLAlchemy's spelling; steps run
in their image folder, so use absolute paths), and `postgresql://user:password@host:port/db`.

Queries are written once with `?` placeholders; the PostgreSQL dialect rewrites them to
psycopg's `%s`. So our SQL never contains a literal `?` (a string, or jsonb's `?` operator).
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")

_server_cursor_names = itertools.count()


class DatabaseError(Exception):
    """A database that cannot be used: a bad URL, a missing file, an unreachable server."""


class Dialect:
    """What differs between the two SQL engines, in the few places our queries touch."""

    name = ""
    for_update = ""
    """Appended to a SELECT to lock its rows until the transaction ends (PostgreSQL); SQLite
    needs nothing, `Database.transaction` holds its write lock from the start."""

    def sql(self, query: str) -> str:
        """The query in the driver's placeholder style."""
        return query

    def any_of(self, column: str) -> str:
        """A condition "column is one of the values" taking one `list_param` parameter."""
        raise NotImplementedError

    def list_param(self, values: Iterable[Any]) -> Any:
        raise NotImplementedError

    def timestamp_param(self, value: datetime) -> Any:
        raise NotImplementedError

    def to_datetime(self, value: Any) -> datetime:
        """A timestamp column's value as an aware UTC datetime."""
        raise NotImplementedError

    def json_text(self, column: str) -> str:
        """A select expression giving a JSON column as JSON text."""
        return column


class SqliteDialect(Dialect):
    """SQLite stores timestamps as fixed-width UTC ISO 8601 text (so text order is time
    order), JSON as text and booleans as 0/1."""

    name = "sqlite"

    def any_of(self, column: str) -> str:
        # One JSON parameter instead of one placeholder per value: no variable-count limit.
        return f"{column} IN (SELECT value FROM json_each(?))"

    def list_param(self, values: Iterable[Any]) -> Any:
        return json.dumps(list(values))

    def timestamp_param(self, value: datetime) -> Any:
        return sqlite_timestamp(value)

    def to_datetime(self, value: Any) -> datetime:
        return datetime.fromisoformat(value).astimezone(UTC)


class PostgresDialect(Dialect):
    name = "postgresql"
    for_update = " FOR UPDATE"

    def sql(self, query: str) -> str:
        return query.replace("%", "%%").replace("?", "%s")

    def any_of(self, column: str) -> str:
        return f"{column} = ANY(?)"

    def list_param(self, values: Iterable[Any]) -> Any:
        return list(values)

    def timestamp_param(self, value: datetime) -> Any:
        return value.astimezone(UTC)

    def to_datetime(self, value: Any) -> datetime:
        moment: datetime = value  # psycopg returns timestamptz columns as aware datetimes
        return moment.astimezone(UTC)

    def json_text(self, column: str) -> str:
        return f"{column}::text"


SQLITE = SqliteDialect()
POSTGRESQL = PostgresDialect()


def sqlite_timestamp(value: datetime) -> str:
    """The SQLite storage form of a timestamp: "2026-10-05T10:23:45.000000+00:00"."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: timestamps must carry a timezone")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def utc_day_bounds(
    first: date | None, last: date | None, zone: tzinfo
) -> tuple[datetime | None, datetime | None]:
    """The UTC interval [start, end) of whole local days `first` to `last` in `zone`: local
    midnight of `first` to the midnight after `last` (None for an open side). DST days are
    23 or 25 hours long, so the bounds are computed in the zone, not by adding hours."""
    start = end = None
    if first:
        start = datetime.combine(first, time(0), zone).astimezone(UTC)
    if last:
        end = datetime.combine(last + timedelta(days=1), time(0), zone).astimezone(UTC)
    return start, end


def sqlite_url(path: str | Path) -> str:
    """The URL of a SQLite database file, made absolute."""
    return SQLITE_PREFIX + str(Path(path).resolve())


def redact_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def dialect_for(url: str) -> Dialect:
    if url.startswith(SQLITE_PREFIX):
        return SQLITE
    if urlsplit(url).scheme in POSTGRES_SCHEMES:
        return POSTGRESQL
    raise DatabaseError(
        f"unsupported database URL {redact_url(url)!r}: expected sqlite:///path or postgresql://..."
    )


class Database:
    """An open connection plus its dialect. Statements run in autocommit mode unless inside
    `transaction()`."""

    def __init__(self, url: str, dialect: Dialect, connection: Any) -> None:
        self.url = url
        self.dialect = dialect
        self.connection = connection

    def execute(self, query: str, params: Sequence[Any] = ()) -> Any:
        """Runs one statement and returns the driver's cursor."""
        return self.connection.execute(self.dialect.sql(query), params)

    def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> None:
        if self.dialect is SQLITE:
            self.connection.executemany(query, rows)
        else:
            with self.connection.cursor() as cursor:
                cursor.executemany(self.dialect.sql(query), rows)

    def fetchall(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.execute(query, params).fetchall())

    def fetchone(self, query: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.execute(query, params).fetchone()
        return row

    def stream(
        self, query: str, params: Sequence[Any] = (), *, batch_size: int = 2000
    ) -> Iterator[tuple[Any, ...]]:
        """Yields the rows of a query without holding the result in memory: a server-side
        cursor on PostgreSQL, SQLite's own lazy cursor otherwise."""
        if self.dialect is SQLITE:
            cursor = self.connection.execute(query, params)
            try:
                while rows := cursor.fetchmany(batch_size):
                    yield from rows
            finally:
                cursor.close()
            return
        # A server-side cursor only lives inside a transaction.
        with self.connection.transaction():
            name = f"skit_stream_{next(_server_cursor_names)}"
            with self.connection.cursor(name=name) as cursor:
                cursor.itersize = batch_size
                cursor.execute(self.dialect.sql(query), params)
                yield from cursor

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """All statements inside commit together or not at all. On SQLite the write lock is
        taken at the start, so reads inside see what the writes will change."""
        if self.dialect is SQLITE:
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self.connection.execute("ROLLBACK")
                raise
            self.connection.execute("COMMIT")
            return
        with self.connection.transaction():
            yield self


@contextmanager
def connect(url: str, *, readonly: bool = False, create: bool = False) -> Iterator[Database]:
    """Opens the database at `url`; closes it on exit.

    A SQLite file must exist unless `create` (an opened path that does not exist would
    otherwise become a new empty database). `readonly` opens SQLite read-only; PostgreSQL
    readers simply never write.

    Raises:
        DatabaseError: the URL is unsupported or the database cannot be opened.
    """
    dialect = dialect_for(url)
    if dialect is SQLITE:
        connection = _open_sqlite(url, readonly=readonly, create=create)
    else:
        connection = _open_postgres(url)
    try:
        yield Database(url, dialect, connection)
    finally:
        connection.close()


def _open_sqlite(url: str, *, readonly: bool, create: bool) -> sqlite3.Connection:
    path = Path(url.removeprefix(SQLITE_PREFIX))
    if not path.name:
        raise DatabaseError(f"SQLite URL {url!r} names no file")
    if not create and not path.is_file():
        raise DatabaseError(f"no SQLite database at {path.resolve()} (from {url!r})")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    mode = "ro" if readonly else "rwc" if create else "rw"
    try:
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode={mode}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA busy_timeout = 30000")
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open SQLite database {path}: {exc}") from exc
    return connection


def _open_postgres(url: str) -> Any:
    # Imported here so that SQLite-only users of this library need no PostgreSQL driver.
    import psycopg

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=30)
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to {redact_url(url)}: {exc}") from exc
