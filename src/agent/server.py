"""Self-hosted server speaking enough of the LangGraph API for ``langgraph_sdk``.

Resources live on one exit stack, opened in this order and closed in reverse:
pool -> saver (behind a gate) -> metadata tables -> run registry. Closing the
stack therefore drains runs first, then shuts the saver's gate, then closes the
pool: no checkpoint or status write can reach a closed pool.

Routes (assistant id ``agent``, or its LangGraph-API UUID):

- ``GET /ok``, ``GET /ready`` (checks the database; 503 while draining)
- ``POST /assistants/search``, ``GET /assistants/{id}``
- ``POST /threads``, ``GET /threads/{id}``, ``GET /threads/{id}/state[/{checkpoint_id}]``,
  ``POST /threads/{id}/history``
- ``POST /threads/{id}/runs`` (+ ``/wait``, ``/stream``), ``GET /threads/{id}/runs``,
  ``GET /threads/{id}/runs/{run_id}`` (+ ``/join``, ``/stream``),
  ``POST /threads/{id}/runs/{run_id}/cancel``
- stateless ``POST /runs/wait`` and ``POST /runs/stream``

Errors are JSON ``{"detail": "..."}``: 401, 404, 409, 422, 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, Durability, StateSnapshot
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from agent.checkpointer import Pool, PostgresSettings, open_pool, open_saver, ping
from agent.context import Context
from agent.graph import AgentGraph, build_graph
from agent.runs import (
    Draining,
    MultitaskStrategy,
    Run,
    RunRecord,
    RunRegistry,
    ShutdownPolicy,
    ThreadBusy,
)
from agent.saver_gate import GatedSaver
from agent.sse import dumps, frame
from agent.store import MetadataStore

__all__ = ["Services", "app", "create_app", "open_services"]

log = logging.getLogger(__name__)

GRAPH_ID = "agent"
# The id the LangGraph API gives the default assistant of a graph, so ids taken
# from ``assistants.search`` on either server work on both.
ASSISTANT_UUID = str(uuid.uuid5(uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8"), GRAPH_ID))
_STARTED = datetime.now(UTC).isoformat()
_HEARTBEAT_S = 5.0
# Passed straight to ``graph.astream``; "messages-tuple" becomes "messages".
_STREAM_MODES = {"values", "updates", "messages-tuple", "custom", "debug", "tasks", "checkpoints"}
_STRATEGIES = {"reject", "interrupt", "enqueue"}


class ApiError(HTTPException):
    """An error with a JSON ``detail`` for the client."""


@dataclass
class Services:
    pool: Pool
    store: MetadataStore
    registry: RunRegistry
    graph: AgentGraph
    stateless_graph: AgentGraph


@asynccontextmanager
async def open_services(policy: ShutdownPolicy | None = None) -> AsyncIterator[Services]:
    """Open everything the routes need; on exit drain runs, then close the rest."""
    policy = policy or ShutdownPolicy.from_env()
    settings = PostgresSettings.from_env()
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(open_pool(settings))
        saver = await open_saver(pool, setup=settings.setup)
        store = MetadataStore(pool)
        await store.setup()
        await store.recover()
        gate = GatedSaver(saver)
        stack.push_async_callback(gate.close, policy.reserve / 2)
        registry = RunRegistry(store.save_run, policy)
        stack.push_async_callback(registry.drain)
        yield Services(pool, store, registry, build_graph(gate), build_graph(None))


# -- helpers ----------------------------------------------------------------------------


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(data), status, headers, media_type="application/json")


def services_of(request: Request) -> Services:
    return cast(Services, request.app.state.services)


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(422, "request body must be a JSON object")
    return body


def assistant() -> dict[str, Any]:
    return {
        "assistant_id": ASSISTANT_UUID,
        "graph_id": GRAPH_ID,
        "name": GRAPH_ID,
        "description": None,
        "config": {},
        "context": {},
        "metadata": {"created_by": "system"},
        "version": 1,
        "created_at": _STARTED,
        "updated_at": _STARTED,
    }


def check_assistant(assistant_id: Any) -> None:
    if assistant_id not in (GRAPH_ID, ASSISTANT_UUID):
        raise ApiError(404, f"assistant {assistant_id!r} not found; this server serves 'agent'")


def checkpoint_of(config: RunnableConfig | None) -> dict[str, Any] | None:
    configurable = (config or {}).get("configurable") or {}
    if not configurable.get("checkpoint_id"):
        return None
    return {
        "thread_id": configurable.get("thread_id"),
        "checkpoint_ns": configurable.get("checkpoint_ns", ""),
        "checkpoint_id": configurable["checkpoint_id"],
        "checkpoint_map": configurable.get("checkpoint_map"),
    }


def thread_state(snapshot: StateSnapshot) -> dict[str, Any]:
    """A ``StateSnapshot`` as the LangGraph API's ``ThreadState``."""
    return {
        "values": snapshot.values,
        "next": list(snapshot.next),
        "tasks": [
            {
                "id": task.id,
                "name": task.name,
                "error": str(task.error) if task.error else None,
                "interrupts": list(task.interrupts),
                "checkpoint": None,
                "state": None,
                "result": getattr(task, "result", None),
            }
            for task in snapshot.tasks
        ],
        "metadata": snapshot.metadata,
        "created_at": snapshot.created_at,
        "checkpoint": checkpoint_of(snapshot.config),
        "parent_checkpoint": checkpoint_of(snapshot.parent_config),
        "interrupts": list(getattr(snapshot, "interrupts", ())),
        "checkpoint_id": (checkpoint_of(snapshot.config) or {}).get("checkpoint_id"),
    }


