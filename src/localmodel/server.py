"""ASGI app: OpenAI Chat Completions over HTTP/SSE, with latency control and fault injection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections import deque
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from localmodel.replies import Reply, build_reply, prompt_tokens, split_tokens

DEFAULT_MODEL = "local-model"
FAULT_KINDS = frozenset({"429", "500", "drop", "hang"})
# The server's own `send`, before Starlette wraps it: "drop" needs its transport.
_RAW_SEND = "localmodel.raw_send"


@dataclass(frozen=True)
class Settings:
    latency: float = 0.0
    token_rate: float = 0.0

    @classmethod
    def from_env(cls, latency: float = 0.25, token_rate: float = 50.0) -> Settings:
        return cls(
            latency=float(os.environ.get("LOCALMODEL_LATENCY", latency)),
            token_rate=float(os.environ.get("LOCALMODEL_TOKEN_RATE", token_rate)),
        )


@dataclass
class ServerState:
    settings: Settings
    faults: deque[dict[str, Any]] = field(default_factory=deque)
    requests: int = 0
    faults_served: int = 0
    in_flight: int = 0


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


def _error(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


async def _send_json(
    send: Send, status: int, data: Any, headers: Mapping[str, str] | None = None
) -> None:
    body = orjson.dumps(data)
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _until_disconnect(work: Coroutine[Any, Any, None], receive: Receive) -> None:
    """Run `work`, cancelling it if the client goes away (uvicorn's send won't tell us)."""
    worker = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait((worker, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not worker.done():
            worker.cancel()
            # Let it unwind before the request counts as finished; wait() never
            # raises the worker's CancelledError, yet still honours our own.
            await asyncio.wait((worker,))
    if not worker.cancelled():
        worker.result()


class _Completion:
    """Everything needed to render one reply, streamed or not."""

    def __init__(self, payload: Mapping[str, Any], reply: Reply, settings: Settings) -> None:
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = str(payload.get("model") or DEFAULT_MODEL)
        self.reply = reply
        self.latency = reply.directives.get("latency", settings.latency)
        self.token_rate = reply.directives.get("token_rate", settings.token_rate)
        options = payload.get("stream_options")
        self.include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
        self.prompt_tokens = prompt_tokens(payload["messages"])
        if reply.tool_calls:
            self.pieces = [split_tokens(call.arguments) for call in reply.tool_calls]
            self.completion_tokens = sum(1 + len(p) for p in self.pieces)
        else:
            self.tokens = split_tokens(reply.text or "")
            self.completion_tokens = max(1, len(self.tokens))

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.reply.text,
            "refusal": None,
            "annotations": [],
        }
        if self.reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.reply.tool_calls
            ]
        return message

    def response(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": self.message(),
                    "logprobs": None,
                    "finish_reason": self.reply.finish_reason,
                }
            ],
            "usage": self.usage(),
            "system_fingerprint": None,
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self.include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def stream_groups(self) -> list[list[bytes]]:
        """SSE events grouped per token tick; the first group also opens the message."""
        groups: list[list[bytes]] = []
        if self.reply.tool_calls:
            for index, (call, pieces) in enumerate(
                zip(self.reply.tool_calls, self.pieces, strict=True)
            ):
                head: dict[str, Any] = {
                    "index": index,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
                delta: dict[str, Any] = {"tool_calls": [head]}
                if index == 0:
                    delta = {"role": "assistant", "content": None, **delta, "refusal": None}
                groups.append([self._chunk(delta)])
                for piece in pieces:
                    args = {"index": index, "function": {"arguments": piece}}
                    groups.append([self._chunk({"tool_calls": [args]})])
        else:
            opening = self._chunk({"role": "assistant", "content": "", "refusal": None})
            groups = [[self._chunk({"content": token})] for token in self.tokens] or [[]]
            groups[0].insert(0, opening)
        return groups

    def stream_tail(self) -> bytes:
        tail = self._chunk({}, self.reply.finish_reason)
        if self.include_usage:
            usage = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [],
                "usage": self.usage(),
            }
            tail += b"data: " + orjson.dumps(usage) + b"\n\n"
        return tail + b"data: [DONE]\n\n"


async def _stream(completion: _Completion, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
            ],
        }
    )
    loop = asyncio.get_running_loop()
    start = loop.time() + completion.latency
    rate = completion.token_rate
    pending: list[bytes] = []
    for tick, group in enumerate(completion.stream_groups()):
        # Deadlines are absolute so pacing doesn't drift; a loaded server
        # catches up by coalescing overdue events into one write.
        delay = start + (tick / rate if rate > 0 else 0.0) - loop.time()
        if delay > 0:
            if pending:
                await send(
                    {"type": "http.response.body", "body": b"".join(pending), "more_body": True}
                )
                pending.clear()
            await asyncio.sleep(delay)
        pending.extend(group)
    pending.append(completion.stream_tail())
    await send({"type": "http.response.body", "body": b"".join(pending)})


async def _complete(completion: _Completion, send: Send) -> None:
    delay = completion.latency
    if completion.token_rate > 0:
        delay += completion.completion_tokens / completion.token_rate
    if delay > 0:
        await asyncio.sleep(delay)
    await _send_json(send, 200, completion.response())


class _ChatCompletions:
    """Raw ASGI endpoint: streaming and faults need more control than a Response gives."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        state.requests += 1
        state.in_flight += 1
        try:
            body = await _read_body(receive)
            if state.faults:
                state.faults_served += 1
                fault = state.faults.popleft()
                if not await _serve_fault(fault, scope, receive, send):
                    return
            await self._answer(body, receive, send)
        except ConnectionAbortedError:
            pass  # client left while we read its request
        finally:
            state.in_flight -= 1

    async def _answer(self, body: bytes, receive: Receive, send: Send) -> None:
        try:
            payload = orjson.loads(body)
            messages = payload["messages"]
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise TypeError("messages must be a list of objects")  # noqa: TRY301
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            detail = _error(f"Invalid request: {exc}", "invalid_request_error")
            await _send_json(send, 400, detail)
            return
        reply = build_reply(messages, payload.get("tools"), payload.get("tool_choice"))
        completion = _Completion(payload, reply, self.state.settings)
        work = _stream(completion, send) if payload.get("stream") else _complete(completion, send)
        await _until_disconnect(work, receive)


