"""Run registry: every in-flight run is one asyncio task, and shutdown drains them first.

A run moves ``pending -> running -> success | error | timeout | interrupted``.
Each change goes to a *status sink* (an async callable; the server persists to
Postgres). A failing sink is logged and ignored: losing a status row must never
kill a run.

Shutdown (:meth:`RunRegistry.drain`) works against ONE deadline:

1. refuse new runs (:class:`Draining`, which the server maps to 503);
2. let in-flight runs finish during a grace window;
3. cancel the rest and wait for langgraph's unwind, so the final checkpoint
   write lands while the pool is still open;
4. mark runs that still have not stopped ``interrupted`` (a run that finished
   during the drain keeps its real status) and name each straggler in the log;
5. stop writing statuses, then return, so the caller may close the pool.

Runs that swallow cancellation cannot stretch the deadline; they are abandoned,
and the gated saver (:mod:`agent.saver_gate`) refuses their later writes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "Draining",
    "Run",
    "RunRecord",
    "RunRegistry",
    "RunStatus",
    "ShutdownPolicy",
    "StatusSink",
    "ThreadBusy",
]

log = logging.getLogger(__name__)

RunStatus = Literal["pending", "running", "success", "error", "timeout", "interrupted"]
MultitaskStrategy = Literal["reject", "interrupt", "enqueue"]
TERMINAL: frozenset[str] = frozenset({"success", "error", "timeout", "interrupted"})
_RECANCEL_S = 0.25
_RECANCEL_MAX = 8


class Draining(RuntimeError):
    """The server is shutting down and admits no new runs."""


class ThreadBusy(RuntimeError):
    """A run is already active on the thread and the caller asked to reject."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ShutdownPolicy:
    """One shutdown deadline, split into a grace window and a cancel window.

    ``reserve`` is kept back from the drain for what must happen after it:
    writing the last statuses and closing the pool.
    """

    timeout: float = 10.0
    grace_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"SHUTDOWN_TIMEOUT must be positive, got {self.timeout}")
        if not 0 <= self.grace_fraction <= 1:
            raise ValueError(
                f"SHUTDOWN_GRACE_FRACTION must be between 0 and 1, got {self.grace_fraction}"
            )

    @classmethod
    def from_env(cls) -> ShutdownPolicy:
        """``SHUTDOWN_TIMEOUT`` (seconds, default 10) and ``SHUTDOWN_GRACE_FRACTION``
        (share of the drain that runs may use to finish before being cancelled, 0.5)."""

        def number(name: str, default: str) -> float:
            raw = os.environ.get(name, "").strip() or default
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {raw!r}") from None

        return cls(
            timeout=number("SHUTDOWN_TIMEOUT", "10"),
            grace_fraction=number("SHUTDOWN_GRACE_FRACTION", "0.5"),
        )

    @property
    def reserve(self) -> float:
        return min(1.0, self.timeout * 0.1)

    @property
    def drain_budget(self) -> float:
        return self.timeout - self.reserve

    @property
    def grace(self) -> float:
        return self.drain_budget * self.grace_fraction


@dataclass
class RunRecord:
    """What is persisted about a run; field names follow the LangGraph API's ``Run``."""

    run_id: str
    thread_id: str
    assistant_id: str
    status: RunStatus = "pending"
    multitask_strategy: str = "enqueue"
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)

    def as_api(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "thread_id": self.thread_id,
            "assistant_id": self.assistant_id,
            "status": self.status,
            "multitask_strategy": self.multitask_strategy,
            "metadata": self.metadata,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "kwargs": {},
            "error": self.error,
        }


StatusSink = Callable[[RunRecord], Awaitable[None]]
Work = Callable[["Run"], Awaitable[None]]