async def load_thread(services: Services, thread_id: str) -> dict[str, Any]:
    row = await services.store.get_thread(thread_id)
    if row is None:
        raise ApiError(404, f"thread {thread_id} not found")
    return row


async def thread_view(services: Services, row: dict[str, Any]) -> dict[str, Any]:
    thread_id = row["thread_id"]
    snapshot = await services.graph.aget_state({"configurable": {"thread_id": thread_id}})
    if services.registry.active_on(thread_id) is not None:
        status = "busy"
    elif getattr(snapshot, "interrupts", ()):
        status = "interrupted"
    elif await services.store.last_run_status(thread_id) == "error":
        status = "error"
    else:
        status = "idle"
    return {
        "thread_id": thread_id,
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "metadata": row["metadata"],
        "status": status,
        "config": {},
        "values": snapshot.values,
        "interrupts": {},
    }


def error_of(record: RunRecord) -> dict[str, str]:
    kind, _, message = (record.error or "").partition(": ")
    if record.status == "interrupted":
        return {"error": "UserInterrupt", "message": record.error or "run was interrupted"}
    if record.status == "timeout":
        return {"error": "TimeoutError", "message": record.error or "run timed out"}
    return {"error": kind or "Error", "message": message or kind}


# -- runs -------------------------------------------------------------------------------


@dataclass
class RunRequest:
    thread_id: str
    stateless: bool
    payload: dict[str, Any]
    modes: list[str]


def parse_stream_modes(value: Any, default: list[str]) -> list[str]:
    if value is None:
        return default
    modes = [value] if isinstance(value, str) else value
    if not isinstance(modes, list) or not all(isinstance(m, str) for m in modes):
        raise ApiError(422, "stream_mode must be a string or a list of strings")
    unknown = [m for m in modes if m not in _STREAM_MODES]
    if unknown:
        raise ApiError(
            422,
            f"unsupported stream_mode {unknown}; supported: {sorted(_STREAM_MODES)} "
            "(use 'messages-tuple' for token streaming)",
        )
    return modes or default


def build_work(services: Services, req: RunRequest) -> Callable[[Run], Awaitable[None]]:
    """Validate everything the graph needs *before* the run is admitted (so bad input
    is a 422, never a failed run) and return the coroutine that runs it."""
    payload = req.payload
    check_assistant(payload.get("assistant_id"))
    command = payload.get("command")
    graph_input: Any = payload.get("input")
    if command is not None:
        if not isinstance(command, dict):
            raise ApiError(422, "command must be an object")
        try:
            graph_input = Command(**command)
        except TypeError as exc:
            raise ApiError(422, f"invalid command: {exc}") from None
    elif not isinstance(graph_input, dict):
        raise ApiError(422, 'input is required and must be an object, e.g. {"messages": [...]}')
    context_raw = payload.get("context") or {}
    if not isinstance(context_raw, dict):
        raise ApiError(422, "context must be an object")
    try:
        context = Context(**context_raw)
    except (TypeError, ValueError) as exc:
        raise ApiError(422, f"invalid context: {exc}") from None
    config_raw = payload.get("config") or {}
    if not isinstance(config_raw, dict):
        raise ApiError(422, "config must be an object")
    durability = payload.get("durability") or "async"
    if durability not in ("sync", "async", "exit"):
        raise ApiError(422, "durability must be one of sync, async, exit")
    durability_mode = cast(Durability, durability)
    graph = services.stateless_graph if req.stateless else services.graph
    graph_modes = sorted({"messages" if m == "messages-tuple" else m for m in req.modes})
    subgraphs = bool(payload.get("stream_subgraphs"))

    async def work(run: Run) -> None:
        config = cast(RunnableConfig, dict(config_raw))
        config["configurable"] = {
            **(config_raw.get("configurable") or {}),
            "thread_id": req.thread_id,
            "run_id": run.run_id,
        }
        config["metadata"] = {**(config_raw.get("metadata") or {}), "run_id": run.run_id}
        run.publish("metadata", {"run_id": run.run_id, "attempt": 1})
        async for part in graph.astream(
            graph_input,
            config,
            context=context,
            stream_mode=graph_modes,  # type: ignore[arg-type]
            subgraphs=subgraphs,
            durability=durability_mode,
            interrupt_before=payload.get("interrupt_before"),
            interrupt_after=payload.get("interrupt_after"),
        ):
            ns: tuple[str, ...] = ()
            if subgraphs:
                ns, mode, chunk = cast(tuple[tuple[str, ...], str, Any], part)
            else:
                mode, chunk = cast(tuple[str, Any], part)
            run.publish(f"{mode}|{'|'.join(ns)}" if ns else mode, chunk)

    return work