async def _serve_fault(
    fault: Mapping[str, Any], scope: Scope, receive: Receive, send: Send
) -> bool:
    """Play one injected fault; True means go on and answer normally afterwards."""
    kind = fault["kind"]
    if kind == "429":
        retry_after = float(fault.get("retry_after", 1.0))
        headers = {"retry-after": f"{retry_after:g}", "retry-after-ms": f"{retry_after * 1000:g}"}
        detail = _error("Rate limit reached (injected fault).", "requests", "rate_limit_exceeded")
        await _send_json(send, 429, detail, headers)
    elif kind == "500":
        detail = _error("The server had an error (injected fault).", "server_error")
        await _send_json(send, 500, detail)
    elif kind == "drop":
        await _drop_connection(scope, receive, send)
    else:  # hang
        seconds = float(fault.get("seconds", 30.0))
        try:
            await asyncio.wait_for(_wait_disconnect(receive), seconds)
        except TimeoutError:
            return True
    return False


async def _drop_connection(scope: Scope, receive: Receive, send: Send) -> None:
    transport = getattr(getattr(scope.get(_RAW_SEND), "__self__", None), "transport", None)
    # uvloop's transports are not asyncio.Transport subclasses, hence duck typing.
    abort = getattr(transport, "abort", None)
    if callable(abort):
        abort()
        # Wait until uvicorn notices, or it would answer our silence with a 500.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_wait_disconnect(receive), 5.0)
        return
    # Not uvicorn: headers then an aborted body is the closest we can get.
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise RuntimeError("localmodel: injected drop")  # servers abort the response on errors


async def _health(_: Request) -> Response:
    # The pid lets a launcher tell its own server from one already on the port.
    return _json({"status": "ok", "pid": os.getpid()})


async def _models(_: Request) -> Response:
    model = {"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "localmodel"}
    return _json({"object": "list", "data": [model]})


def _control_routes(state: ServerState) -> list[Route]:
    async def add_faults(request: Request) -> Response:
        try:
            faults = orjson.loads(await request.body())["faults"]
            parsed = [{**f, "kind": str(f["kind"])} for f in faults]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            return _json(
                _error(f"Expected {{'faults': [...]}}: {exc}", "invalid_request_error"), 400
            )
        unknown = {f["kind"] for f in parsed} - FAULT_KINDS
        if unknown:
            message = f"Unknown fault kinds {sorted(unknown)}; use {sorted(FAULT_KINDS)}"
            return _json(_error(message, "invalid_request_error"), 400)
        state.faults.extend(parsed)
        return _json({"queued": len(state.faults)})

    async def reset(_: Request) -> Response:
        state.faults.clear()
        state.requests = state.faults_served = 0
        return _json({"status": "ok"})

    async def stats(_: Request) -> Response:
        return _json(
            {
                "requests": state.requests,
                "faults_served": state.faults_served,
                "in_flight": state.in_flight,
            }
        )

    return [
        Route("/control/faults", add_faults, methods=["POST"]),
        Route("/control/reset", reset, methods=["POST"]),
        Route("/control/stats", stats, methods=["GET"]),
    ]


class LocalModelApp:
    """The ASGI app; `state` holds its fault queue and counters."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.state = state = ServerState(settings or Settings())
        chat = _ChatCompletions(state)
        self._inner: ASGIApp = Starlette(
            routes=[
                Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/chat/completions", chat, methods=["POST"]),
                Route("/v1/models", _models, methods=["GET"]),
                Route("/models", _models, methods=["GET"]),
                Route("/health", _health, methods=["GET"]),
                *_control_routes(state),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_RAW_SEND] = send
        await self._inner(scope, receive, send)


def create_app(settings: Settings | None = None) -> LocalModelApp:
    """A fresh app with its own fault queue and counters."""
    return LocalModelApp(settings)
