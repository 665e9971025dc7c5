"""The benchmark's scratch database: created on the PostgreSQL server (or, where there is none,
a SQLite file, saying so), migrated, used through Django's default connection, dropped after.

Benchmarks never touch the shop's own data.
"""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import dj_database_url
import psycopg2
from django.conf import settings
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, connections
from psycopg2 import sql

from settings.env import var_path

POSTGRES = "django.db.backends.postgresql"
FALLBACK_SERVER_URL = "postgres://postgres@127.0.0.1:5432/postgres"


class BenchmarkError(Exception):
    """The benchmark cannot produce a trustworthy figure."""


class ServerUnavailable(BenchmarkError):
    """No PostgreSQL server to benchmark on."""


def server_settings(database_url: str | None = None) -> dict:
    """Django connection settings for the PostgreSQL server: `database_url`, else the configured
    database if it is PostgreSQL, else the local default server. Only the server is used, not its database."""
    if database_url:
        config = dj_database_url.parse(database_url)
    elif settings.DATABASES[DEFAULT_DB_ALIAS]["ENGINE"] == POSTGRES:
        config = settings.DATABASES[DEFAULT_DB_ALIAS]
    else:
        config = dj_database_url.parse(FALLBACK_SERVER_URL)
    if config["ENGINE"] != POSTGRES:
        raise BenchmarkError(f"The benchmark needs a PostgreSQL server, not {config['ENGINE']}.")
    return {
        "ENGINE": POSTGRES,
        **{key: config.get(key) or "" for key in ("HOST", "PORT", "USER", "PASSWORD")},
        "OPTIONS": dict(config.get("OPTIONS") or {}),
        # As settings/core.py configures a server database.
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


def scratch_name(purpose: str, database_url: str | None = None) -> str:
    """`<database>_<purpose>`, after the PostgreSQL database the run is pointed at (`shop_<purpose>`
    without one): runs from two checkouts with DATABASE_URLs of their own, on one server, never
    share (nor drop) each other's scratch database."""
    if database_url:
        name = dj_database_url.parse(database_url).get("NAME")
    elif settings.DATABASES[DEFAULT_DB_ALIAS]["ENGINE"] == POSTGRES:
        name = settings.DATABASES[DEFAULT_DB_ALIAS]["NAME"]
    else:
        name = ""
    return f"{name or 'shop'}_{purpose}"


def server_version(server: dict) -> str:
    """The server's version; raises ServerUnavailable when there is no server to benchmark on."""
    with maintenance_cursor(server) as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0].split()[0]


@contextmanager
def maintenance_cursor(server: dict) -> Iterator[psycopg2.extensions.cursor]:
    """An autocommit cursor on the `postgres` database: CREATE/DROP DATABASE cannot run in a transaction."""
    django_only = {"assume_role", "isolation_level", "pool", "server_side_binding"}
    options = {key: value for key, value in server["OPTIONS"].items() if key not in django_only}
    params = {"host": server["HOST"], "port": server["PORT"], "user": server["USER"], "password": server["PASSWORD"]}
    try:
        # The settings' connect_timeout (DB_CONNECT_TIMEOUT) wins over this default.
        conn = psycopg2.connect(
            dbname="postgres", **{k: v for k, v in params.items() if v}, **{"connect_timeout": 5, **options}
        )
    except psycopg2.OperationalError as exc:
        where = f"{server['HOST'] or 'the local socket'}:{server['PORT'] or 5432}"
        raise ServerUnavailable(
            f"No PostgreSQL server reachable at {where} ({str(exc).strip()}). The benchmark needs one: "
            "pass --database-url postgres://user@host:5432/postgres or set DATABASE_URL."
        ) from exc
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


def create_database(server: dict, name: str) -> None:
    with maintenance_cursor(server) as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(server: dict, name: str) -> None:
    with maintenance_cursor(server) as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def default_database(settings_dict: dict) -> Iterator[None]:
    """Point Django's default connection at a scratch database, and back afterwards.

    The one place the benchmarks touch connection settings: migrate, the checkouts and the
    pages all use the default connection, so swapping it is enough. Restoring it matters
    when a benchmark runs inside another process (a test).
    """
    original = connections.settings[DEFAULT_DB_ALIAS]
    connections[DEFAULT_DB_ALIAS].close()
    connections.settings[DEFAULT_DB_ALIAS] = settings_dict
    del connections[DEFAULT_DB_ALIAS]
    try:
        yield
    finally:
        connections[DEFAULT_DB_ALIAS].close()
        connections.settings[DEFAULT_DB_ALIAS] = original
        del connections[DEFAULT_DB_ALIAS]


@dataclass(frozen=True)
class Scratch:
    url: str  # DATABASE_URL for the processes the benchmark starts
    engine: str  # "PostgreSQL 15.19", or "SQLite 3.40.1 (no PostgreSQL server found)"


@contextmanager
def scratch_database(name: str, database_url: str | None = None) -> Iterator[Scratch]:
    """A migrated, empty scratch database as Django's default connection for the duration."""
    try:
        server = server_settings(database_url)
        version = server_version(server)
    except (BenchmarkError, ServerUnavailable) as exc:
        with _sqlite(name, reason=str(exc)) as scratch:
            yield scratch
        return
    create_database(server, name)
    try:
        with default_database({**connections.settings[DEFAULT_DB_ALIAS], **server, "NAME": name}):
            call_command("migrate", interactive=False, verbosity=0)
            auth = quote(server["USER"]) + (":" + quote(server["PASSWORD"]) if server["PASSWORD"] else "")
            host = f"{server['HOST'] or '127.0.0.1'}:{server['PORT'] or 5432}"
            yield Scratch(f"postgres://{auth}@{host}/{name}", f"PostgreSQL {version}")
    finally:
        drop_database(server, name)


@contextmanager
def _sqlite(name: str, reason: str) -> Iterator[Scratch]:
    path = Path(var_path("bench", f"{name}.sqlite3"))
    path.unlink(missing_ok=True)
    sqlite_settings = {
        **connections.settings[DEFAULT_DB_ALIAS],
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "CONN_MAX_AGE": 0,
        "OPTIONS": settings.SQLITE_OPTIONS,
    }
    try:
        with default_database(sqlite_settings):
            call_command("migrate", interactive=False, verbosity=0)
            yield Scratch(f"sqlite:///{path}", f"SQLite {sqlite3.sqlite_version} (not PostgreSQL: {reason})")
    finally:
        path.unlink(missing_ok=True)
