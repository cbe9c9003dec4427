"""Pytest plugin: a real PostgreSQL server for tests and benchmarks.

``throwaway_postgres()`` starts a private PostgreSQL 15 cluster in a temp dir,
tuned for speed over durability (``fsync=off`` and friends), and removes it on
exit. Fixtures:

- ``database_url`` (session): ``$DATABASE_URL`` if set, else a throwaway
  cluster. Tests must not destroy data they did not create, because with
  ``$DATABASE_URL`` set the server may be someone's real database.
- ``fresh_database_url`` (function): a brand-new empty database on that server,
  dropped afterwards. Use it for tests that count rows or restart servers.

All fixtures are sync on purpose: they run outside the event loop, so the
strict blocking detector on async tests never sees ``subprocess`` or sync
psycopg calls made here. PG tests are never skipped: if no server can be
started, the fixture fails with the server log.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from tests.support.processes import free_port

__all__ = [
    "database_url",
    "fresh_database",
    "fresh_database_url",
    "throwaway_postgres",
    "with_database",
]

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"

# Durability is worthless for a cluster that is deleted after the run.
_SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "128MB",
    "listen_addresses": "'127.0.0.1'",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


def _as_server_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; drop to ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", PG_USER, "--", *argv]


def _ensure_server_user() -> None:
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
            capture_output=True,
        )


def _chown_tree(path: Path) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(PG_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for child in path.rglob("*"):
        os.chown(child, entry.pw_uid, entry.pw_gid)


def _run(argv: list[str], what: str, log: Path | None = None) -> None:
    result = subprocess.run(
        _as_server_user(argv), capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        server_log = log.read_text(errors="replace") if log and log.exists() else "(no log)"
        raise RuntimeError(
            f"{what} failed (exit {result.returncode}).\n"
            f"command: {' '.join(argv)}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
            f"server log:\n{server_log}"
        )


_PREFIX = "pgtest-"
_OWNER = "owner.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed process whose parent has not reaped it yet is a zombie: dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def _reap_orphans() -> None:
    """Stop clusters left running by test processes that were killed outright."""
    for root in Path("/tmp").glob(f"{_PREFIX}*"):
        try:
            owner = int((root / _OWNER).read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        with contextlib.suppress(Exception):
            _run([str(PG_BIN / "pg_ctl"), "stop", "-D", str(root / "data"), "-m", "immediate"], "")
        shutil.rmtree(root, ignore_errors=True)


def with_database(url: str, dbname: str) -> str:
    """Return ``url`` pointing at database ``dbname`` (URL-form conninfo only)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@contextlib.contextmanager
def throwaway_postgres(*, start_timeout: float = 60.0) -> Iterator[str]:
    """Start a private PostgreSQL 15 cluster; yield its URL; stop and delete it.

    Yields ``postgresql://postgres@127.0.0.1:<port>/postgres``. Local
    connections use trust auth, so the URL carries no password.
    """
    for binary in ("initdb", "pg_ctl"):
        if not (PG_BIN / binary).exists():
            raise RuntimeError(f"{PG_BIN / binary} not found; install postgresql-15 or set PG_BIN")
    _ensure_server_user()
    _reap_orphans()
    # Keep the path short: the unix socket path must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix=_PREFIX, dir="/tmp"))
    data, sockets, log = root / "data", root / "sock", root / "server.log"
    sockets.mkdir()
    (root / _OWNER).write_text(str(os.getpid()))
    _chown_tree(root)
    started = False
    try:
        _run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            "initdb",
        )
        settings = dict(_SERVER_SETTINGS, unix_socket_directories=f"'{sockets}'")
        last_error: RuntimeError | None = None
        # A port that was free a moment ago can be taken before the server
        # binds it; retry with a new one a few times.
        for _attempt in range(3):
            port = free_port()
            settings["port"] = str(port)
            conf = "\n".join(f"{key} = {value}" for key, value in settings.items())
            # postgresql.auto.conf is read last, so these win over defaults.
            (data / "postgresql.auto.conf").write_text(conf + "\n")
            _chown_tree(data)
            try:
                _run(
                    [
                        str(PG_BIN / "pg_ctl"),
                        "start",
                        "-D",
                        str(data),
                        "-l",
                        str(log),
                        "-w",
                        "-t",
                        str(int(start_timeout)),
                    ],
                    "pg_ctl start",
                    log,
                )
            except RuntimeError as exc:
                last_error = exc
                if "could not bind" in str(exc) or "Address already in use" in str(exc):
                    continue
                raise
            started = True
            break
        if not started:
            assert last_error is not None
            raise last_error
        url = f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres"
        _wait_accepting(url, log, start_timeout)
        yield url
    finally:
        if started:
            with contextlib.suppress(Exception):
                _run([str(PG_BIN / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate"], "stop")
        shutil.rmtree(root, ignore_errors=True)


def _wait_accepting(url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                server_log = log.read_text(errors="replace") if log.exists() else "(no log)"
                raise RuntimeError(
                    f"PostgreSQL did not accept connections: {exc}\nserver log:\n{server_log}"
                ) from exc
            time.sleep(0.1)
        else:
            return


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create an empty ``test_<uuid>`` database on ``server_url``; drop it afterwards."""
    name = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(server_url, name)
    finally:
        # Only ever drop what we created. FORCE ends sessions that a crashed
        # server under test may have left behind.
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A PostgreSQL URL: ``$DATABASE_URL`` if set, else a throwaway local cluster."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    with throwaway_postgres() as url:
        yield url


@pytest.fixture
def fresh_database_url(database_url: str) -> Iterator[str]:
    """URL of a new, empty database on the ``database_url`` server (dropped afterwards)."""
    with fresh_database(database_url) as url:
        yield url