async def start_run(
    request: Request, *, stateless: bool, modes: list[str] | None
) -> tuple[Run, dict[str, Any]]:
    services = services_of(request)
    payload = await json_body(request)
    thread_id = str(uuid.uuid4()) if stateless else request.path_params["thread_id"]
    strategy = payload.get("multitask_strategy") or "enqueue"
    if strategy not in _STRATEGIES:
        raise ApiError(422, f"multitask_strategy must be one of {sorted(_STRATEGIES)}")
    metadata = payload.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ApiError(422, "metadata must be an object")
    stream_modes = modes or parse_stream_modes(payload.get("stream_mode"), ["values"])
    work = build_work(services, RunRequest(thread_id, stateless, payload, stream_modes))
    # Everything is validated: only now touch the database.
    if not stateless:
        if await services.store.get_thread(thread_id) is None:
            if payload.get("if_not_exists") != "create":
                raise ApiError(404, f"thread {thread_id} not found")
            await services.store.create_thread(thread_id, {"graph_id": GRAPH_ID})
        await services.store.touch_thread(thread_id)
    record = RunRecord(
        run_id=str(uuid.uuid4()),
        thread_id=thread_id,
        assistant_id=ASSISTANT_UUID,
        metadata=metadata,
    )
    try:
        run = services.registry.start(record, work, strategy=cast(MultitaskStrategy, strategy))
    except ThreadBusy as exc:
        raise ApiError(409, str(exc)) from None
    return run, payload


def run_headers(run: Run) -> dict[str, str]:
    # Content-Location lets the SDK's on_run_created callback find the run. No
    # Location header: that would make the SDK reconnect on a dropped stream.
    return {"Content-Location": f"/threads/{run.record.thread_id}/runs/{run.run_id}"}


async def final_values(services: Services, run: Run, stateless: bool) -> Any:
    if run.record.status in ("error", "timeout", "interrupted"):
        return {"__error__": error_of(run.record)}
    values = run.last("values")
    if values is None and not stateless:
        config: RunnableConfig = {"configurable": {"thread_id": run.record.thread_id}}
        values = (await services.graph.aget_state(config)).values
    return values if values is not None else {}


def wait_response(services: Services, run: Run, stateless: bool = False) -> Response:
    async def body() -> AsyncIterator[bytes]:
        # Whitespace keeps proxies from timing out a long run; JSON parsers skip it.
        while True:
            try:
                async with asyncio.timeout(_HEARTBEAT_S):  # not wait_for: see saver_gate
                    await run.wait()
                break
            except TimeoutError:
                yield b"\n"
        yield dumps(await final_values(services, run, stateless))

    return StreamingResponse(body(), media_type="application/json", headers=run_headers(run))


def stream_response(services: Services, run: Run, *, cancel_on_disconnect: bool) -> Response:
    async def body() -> AsyncIterator[bytes]:
        finished = False
        try:
            async for event, data in run.follow():
                yield frame(event, data)
            finished = True
            if run.record.status in ("error", "timeout", "interrupted"):
                yield frame("error", error_of(run.record))
            else:
                # The SDK reads `end` (or `error`) as "the run is over", so a cleanly
                # closed stream is not mistaken for a dropped connection.
                yield frame("end", None)
        finally:
            if not finished and cancel_on_disconnect:
                services.registry.cancel(run.run_id, "client disconnected")

    return StreamingResponse(body(), media_type="text/event-stream", headers=run_headers(run))


# -- route handlers ---------------------------------------------------------------------


async def ok(request: Request) -> Response:
    return json_response({"ok": True})


