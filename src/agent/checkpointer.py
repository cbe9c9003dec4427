"""PostgreSQL persistence: one connection pool, one lock-free ``PooledPostgresSaver``.

Everything that needs the checkpointer goes through this module:

- ``langgraph.postgres.json`` points ``"checkpointer": {"path": ...}`` at
  :func:`postgres_checkpointer`. The LangGraph server calls it and enters the
  returned async context manager once per event loop, and exits it after the
  runs have stopped.
- The self-hosted server enters :func:`open_pool` on its exit stack and builds
  the saver with :func:`open_saver`, so the pool is closed last.

Lifecycle (after ``psycopg_pool``): the pool is created with ``open=False`` and
opened explicitly with ``await pool.open(wait=True, timeout=...)``, so a server
with an unreachable database fails at startup with :class:`DatabaseUnavailable`
(one line, password redacted) instead of on its first run.

Settings come from environment variables, read once by
:meth:`PostgresSettings.from_env`:

==========================  =====================================================
``DATABASE_URL``            required; ``postgresql://user:pass@host:port/db``
``PG_POOL_MIN_SIZE``        connections kept open (default 1)
``PG_POOL_MAX_SIZE``        upper bound on connections (default 10)
``PG_POOL_OPEN_TIMEOUT``    seconds to wait for ``min_size`` connections (10)
``PG_POOL_TIMEOUT``         seconds an operation waits for a free connection (30)
``PG_PREPARE_THRESHOLD``    ``none`` (default) or an int; see below
``PG_MAX_IDLE``             close connections idle this many seconds (300)
``PG_MAX_LIFETIME``         recycle connections after this many seconds (1800)
``PG_CONNECT_TIMEOUT``      libpq ``connect_timeout`` per attempt (10)
``PG_KEEPALIVES_IDLE``      TCP keepalive: idle seconds before probing (30)
``PG_KEEPALIVES_INTERVAL``  TCP keepalive: seconds between probes (10)
``PG_KEEPALIVES_COUNT``     TCP keepalive: lost probes before dropping (3)
``CHECKPOINTER_SETUP``      ``true`` (default) runs ``saver.setup()`` at startup
==========================  =====================================================

Nothing here blocks the event loop: the driver is async psycopg, settings are
read from ``os.environ`` (no files), and the saver is built on the running loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from agent.pooled_saver import PooledPostgresSaver

__all__ = [
    "SETUP_LOCK_KEY",
    "DatabaseUnavailable",
    "Pool",
    "PostgresSettings",
    "open_pool",
    "open_saver",
    "ping",
    "postgres_checkpointer",
    "redact_url",
    "serving_pool",
]

logger = logging.getLogger(__name__)

Pool: TypeAlias = AsyncConnectionPool[AsyncConnection[DictRow]]
"""The pool type the saver expects: async connections returning dict rows."""


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached within the open timeout.

    ``str(exc)`` is one line naming ``user@host:port/db`` (never the password)
    and the driver's reason, fit to print as the server's last words.
    """


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    """Connection pool and saver settings. Build with :meth:`from_env`."""

    url: str
    """``DATABASE_URL``: libpq URL or ``key=value`` conninfo. Required."""

    min_size: int = 1
    """``PG_POOL_MIN_SIZE``: connections opened at startup and kept open (>= 1,
    so that startup proves the database is reachable)."""

    max_size: int = 10
    """``PG_POOL_MAX_SIZE``. :class:`~agent.pooled_saver.PooledPostgresSaver` takes
    one connection per checkpoint operation, so this is also the number of
    checkpoint reads/writes in flight at once (plus readiness pings)."""

    checkout_timeout: float = 30.0
    """``PG_POOL_TIMEOUT``: seconds an operation waits for a free connection before
    failing with ``PoolTimeout`` (instead of queueing forever)."""

    open_timeout: float = 10.0
    """``PG_POOL_OPEN_TIMEOUT``: seconds to wait for ``min_size`` connections at
    startup before raising :class:`DatabaseUnavailable`."""

    prepare_threshold: int | None = None
    """``PG_PREPARE_THRESHOLD``: ``none`` or an int, passed to psycopg.

    ``None`` (default) never uses server-side prepared statements. That is the
    only setting that works behind pgbouncer or Supavisor in *transaction*
    mode, where consecutive statements may land on different server
    connections and fail with ``prepared statement "_pg3_N" does not exist``.
    The cost is re-planning each query; for the saver's short statements that
    is small. With a direct connection or a session-mode pooler, ``5`` (psycopg's
    default) prepares a query after five uses, and ``0`` prepares every query.
    """

    max_idle: float = 300.0
    """``PG_MAX_IDLE``: seconds an idle connection is kept above ``min_size``.
    Keep it below the idle timeout of any proxy or cloud load balancer."""

    max_lifetime: float = 1800.0
    """``PG_MAX_LIFETIME``: seconds before a connection is replaced, so
    failovers and DNS changes are picked up."""

    connect_timeout: int = 10
    """``PG_CONNECT_TIMEOUT``: libpq ``connect_timeout`` for each attempt."""

    keepalives_idle: int = 30
    """``PG_KEEPALIVES_IDLE``: seconds of silence before TCP keepalive probes."""

    keepalives_interval: int = 10
    """``PG_KEEPALIVES_INTERVAL``: seconds between keepalive probes."""

    keepalives_count: int = 3
    """``PG_KEEPALIVES_COUNT``: unanswered probes before the socket is dropped."""

    setup: bool = True
    """``CHECKPOINTER_SETUP``: run ``saver.setup()`` (idempotent migrations) at
    startup. Set ``false`` when migrations run as a separate deploy step:
    ``setup()`` takes no cross-replica lock."""

    application_name: str = "agent-checkpointer"
    """Shown in ``pg_stat_activity`` so these connections are easy to find."""

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("DATABASE_URL is empty")
        # min_size >= 1: opening waits for min_size connections, and that wait
        # is what makes an unreachable database fail at startup.
        if not 1 <= self.min_size <= self.max_size:
            raise ValueError(
                f"need 1 <= PG_POOL_MIN_SIZE <= PG_POOL_MAX_SIZE, "
                f"got min={self.min_size} max={self.max_size}"
            )
        if self.open_timeout <= 0:
            raise ValueError(f"PG_POOL_OPEN_TIMEOUT must be > 0, got {self.open_timeout}")
        if self.prepare_threshold is not None and self.prepare_threshold < 0:
            raise ValueError(
                f"PG_PREPARE_THRESHOLD must be 'none' or >= 0, got {self.prepare_threshold}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PostgresSettings:
        """Read settings from ``environ`` (default ``os.environ``).

        Raises ``ValueError`` with the variable's name when one is missing or
        malformed, so a misconfigured deployment fails with a readable line.
        """
        env = os.environ if environ is None else environ
        url = env.get("DATABASE_URL", "").strip()
        if not url:
            raise ValueError(
                "DATABASE_URL is not set; point it at PostgreSQL, "
                "e.g. postgresql://user:password@host:5432/dbname"
            )
        defaults = cls(url=url)
        return cls(
            url=url,
            min_size=_int(env, "PG_POOL_MIN_SIZE", defaults.min_size),
            max_size=_int(env, "PG_POOL_MAX_SIZE", defaults.max_size),
            checkout_timeout=_float(env, "PG_POOL_TIMEOUT", defaults.checkout_timeout),
            open_timeout=_float(env, "PG_POOL_OPEN_TIMEOUT", defaults.open_timeout),
            prepare_threshold=_threshold(env, "PG_PREPARE_THRESHOLD"),
            max_idle=_float(env, "PG_MAX_IDLE", defaults.max_idle),
            max_lifetime=_float(env, "PG_MAX_LIFETIME", defaults.max_lifetime),
            connect_timeout=_int(env, "PG_CONNECT_TIMEOUT", defaults.connect_timeout),
            keepalives_idle=_int(env, "PG_KEEPALIVES_IDLE", defaults.keepalives_idle),
            keepalives_interval=_int(env, "PG_KEEPALIVES_INTERVAL", defaults.keepalives_interval),
            keepalives_count=_int(env, "PG_KEEPALIVES_COUNT", defaults.keepalives_count),
            setup=_bool(env, "CHECKPOINTER_SETUP", defaults.setup),
        )

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for every pooled ``AsyncConnection.connect``."""
        return {
            # setup() runs CREATE INDEX CONCURRENTLY, which refuses to run in a
            # transaction block.
            "autocommit": True,
            "row_factory": dict_row,
            "prepare_threshold": self.prepare_threshold,
            "connect_timeout": self.connect_timeout,
            # Cloud databases and NATs drop silent connections; keepalives make
            # the kernel notice instead of a query hanging on a dead socket.
            "keepalives": 1,
            "keepalives_idle": self.keepalives_idle,
            "keepalives_interval": self.keepalives_interval,
            "keepalives_count": self.keepalives_count,
            "application_name": self.application_name,
        }

    def __repr__(self) -> str:
        # The dataclass repr would print the password.
        return (
            f"PostgresSettings(url={redact_url(self.url)!r}, min_size={self.min_size}, "
            f"max_size={self.max_size}, prepare_threshold={self.prepare_threshold}, "
            f"setup={self.setup})"
        )


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None


def _threshold(env: Mapping[str, str], name: str) -> int | None:
    raw = _raw(env, name)
    if raw is None or raw.lower() == "none":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be 'none' or an integer, got {raw!r}") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _raw(env, name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``.

    Handles URL form (``postgresql://u:pw@h/db``, including ``?password=``) and
    ``key=value`` conninfo. Never raises: log lines must not fail.
    """
    if "://" not in url:
        return _KV_PASSWORD.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostinfo = netloc.rpartition("@")
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":***"
            netloc = f"{userinfo}@{hostinfo}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*"
            )
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<unparseable database url>"