class Run:
    """One run: its record, its task, and the events it published (for SSE/wait)."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.task: asyncio.Task[None] | None = None
        # langgraph's loop hands back its checkpoint-writing unwind on a second
        # cancellation (see _unwind_tasks); the drain waits for these too.
        self.unwinds: list[asyncio.Future[Any]] = []
        self.cancel_reason: str | None = None
        self.cancel_seen = False
        self.recancels = 0
        self._events: list[tuple[str, Any]] = []
        self._wake = asyncio.Event()
        self._closed = False

    @classmethod
    def finished(cls, record: RunRecord) -> Run:
        """A run that ended earlier (e.g. in a previous process): no events, done."""
        run = cls(record)
        run._closed = True
        return run

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def done(self) -> bool:
        return self._closed

    def publish(self, event: str, data: Any) -> None:
        self._events.append((event, data))
        self._notify()

    def _notify(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    def _close(self) -> None:
        self._closed = True
        self._notify()

    async def follow(self) -> AsyncIterator[tuple[str, Any]]:
        """Every event from the first; ends when the run has finished."""
        sent = 0
        while True:
            wake = self._wake
            while sent < len(self._events):
                yield self._events[sent]
                sent += 1
            if self._closed:
                return
            await wake.wait()

    async def wait(self) -> None:
        """Wait for the run to end without cancelling it if *we* are cancelled."""
        while not self._closed:
            await self._wake.wait()

    def last(self, event: str) -> Any:
        for name, data in reversed(self._events):
            if name == event:
                return data
        return None


def _unwind_tasks(exc: asyncio.CancelledError) -> list[asyncio.Future[Any]]:
    """Unwind tasks that langgraph attached to a CancelledError.

    ``AsyncPregelLoop.__aexit__`` runs its exit stack (which does the final
    ``checkpointer.aput``) in a separate task; if the await on that task is
    cancelled, it appends the task to ``exc.args`` so callers can await it
    before closing the database.
    """
    return [arg for arg in exc.args if isinstance(arg, asyncio.Future)]


class RunRegistry:
    """Starts, tracks, cancels and drains runs."""

    def __init__(self, sink: StatusSink, policy: ShutdownPolicy | None = None) -> None:
        self._sink = sink
        self.policy = policy or ShutdownPolicy()
        self._runs: dict[str, Run] = {}
        self._latest_on_thread: dict[str, Run] = {}
        self._draining = False
        self._sink_open = True
        self._drain_task: asyncio.Task[None] | None = None
        self._late_writes: set[asyncio.Task[None]] = set()

    # -- lookups ----------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    def get(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def active_on(self, thread_id: str) -> Run | None:
        run = self._latest_on_thread.get(thread_id)
        return run if run is not None and not run.done else None

    def in_flight(self) -> list[Run]:
        return list(self._runs.values())

    # -- starting and cancelling ------------------------------------------------------

    def start(
        self, record: RunRecord, work: Work, *, strategy: MultitaskStrategy = "enqueue"
    ) -> Run:
        """Admit a run and start its task. Raises Draining or ThreadBusy."""
        if self._draining:
            raise Draining("the server is shutting down; retry against another instance")
        previous = self.active_on(record.thread_id)
        if previous is not None and strategy == "reject":
            raise ThreadBusy(
                f"thread {record.thread_id} already has run {previous.run_id} in progress"
            )
        if previous is not None and strategy == "interrupt":
            self.cancel(previous.run_id, f"interrupted by run {record.run_id}")
        record.multitask_strategy = strategy
        run = Run(record)
        self._runs[run.run_id] = run
        self._latest_on_thread[record.thread_id] = run
        run.task = asyncio.create_task(self._execute(run, work, previous), name=f"run {run.run_id}")
        run.task.add_done_callback(functools.partial(self._on_done, run))
        return run

    def cancel(self, run_id: str, reason: str = "cancelled by request") -> bool:
        run = self._runs.get(run_id)
        if run is None or run.task is None or run.task.done():
            return False
        run.cancel_reason = run.cancel_reason or reason
        run.task.cancel(reason)
        asyncio.get_running_loop().call_later(_RECANCEL_S, self._recancel, run)
        return True

    def _recancel(self, run: Run) -> None:
        """Cancel again until the run has seen its CancelledError.

        Libraries can lose a cancellation: on Python 3.11, ``asyncio.wait_for``
        (used by psycopg while it waits on its socket) returns normally when the
        awaited result and the cancellation arrive together. The run would then
        keep going as if never cancelled.
        """
        task = run.task
        if task is None or task.done() or run.cancel_seen or run.recancels >= _RECANCEL_MAX:
            return
        run.recancels += 1
        if run.recancels == 1:
            log.info("run %s still running after cancel; cancelling again", run.run_id)
        task.cancel(run.cancel_reason)
        asyncio.get_running_loop().call_later(_RECANCEL_S, self._recancel, run)

    # -- the run task -----------------------------------------------------------------

    async def _execute(self, run: Run, work: Work, previous: Run | None) -> None:
        try:
            await self._persist(run)
            if previous is not None:
                # enqueue/interrupt: one run at a time per thread, so the next
                # run starts from the previous run's last checkpoint.
                await previous.wait()
            await self._set(run, "running")
            await work(run)
        except asyncio.CancelledError as exc:
            run.cancel_seen = True
            run.unwinds.extend(_unwind_tasks(exc))
            if run.unwinds:
                await asyncio.wait(run.unwinds)
            await self._set(run, "interrupted", run.cancel_reason or "cancelled")
            raise
        except TimeoutError as exc:
            await self._set(run, "timeout", str(exc) or "run timed out")
        except Exception as exc:  # noqa: BLE001 - the run boundary: record, don't crash
            log.warning("run %s failed: %s: %s", run.run_id, type(exc).__name__, exc)
            await self._set(run, "error", f"{type(exc).__name__}: {exc}")
        else:
            await self._set(run, "success")

    def _on_done(self, run: Run, _task: asyncio.Task[None]) -> None:
        # A done-callback, not a ``finally``: a task cancelled before its first
        # step never runs its body, yet must still release waiters and its slot.
        self._runs.pop(run.run_id, None)
        if self._latest_on_thread.get(run.record.thread_id) is run:
            del self._latest_on_thread[run.record.thread_id]
        if run.record.status not in TERMINAL:
            run.record.status = "interrupted"
            run.record.error = run.cancel_reason or "cancelled"
            write = asyncio.create_task(self._persist(run))
            self._late_writes.add(write)
            write.add_done_callback(self._late_writes.discard)
        run._close()

    async def _set(self, run: Run, status: RunStatus, error: str | None = None) -> None:
        run.record.status = status
        run.record.error = error
        run.record.updated_at = _now()
        await self._persist(run)

    async def _persist(self, run: Run) -> None:
        record = run.record
        if not self._sink_open:
            # The drain has ended and the pool is closing: writing now would
            # reach a closed pool, so say what was lost instead.
            log.warning(
                "run %s reached status %r after shutdown; not persisted (database closing)",
                record.run_id,
                record.status,
            )
            return
        try:
            await self._sink(record)
        except Exception as exc:  # noqa: BLE001 - a lost status row must not kill the run
            log.error(  # noqa: TRY400 - one clear line; a traceback would bury it
                "failed to persist status %r of run %s (thread %s): %s: %s",
                record.status,
                record.run_id,
                record.thread_id,
                type(exc).__name__,
                exc,
            )

    # -- shutdown ---------------------------------------------------------------------

    def begin_drain(self) -> asyncio.Task[None]:
        """Start the drain (idempotent): e.g. from a signal handler, before uvicorn
        waits for open connections, so the deadline counts from the signal."""
        self._draining = True
        if self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain(), name="drain runs")
        return self._drain_task

    async def drain(self) -> None:
        """Drain runs; returns only when no run will write statuses or checkpoints
        through this registry any more. Shielded: a second cancellation (e.g. a
        second signal) is held back until the bounded drain has finished."""
        task = self.begin_drain()
        cancelled = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    break
                cancelled = True
                log.warning("shutdown already in progress; still draining runs")
        if cancelled:
            raise asyncio.CancelledError
        task.result()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.drain_budget
        runs = [run for run in self._runs.values() if run.task is not None]
        log.info(
            "shutdown: draining %d run(s); grace %.1fs, deadline %.1fs",
            len(runs),
            self.policy.grace,
            self.policy.drain_budget,
        )
        if runs:
            await asyncio.wait([self._task(r) for r in runs], timeout=self.policy.grace)
        remaining = [run for run in runs if not self._task(run).done()]
        for run in remaining:
            self.cancel(run.run_id, "server shutting down")
        if remaining:
            log.info("shutdown: cancelled %d run(s) still in progress", len(remaining))
            await asyncio.wait(
                [self._task(r) for r in remaining], timeout=max(0.0, deadline - loop.time())
            )
        unwinds = [u for run in remaining for u in run.unwinds if not u.done()]
        if unwinds:
            await asyncio.wait(unwinds, timeout=max(0.0, deadline - loop.time()))
        unfinished = []
        abandoned = 0
        for run in remaining:
            if not self._task(run).done() or any(not u.done() for u in run.unwinds):
                abandoned += 1
                log.error(
                    "shutdown: run %s (thread %s) did not stop by the deadline; abandoning it, "
                    "its further checkpoint writes will be refused",
                    run.run_id,
                    run.record.thread_id,
                )
            if run.record.status not in TERMINAL:
                unfinished.append(run)
        if unfinished:
            # Bounded by half the reserve: the pool still has to close after us.
            reason = "server shut down before the run finished"
            try:
                async with asyncio.timeout(self.policy.reserve / 2):
                    await asyncio.gather(*(self._set(r, "interrupted", reason) for r in unfinished))
            except TimeoutError:
                log.error(  # noqa: TRY400 - one line, no traceback
                    "shutdown: could not record %d interrupted run(s) in time", len(unfinished)
                )
        if self._late_writes:
            await asyncio.wait(self._late_writes, timeout=self.policy.reserve / 2)
        self._sink_open = False
        log.info(
            "shutdown: drain finished in %.2fs: %d run(s) completed, %d cancelled, %d abandoned",
            self.policy.drain_budget - (deadline - loop.time()),
            len(runs) - len(remaining),
            len(remaining) - abandoned,
            abandoned,
        )

    @staticmethod
    def _task(run: Run) -> asyncio.Task[None]:
        assert run.task is not None
        return run.task