async def ready(request: Request) -> Response:
    services = services_of(request)
    if services.registry.draining:
        return json_response({"detail": "shutting down"}, 503, {"Retry-After": "5"})
    try:
        async with asyncio.timeout(request.app.state.ready_timeout):
            await ping(services.pool)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        log.warning("readiness check failed: %s: %s", type(exc).__name__, exc)
        return json_response({"detail": "database unavailable"}, 503, {"Retry-After": "5"})
    return json_response({"ok": True, "database": "ok"})


async def search_assistants(request: Request) -> Response:
    body = await json_body(request)
    graph_id = body.get("graph_id")
    matches = graph_id in (None, GRAPH_ID) and not body.get("offset")
    return json_response([assistant()] if matches else [])


async def get_assistant(request: Request) -> Response:
    check_assistant(request.path_params["assistant_id"])
    return json_response(assistant())


async def create_thread(request: Request) -> Response:
    services = services_of(request)
    body = await json_body(request)
    thread_id = str(body.get("thread_id") or uuid.uuid4())
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ApiError(422, "metadata must be an object")
    row, created = await services.store.create_thread(thread_id, metadata)
    if not created and body.get("if_exists", "raise") != "do_nothing":
        raise ApiError(409, f"thread {thread_id} already exists")
    return json_response(await thread_view(services, row))


async def get_thread(request: Request) -> Response:
    services = services_of(request)
    row = await load_thread(services, request.path_params["thread_id"])
    return json_response(await thread_view(services, row))


async def get_state(request: Request) -> Response:
    services = services_of(request)
    thread_id = request.path_params["thread_id"]
    await load_thread(services, thread_id)
    configurable = {"thread_id": thread_id}
    if checkpoint_id := request.path_params.get("checkpoint_id"):
        configurable["checkpoint_id"] = checkpoint_id
    snapshot = await services.graph.aget_state({"configurable": configurable})
    if checkpoint_id and snapshot.config.get("configurable", {}).get("checkpoint_id") is None:
        raise ApiError(404, f"checkpoint {checkpoint_id} not found on thread {thread_id}")
    return json_response(thread_state(snapshot))


async def get_history(request: Request) -> Response:
    services = services_of(request)
    thread_id = request.path_params["thread_id"]
    await load_thread(services, thread_id)
    body = await json_body(request)
    limit = body.get("limit", 10)
    if not isinstance(limit, int) or limit < 1:
        raise ApiError(422, "limit must be a positive integer")
    before = body.get("before")
    before_config: RunnableConfig | None = None
    if isinstance(before, dict) and before.get("checkpoint_id"):
        before_config = {"configurable": {**before, "thread_id": thread_id}}
    states = [
        thread_state(snapshot)
        async for snapshot in services.graph.aget_state_history(
            {"configurable": {"thread_id": thread_id}},
            filter=body.get("metadata") or None,
            before=before_config,
            limit=limit,
        )
    ]
    return json_response(states)


async def create_run(request: Request) -> Response:
    run, _payload = await start_run(request, stateless=False, modes=None)
    return json_response(run.record.as_api(), headers=run_headers(run))


async def wait_run(request: Request) -> Response:
    stateless = "thread_id" not in request.path_params
    run, _payload = await start_run(request, stateless=stateless, modes=["values"])
    return wait_response(services_of(request), run, stateless)


async def stream_run(request: Request) -> Response:
    stateless = "thread_id" not in request.path_params
    run, payload = await start_run(request, stateless=stateless, modes=None)
    # Like the LangGraph API: a stateless run has no one left to read it.
    default = "cancel" if stateless else "continue"
    cancel = (payload.get("on_disconnect") or default) == "cancel"
    return stream_response(services_of(request), run, cancel_on_disconnect=cancel)


async def find_run(request: Request) -> tuple[Services, RunRecord, Run | None]:
    services = services_of(request)
    thread_id = request.path_params["thread_id"]
    run_id = request.path_params["run_id"]
    live = services.registry.get(run_id)
    if live is not None and live.record.thread_id == thread_id:
        return services, live.record, live
    record = await services.store.get_run(thread_id, run_id)
    if record is None:
        raise ApiError(404, f"run {run_id} not found on thread {thread_id}")
    return services, record, None


async def get_run(request: Request) -> Response:
    _services, record, _live = await find_run(request)
    return json_response(record.as_api())