def _target(url: str) -> str:
    """``user@host:port/db`` for messages: what we tried to reach, no secrets."""
    try:
        params = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - any parse failure just means "say less"
        return redact_url(url)
    user = params.get("user") or os.environ.get("PGUSER") or "?"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or user
    return f"{user}@{host}:{port}/{dbname}"


def _one_line(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***")
    return " ".join(text.split())


async def _why_unreachable(settings: PostgresSettings) -> str:
    """One direct connection attempt, to report the driver's reason."""
    secret: str | None = None
    try:
        password = conninfo_to_dict(settings.url).get("password")
        secret = str(password) if password else None
        async with asyncio.timeout(max(1.0, min(settings.open_timeout, 5.0))):
            conn = await AsyncConnection.connect(
                settings.url, connect_timeout=max(1, min(settings.connect_timeout, 5))
            )
        await conn.close()
    except TimeoutError:
        return "connection attempt timed out"
    except Exception as exc:  # noqa: BLE001 - the reason is all we want from it
        return _one_line(str(exc) or type(exc).__name__, secret)
    return (
        f"the server accepts connections but the pool could not open "
        f"{settings.min_size} of them (is max_connections exhausted?)"
    )


@asynccontextmanager
async def open_pool(settings: PostgresSettings) -> AsyncIterator[Pool]:
    """Open a connection pool, yield it, close it on exit.

    Waits up to ``settings.open_timeout`` for ``min_size`` connections; if they
    do not arrive, closes the pool (stopping its reconnect workers) and raises
    :class:`DatabaseUnavailable`.
    """
    target = _target(settings.url)
    pool: Pool = AsyncConnectionPool(
        settings.url,
        open=False,
        connection_class=AsyncConnection[DictRow],
        kwargs=settings.connection_kwargs(),
        min_size=settings.min_size,
        max_size=settings.max_size,
        timeout=settings.checkout_timeout,
        max_idle=settings.max_idle,
        max_lifetime=settings.max_lifetime,
        # Catches connections the server or a proxy closed while idle, before
        # a checkpoint write trips over them.
        check=AsyncConnectionPool.check_connection,
        name="checkpointer",
    )
    started = time.perf_counter()
    try:
        await pool.open(wait=True, timeout=settings.open_timeout)
    except PoolTimeout:
        await pool.close()
        reason = await _why_unreachable(settings)
        raise DatabaseUnavailable(
            f"database {target} unavailable: no connection within "
            f"{settings.open_timeout:g}s ({reason})"
        ) from None
    except BaseException:
        await pool.close()
        raise
    logger.info(
        "opened PostgreSQL pool to %s (min=%d max=%d prepare_threshold=%s) in %.2fs",
        target,
        settings.min_size,
        settings.max_size,
        settings.prepare_threshold,
        time.perf_counter() - started,
    )
    try:
        yield pool
    finally:
        await pool.close()
        logger.info("closed PostgreSQL pool to %s", target)


# Arbitrary but fixed: every process migrating this schema must use the same key.
SETUP_LOCK_KEY = 0x6167656E745347  # b"agentSG" as a bigint
SETUP_LOCK_POLL = 0.2
SETUP_LOCK_WAIT = 60.0


async def open_saver(pool: Pool, *, setup: bool) -> AsyncPostgresSaver:
    """Build an ``AsyncPostgresSaver`` on ``pool``; run migrations if ``setup``.

    Call it on the event loop that will use the saver: the saver captures the
    running loop (and creates its lock) when it is constructed.

    ``setup()`` itself takes no lock, and replicas starting together on a fresh
    database fail with ``UniqueViolation``. So it runs while this process holds
    a session advisory lock on a separate autocommit connection; the others
    poll for the lock and then find the migrations applied. Polling
    (``pg_try_advisory_lock``) rather than blocking, and no open transaction,
    because ``CREATE INDEX CONCURRENTLY`` in ``setup()`` waits for every
    session holding a snapshot, including a blocked lock waiter.

    Behind a transaction-mode pooler a session lock can outlive its client, so
    waiting is capped at ``SETUP_LOCK_WAIT`` seconds, after which setup runs
    anyway. Better there: ``CHECKPOINTER_SETUP=false`` and migrate over a
    direct connection.
    """
    # Lock-free on a pool: one connection per operation (langgraph issue #7259).
    saver = PooledPostgresSaver(pool)
    if not setup:
        logger.info("checkpointer setup() skipped (CHECKPOINTER_SETUP=false)")
        return saver
    conninfo, kwargs = pool.conninfo, pool.kwargs
    if not isinstance(conninfo, str) or not isinstance(kwargs, dict):
        raise TypeError("open_saver(setup=True) needs a pool with static conninfo and kwargs")
    started = time.perf_counter()
    async with await AsyncConnection.connect(conninfo, **{**kwargs, "autocommit": True}) as lock:
        locked = await _try_lock(lock)
        if not locked:
            logger.info("checkpointer setup(): waiting for another process to finish it")
            deadline = time.monotonic() + SETUP_LOCK_WAIT
            while not locked and time.monotonic() < deadline:
                await asyncio.sleep(SETUP_LOCK_POLL)
                locked = await _try_lock(lock)
            if not locked:
                logger.warning(
                    "checkpointer setup(): lock still held after %.0fs; running setup anyway",
                    SETUP_LOCK_WAIT,
                )
        await saver.setup()
        if locked:
            await lock.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_KEY,))
    logger.info("checkpointer setup() done in %.2fs", time.perf_counter() - started)
    return saver


async def _try_lock(conn: AsyncConnection[Any]) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", (SETUP_LOCK_KEY,))
    row = await cur.fetchone()
    if row is None:
        return False
    return bool(row["locked"] if isinstance(row, dict) else row[0])


# Pools serving postgres_checkpointer(), with the loop each belongs to, so
# the HTTP app can run its readiness check through the very same pool.
_SERVING: list[tuple[asyncio.AbstractEventLoop, Pool]] = []


def serving_pool() -> Pool | None:
    """The pool behind the running loop's :func:`postgres_checkpointer`, if any."""
    loop = asyncio.get_running_loop()
    for owner, pool in reversed(_SERVING):
        if owner is loop:
            return pool
    return None


async def ping(pool: Pool) -> None:
    """Run ``SELECT 1`` through ``pool``. Bound it with ``asyncio.timeout``."""
    async with pool.connection() as conn:
        await conn.execute("SELECT 1")


@asynccontextmanager
async def postgres_checkpointer(
    settings: PostgresSettings | None = None,
) -> AsyncIterator[AsyncPostgresSaver]:
    """Pool, then saver; the pool closes when the context exits.

    This is the object ``langgraph.postgres.json`` names. The server calls it
    with no arguments, so settings come from the environment.
    """
    settings = settings or PostgresSettings.from_env()
    async with open_pool(settings) as pool:
        saver = await open_saver(pool, setup=settings.setup)
        entry = (asyncio.get_running_loop(), pool)
        _SERVING.append(entry)
        try:
            yield saver
        finally:
            _SERVING.remove(entry)


if __name__ != "agent.checkpointer":
    # langgraph_api loads "./src/agent/checkpointer.py" by file path under a
    # private module name. Rebind the public names to the package module so a
    # process has one DatabaseUnavailable class and one _SERVING registry.
    from agent.checkpointer import *  # noqa: F403