async def list_runs(request: Request) -> Response:
    services = services_of(request)
    thread_id = request.path_params["thread_id"]
    await load_thread(services, thread_id)
    try:
        limit = int(request.query_params.get("limit", 10))
        offset = int(request.query_params.get("offset", 0))
    except ValueError:
        raise ApiError(422, "limit and offset must be integers") from None
    records = await services.store.list_runs(
        thread_id, limit=limit, offset=offset, status=request.query_params.get("status")
    )
    # In-flight runs: the registry's copy is the freshest.
    live = [services.registry.get(record.run_id) for record in records]
    fresh = [run.record if run else record for run, record in zip(live, records, strict=True)]
    return json_response([record.as_api() for record in fresh])


async def join_run(request: Request) -> Response:
    services, record, live = await find_run(request)
    if live is not None:
        return wait_response(services, live)
    return json_response(await final_values(services, Run.finished(record), stateless=False))


async def join_stream(request: Request) -> Response:
    services, record, live = await find_run(request)
    # A finished run's stream carries only its final error, if any.
    run = live or Run.finished(record)
    return stream_response(services, run, cancel_on_disconnect=False)


async def cancel_run(request: Request) -> Response:
    services, _record, live = await find_run(request)
    if live is not None:
        services.registry.cancel(live.run_id, "cancelled by request")
        if request.query_params.get("wait") in ("1", "true", "yes"):
            return wait_response(services, live)
    return Response(status_code=202)


# -- app --------------------------------------------------------------------------------


class BearerAuth:
    """Optional shared-token auth (``AGENT_API_TOKEN``); ``/ok`` stays open.

    Accepts ``Authorization: Bearer <token>`` and the SDK's ``x-api-key: <token>``
    (``get_client(url=..., api_key=token)``).
    """

    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app = app
        self.token = (
            token if token is not None else os.environ.get("AGENT_API_TOKEN", "")
        ).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.token or scope["path"] == "/ok":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        presented = headers.get(b"x-api-key", b"")
        authorization = headers.get(b"authorization", b"")
        if authorization[:7].lower() == b"bearer ":
            presented = authorization[7:].strip()
        if not hmac.compare_digest(presented, self.token):
            response = json_response(
                {"detail": "missing or invalid API token"}, 401, {"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return json_response({"detail": exc.detail}, exc.status_code, cast(Any, exc.headers))


async def on_draining(request: Request, exc: Exception) -> Response:
    return json_response({"detail": str(exc)}, 503, {"Retry-After": "5"})


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return json_response({"detail": f"internal error ({type(exc).__name__})"}, 500)


ROUTES = [
    Route("/ok", ok, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/assistants/search", search_assistants, methods=["POST"]),
    Route("/assistants/{assistant_id}", get_assistant, methods=["GET"]),
    Route("/threads", create_thread, methods=["POST"]),
    Route("/threads/{thread_id}", get_thread, methods=["GET"]),
    Route("/threads/{thread_id}/state", get_state, methods=["GET"]),
    Route("/threads/{thread_id}/state/{checkpoint_id}", get_state, methods=["GET"]),
    Route("/threads/{thread_id}/history", get_history, methods=["POST"]),
    Route("/threads/{thread_id}/runs", create_run, methods=["POST"]),
    Route("/threads/{thread_id}/runs", list_runs, methods=["GET"]),
    Route("/threads/{thread_id}/runs/wait", wait_run, methods=["POST"]),
    Route("/threads/{thread_id}/runs/stream", stream_run, methods=["POST"]),
    Route("/threads/{thread_id}/runs/{run_id}", get_run, methods=["GET"]),
    Route("/threads/{thread_id}/runs/{run_id}/join", join_run, methods=["GET"]),
    Route("/threads/{thread_id}/runs/{run_id}/stream", join_stream, methods=["GET"]),
    Route("/threads/{thread_id}/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
    Route("/runs/wait", wait_run, methods=["POST"]),
    Route("/runs/stream", stream_run, methods=["POST"]),
]


def create_app(services: Services | None = None) -> Starlette:
    """The ASGI app. Without ``services`` its lifespan opens (and drains) them;
    ``python -m agent serve`` opens them itself so it can start the drain on SIGTERM."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if services is not None:
            yield
            return
        async with open_services() as opened:
            app.state.services = opened
            yield

    application = Starlette(
        routes=ROUTES,
        middleware=[Middleware(BearerAuth)],
        exception_handlers={
            HTTPException: on_http_error,
            Draining: on_draining,
            Exception: on_unexpected,
        },
        lifespan=lifespan,
    )
    if services is not None:
        application.state.services = services
    raw = os.environ.get("READY_TIMEOUT", "").strip() or "2"
    try:
        application.state.ready_timeout = float(raw)
    except ValueError:
        raise ValueError(f"READY_TIMEOUT must be a number of seconds, got {raw!r}") from None
    return application


app = create_app()
